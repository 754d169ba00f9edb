// The portal in a real browser: headless Chromium (Debian's package) driven by Playwright.
// Sign in, reveal and copy a connection string, regenerate a key through the dialog and find it
// in the audit log, see the rotation-required banner; a wrong token is refused. Screenshots of
// the keys page are saved under test-artifacts/portal/ at the repository root.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { startHubbub, repoRoot, sdkClient, uniqueHub, expectRestError } from "./harness.mjs";
import { launch, signIn } from "./browser.mjs";

const ARTIFACTS = join(repoRoot, "test-artifacts", "portal");

test("portal: sign in, reveal and copy, regenerate through the dialog, audit, banner", async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const hubbub = await startHubbub();
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: hubbub.adminUrl });
    const page = await context.newPage();
    const token = await hubbub.adminToken();
    await signIn(page, hubbub, token);
    await page.waitForSelector('section.key-card[data-slot="secondary"]');
    const keys = await hubbub.keyShow();

    // Hidden until revealed.
    const secondaryCs = page.locator('.secret[data-field="connectionString"][data-slot="secondary"]');
    assert.ok(!(await secondaryCs.textContent()).includes("AccessKey"), "hidden before reveal");
    await page.locator('section[data-slot="secondary"] .field:has([data-field="connectionString"]) button.reveal').click();
    assert.equal(await secondaryCs.textContent(), keys.secondaryConnectionString);
    // Copy puts it on the clipboard.
    await page.locator('section[data-slot="secondary"] button.copy-connectionString').click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), keys.secondaryConnectionString);
    await page.screenshot({ path: join(ARTIFACTS, "keys.png"), fullPage: true });

    // Regenerate the secondary: the dialog says what stops working; cancel changes nothing.
    await page.click('button.regenerate[data-slot="secondary"]');
    const text = await page.textContent("#confirm-text");
    assert.match(text, /secondary key and its connection string stop working/);
    assert.match(await page.textContent("#confirm-usage"), /last 15 minutes/);
    await page.screenshot({ path: join(ARTIFACTS, "regenerate-dialog.png") });
    await page.click("#confirm-cancel");
    assert.equal((await hubbub.keyShow()).secondaryKey, keys.secondaryKey, "cancel changes nothing");
    await page.click('button.regenerate[data-slot="secondary"]');
    await page.click("#confirm-regenerate");
    let after;
    for (let i = 0; i < 100; i++) {
      after = await hubbub.keyShow();
      if (after.secondaryKey !== keys.secondaryKey) break;
      await page.waitForTimeout(50);
    }
    assert.notEqual(after.secondaryKey, keys.secondaryKey, "regenerated");
    assert.equal(after.primaryKey, keys.primaryKey);
    await page.locator('section[data-slot="secondary"] .field:has([data-field="key"]) button.reveal').click();
    await page.waitForFunction(
      (k) => document.querySelector('.secret[data-field="key"][data-slot="secondary"]').textContent === k,
      after.secondaryKey,
    );

    // The audit log page shows the regeneration by the portal.
    await page.click('a[data-page="audit"]');
    await page.waitForSelector("#audit tbody tr");
    const firstRow = await page.textContent("#audit tbody tr:first-child");
    assert.match(firstRow, /regenerated/);
    assert.match(firstRow, /secondary/);
    assert.match(firstRow, /portal/);
    assert.match(await page.textContent("#audit"), /portal_login/);
    assert.match(await page.textContent("#no-notices"), /No notices/);

    // A required rotation shows as a banner with the deadline.
    const required = await hubbub.admin("POST", "/admin/keys/require-rotation", {
      body: { keyType: "Primary", by: "2030-01-01T00:00:00Z", reason: "annual rotation" },
    });
    assert.equal(required.status, 200);
    await page.click('a[data-page="keys"]');
    await page.reload();
    await page.waitForSelector("#banner:not([hidden])");
    const banner = await page.textContent("#banner");
    assert.match(banner, /Primary key must be rotated by/);
    assert.match(banner, /annual rotation/);
    assert.match(await page.textContent('section[data-slot="primary"] .badge'), /Rotation required/);
    await page.screenshot({ path: join(ARTIFACTS, "keys-rotation-required.png"), fullPage: true });

    // Readable on a phone.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: join(ARTIFACTS, "keys-phone.png"), fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `no horizontal scrolling on a phone (overflow ${overflow}px)`);

    // Overview.
    await page.click('a[data-page="overview"]');
    await page.waitForSelector("#connections");
    assert.equal(await page.textContent("#connections"), "0");
    await context.close();
  } finally {
    await browser.close();
    await hubbub.dispose();
  }
});

test("portal: a wrong token is refused and nothing is reachable without a session", async () => {
  const hubbub = await startHubbub();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await signIn(page, hubbub, "not-the-token");
    assert.match(await page.textContent("#login-error"), /not the admin token/);
    assert.equal(await page.locator("section.key-card").count(), 0);
    const keys = await page.evaluate(async () => (await fetch("/admin/keys")).status);
    assert.equal(keys, 401);
    // A session without the CSRF token cannot change anything.
    await signIn(page, hubbub, await hubbub.adminToken());
    await page.waitForSelector("section.key-card");
    const status = await page.evaluate(async () => (await fetch("/admin/keys/regenerate", {
      method: "POST", headers: { "content-type": "application/json" }, body: '{"keyType":"Primary"}',
    })).status);
    assert.equal(status, 403);
    const cookie = (await page.context().cookies()).find((c) => c.name === "hubbub_session");
    assert.ok(cookie.httpOnly, "HttpOnly");
    assert.equal(cookie.sameSite, "Strict");
    // Signing out ends the session.
    await page.click("#sign-out");
    await page.waitForSelector("#token");
    assert.equal(await page.evaluate(async () => (await fetch("/admin/keys")).status), 401);
  } finally {
    await browser.close();
    await hubbub.dispose();
  }
});

test("portal: the keys page lists apps still using an old key and when a retiring value was last used", async () => {
  const hubbub = await startHubbub();
  const browser = await launch();
  try {
    const before = await hubbub.keyShow();
    const hubName = uniqueHub("portalstale");
    const old = sdkClient(before.primaryConnectionString, hubName);
    await hubbub.keyRegenerate("primary");
    await expectRestError(old.sendToAll("stale"), "old primary key");
    // A secondary regenerated with a grace period: its earlier value still works, counted apart.
    const oldSecondary = sdkClient(before.secondaryConnectionString, hubName);
    const graced = await hubbub.cli([
      "key", "regenerate", "--key-type", "secondary", "--grace", "1h", "--yes",
      "--admin-url", hubbub.adminUrl, "--data-dir", hubbub.dataDir,
    ]);
    assert.equal(graced.code, 0, graced.stderr);
    await oldSecondary.sendToAll("still in its grace period");

    const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    await signIn(page, hubbub, await hubbub.adminToken());
    await page.waitForSelector("#stale-callers");
    const row = page.locator('#stale-callers tr[data-kind="rest"]');
    await row.waitFor();
    const cells = await row.locator("td").allTextContents();
    assert.equal(cells[0], "primary v1");
    assert.equal(cells[2].toLowerCase(), hubName.toLowerCase());
    assert.equal(cells[3], "127.0.0.1");
    assert.match(cells[4], /azsdk-js/i);
    const retiring = await page.textContent('p.retiring[data-slot="secondary"]');
    assert.match(retiring, /retiring value last used \d+ s ago/);
    await page.screenshot({ path: join(ARTIFACTS, "stale-callers.png"), fullPage: true });
  } finally {
    await browser.close();
    await hubbub.dispose();
  }
});

test("portal: the keys page shows the rotation policy: active key, next step, sinks, last outcome", async () => {
  const hubbub = await startHubbub();
  const browser = await launch();
  try {
    const cli = (args) => hubbub.cli([...args, "--admin-url", hubbub.adminUrl, "--data-dir", hubbub.dataDir]);
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    await signIn(page, hubbub, await hubbub.adminToken());
    await page.waitForSelector("#policy");
    assert.match(await page.textContent("#policy"), /No rotation policy/);

    const sink = join(hubbub.dataDir, "sinks", "portal-cs");
    assert.equal((await cli(["key", "policy", "set", "--every", "30d", "--sink-file", sink])).code, 0);
    assert.equal((await cli(["key", "rotate"])).code, 0);
    await page.reload();
    await page.waitForSelector("#policy-active");
    assert.equal(await page.textContent("#policy-active"), "secondary");
    assert.equal(await page.textContent("#policy-in-step"), "hold the active key");
    assert.match(await page.textContent("#policy"), new RegExp(`file ${sink.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
    assert.match(await page.textContent("#policy-outcome"), /Last: rotated .* the secondary key \(version 2\) is active/);
    await page.screenshot({ path: join(ARTIFACTS, "policy.png"), fullPage: true });
  } finally {
    await browser.close();
    await hubbub.dispose();
  }
});

