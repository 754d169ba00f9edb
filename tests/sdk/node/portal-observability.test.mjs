// The portal's observability pages in a real browser (headless Chromium, Playwright):
// - the live trace: an official client's connection opens and is closed by the REST API with a
//   reason, REST calls and messages show, Pause holds events, Export downloads JSON lines, a
//   connection id filters the stream, too many listeners is explained; never a key or a token;
// - a hub's page: event handlers added through the form reach a real WebPubSubEventHandler, an
//   invalid URL template shows the server's message and changes nothing;
// - the charts on the Overview (connections, messages per second) and the Keys page (key use).
// Screenshots go to test-artifacts/portal/ at the repository root; with UPDATE_DOCS_IMAGES=1 the
// Overview's also replaces docs/img/portal-overview.png, the README's picture (a normal run never
// changes a tracked file).

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import { startHubbub, repoRoot, sdkClient, uniqueHub, waitFor } from "./harness.mjs";
import { serveEventHandler } from "./upstream.mjs";
import { launch, signIn, pageProblems } from "./browser.mjs";

const ARTIFACTS = join(repoRoot, "test-artifacts", "portal");
const DOCS_IMG = join(repoRoot, "docs", "img");
const VIEWPORT = { width: 1280, height: 800 };
const T = { timeout: 120_000 };

/**
 * An official client connection; resolves once it has its connection id. The JSON subprotocol
 * (no session recovery) and no client keep-alive tasks: nothing of it outlives the test (a
 * stopped client's keep-alive task still sleeps out its interval, up to 40 s).
 */
async function connectClient(service, opts = {}) {
  const { url, token } = await service.getClientAccessToken(opts);
  const client = new WebPubSubClient(url, {
    protocol: WebPubSubJsonProtocol(), autoReconnect: false, keepAliveIntervalInMs: 0, keepAliveTimeoutInMs: 0,
  });
  const conn = { client, token, connectionId: null, messages: [], stopped: false };
  client.on("connected", (e) => { conn.connectionId = e.connectionId; });
  client.on("server-message", (e) => conn.messages.push(e.message));
  client.on("stopped", () => { conn.stopped = true; });
  await client.start();
  await waitFor(() => conn.connectionId, { what: "the client's connected event" });
  return conn;
}

function stopQuietly(...conns) {
  for (const c of conns) {
    try { c?.client.stop(); } catch { /* already stopped */ }
  }
}

/** Horizontal overflow of the document, in CSS pixels (0 when nothing scrolls sideways). */
function overflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

test("portal live trace: a connection opened and closed with a reason, REST and messages, pause, export, filter; no key or token", T, async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const hubbub = await startHubbub();
  const browser = await launch();
  let conn;
  let other;
  const streams = [];
  try {
    const keys = await hubbub.keyShow();
    const adminToken = await hubbub.adminToken();
    const hubName = uniqueHub("trace");
    const service = sdkClient(keys.primaryConnectionString, hubName);
    const context = await browser.newContext({ viewport: VIEWPORT, acceptDownloads: true });
    const page = await context.newPage();
    const problems = pageProblems(page);
    await signIn(page, hubbub, adminToken);
    await page.click('a[data-page="trace"]');
    await page.waitForSelector('#trace-status[data-state="open"]');
    assert.match(await page.textContent("#trace-status"), /Connected: all events/);
    assert.equal(await page.getAttribute('a[data-page="trace"]', "aria-current"), "page");

    // An official client connects: a connectionOpened row with its id, hub and user.
    conn = await connectClient(service, { userId: "alice" });
    const opened = page.locator(`#trace tr[data-event="connectionOpened"][data-connection-id="${conn.connectionId}"]`);
    await opened.waitFor();
    const openedText = await opened.textContent();
    assert.match(openedText, new RegExp(hubName, "i"));
    assert.match(openedText, /user alice/);
    assert.match(openedText, /primary key/);

    // A REST broadcast: a REST row and a message row (delivered here to the one connection).
    await service.sendToAll("hello", { contentType: "text/plain" });
    await waitFor(() => conn.messages.length === 1, { what: "the broadcast at the client" });
    const rest = page.locator('#trace tr[data-event="rest"]').first();
    await rest.waitFor();
    assert.match(await rest.textContent(), /POST \/api\/hubs\/.+ → 202/);
    const message = page.locator('#trace tr[data-event="message"]').first();
    await message.waitFor();
    assert.match(await message.textContent(), /to all · text · 5 B · delivered here to 1/);

    // Paused: new events are held, not shown; Resume shows them.
    await page.click("#trace-pause");
    assert.equal(await page.getAttribute("#trace-pause", "aria-pressed"), "true");
    const messagesBefore = await page.locator('#trace tr[data-event="message"]').count();
    await service.sendToAll("while paused", { contentType: "text/plain" });
    await waitFor(() => conn.messages.length === 2, { what: "the second broadcast at the client" });
    await page.waitForFunction(() => /paused, [1-9]\d* new held/.test(document.querySelector("#trace-count").textContent));
    assert.equal(await page.locator('#trace tr[data-event="message"]').count(), messagesBefore, "nothing shown while paused");
    await page.click("#trace-pause");
    await page.waitForFunction((n) => document.querySelectorAll('#trace tr[data-event="message"]').length === n + 1, messagesBefore);

    // The REST API closes the connection with a reason: a connectionClosed row with code and reason.
    await service.closeConnection(conn.connectionId, { reason: "rotating keys" });
    const closed = page.locator(`#trace tr[data-event="connectionClosed"][data-connection-id="${conn.connectionId}"]`);
    await closed.waitFor();
    const closedText = await closed.textContent();
    assert.match(closedText, /closed by server/);
    assert.match(closedText, /code \d{4}/);
    assert.match(closedText, /reason: rotating keys/);
    // Newest first.
    const order = await page.locator("#trace tbody tr").evaluateAll((trs, id) =>
      trs.filter((tr) => tr.dataset.connectionId === id).map((tr) => tr.dataset.event), conn.connectionId);
    assert.deepEqual([order[0], order[order.length - 1]], ["connectionClosed", "connectionOpened"]);
    await page.screenshot({ path: join(ARTIFACTS, "trace.png"), fullPage: true });

    // Export: the shown events as JSON lines, oldest first.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#trace-export")]);
    assert.match(download.suggestedFilename(), /^hubbub-trace-.*\.jsonl$/);
    const lines = readFileSync(await download.path(), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const rows = await page.locator("#trace tbody tr").count();
    assert.equal(lines.length, rows, "one line per shown row");
    const exportedOpen = lines.findIndex((e) => e.event === "connectionOpened" && e.connectionId === conn.connectionId);
    const exportedClose = lines.findIndex((e) => e.event === "connectionClosed" && e.connectionId === conn.connectionId);
    assert.ok(exportedOpen >= 0 && exportedClose > exportedOpen, "opened before closed in the export");
    assert.equal(lines[exportedClose].reason, "rotating keys");

    // No key, connection string, client token or admin token is anywhere on the page.
    const html = await page.content();
    for (const [what, secret] of [
      ["primary key", keys.primaryKey], ["secondary key", keys.secondaryKey],
      ["client token", conn.token], ["admin token", adminToken],
    ]) {
      assert.ok(!html.includes(secret), `the trace page shows the ${what}`);
    }

    // A connection id filters the stream (server-side), and the filter is kept in the address.
    other = await connectClient(service, { userId: "bob" });
    await page.locator(`#trace tr[data-event="connectionOpened"][data-connection-id="${other.connectionId}"] button.conn`).click();
    await page.waitForSelector('#trace-status[data-state="open"]');
    assert.match(await page.textContent("#trace-status"), new RegExp(`connection ${other.connectionId}`));
    assert.equal(await page.inputValue("#trace-connectionId"), other.connectionId);
    assert.match(page.url(), new RegExp(`#/trace\\?connectionId=${other.connectionId}`));
    await page.click("#trace-clear");
    assert.equal(await page.locator("#trace tbody tr").count(), 0);
    await service.sendToAll("to everyone", { contentType: "text/plain" }); // not from that connection
    await service.closeConnection(other.connectionId, { reason: "done" });
    await page.locator(`#trace tr[data-event="connectionClosed"][data-connection-id="${other.connectionId}"]`).waitFor();
    const shown = await page.locator("#trace tbody tr").evaluateAll((trs) => trs.map((tr) => tr.dataset.connectionId));
    assert.deepEqual([...new Set(shown)], [other.connectionId], "only that connection's events");

    // Leaving the page closes the stream: 16 other listeners then fit.
    await page.click('a[data-page="overview"]');
    await page.waitForSelector("#connections");
    // (The server notices a closed stream on its own schedule: retry a refused listener.)
    for (let i = 0; i < 16; i++) {
      await waitFor(async () => {
        const abort = new AbortController();
        const res = await fetch(`${hubbub.adminUrl}/admin/trace`, { headers: { authorization: `Bearer ${adminToken}` }, signal: abort.signal });
        if (res.status !== 200) {
          abort.abort();
          return false;
        }
        streams.push(abort);
        return true;
      }, { timeoutMs: 30_000, intervalMs: 250, what: `trace listener ${i + 1} of 16` });
    }
    // The page explains why it has no stream, and reconnects once a listener leaves.
    await page.click('a[data-page="trace"]');
    await page.waitForSelector('#trace-status[data-state="closed"]');
    await page.waitForFunction(() => /too many listeners/.test(document.querySelector("#trace-status").textContent));
    assert.ok(await page.isVisible("#trace-reconnect"));
    streams.pop().abort();
    await waitFor(async () => {
      await page.click("#trace-reconnect");
      await page.waitForSelector("#trace-status:not([data-state=connecting])");
      return (await page.getAttribute("#trace-status", "data-state")) === "open";
    }, { what: "the stream after a listener left", intervalMs: 200 });

    // On a phone, the table scrolls inside its card, not the page.
    await page.setViewportSize({ width: 390, height: 844 });
    assert.ok((await overflow(page)) <= 1, "no horizontal page scroll on a phone");
    assert.deepEqual(problems, []);
    await context.close();
  } finally {
    for (const s of streams) s.abort();
    stopQuietly(conn, other);
    await browser.close();
    await hubbub.dispose();
  }
});

test("portal hub page: event handlers edited in the form reach a real app server; an invalid URL template changes nothing", T, async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const hubbub = await startHubbub();
  const browser = await launch();
  const hubName = uniqueHub("portalhub");
  const seen = { connected: [] };
  const handler = new WebPubSubEventHandler(hubName, {
    onConnected(req) { seen.connected.push(req.context); },
  });
  const upstream = await serveEventHandler(handler, seen);
  let conn;
  try {
    const keys = await hubbub.keyShow();
    const service = sdkClient(keys.primaryConnectionString, hubName);
    const context = await browser.newContext({ viewport: VIEWPORT });
    const page = await context.newPage();
    const problems = pageProblems(page);
    await signIn(page, hubbub, await hubbub.adminToken());

    // A hub with no connections and no settings is reached with "Open hub".
    await page.click('a[data-page="overview"]');
    await page.fill("#open-hub-name", hubName);
    await page.click('#open-hub button[type="submit"]');
    await page.waitForSelector("#hub-settings");
    assert.equal((await page.textContent("#hub-name")).toLowerCase(), hubName.toLowerCase());
    assert.equal(await page.textContent("#hub-connections"), "0");
    assert.equal(await page.locator("fieldset.handler").count(), 0);

    // Add a handler for the `connected` system event, deny anonymous clients, keep-alive 25 s.
    await page.click("#add-handler");
    const first = page.locator("fieldset.handler").first();
    assert.equal(await first.locator("legend").first().textContent(), "Event handler 1");
    // The new URL field has the focus.
    assert.equal(await page.evaluate(() => document.activeElement.name), "urlTemplate");
    await page.keyboard.type(upstream.handlerUrl);
    await first.locator('input[name="systemEvents"][value="connected"]').check();
    await page.selectOption("#anonymous-policy", "deny");
    await page.fill("#keep-alive", "25");
    await page.click("#save-settings");
    await page.waitForSelector("#toast:not([hidden])");
    assert.equal(await page.textContent("#toast"), "Saved");
    const stored = await (await hubbub.admin("GET", `/admin/hubs/${hubName}`)).json();
    assert.deepEqual(stored.properties.eventHandlers, [
      { urlTemplate: upstream.handlerUrl, userEventPattern: "*", systemEvents: ["connected"] },
    ]);
    assert.equal(stored.properties.anonymousConnectPolicy, "deny");
    assert.equal(stored.properties.webSocketKeepAliveIntervalInSeconds, 25);

    // An official client connects: the app server gets `connected`.
    conn = await connectClient(service, { userId: "carol" });
    await waitFor(() => seen.connected.find((c) => c.connectionId === conn.connectionId), {
      what: `the connected event at the app server; it got ${JSON.stringify(upstream.summary())}`,
    });
    assert.equal(seen.connected[0].userId, "carol");
    // The page, reloaded, shows the connection and the handler as OK.
    await page.reload();
    await page.waitForSelector("#handler-status");
    assert.equal(await page.textContent("#hub-connections"), "1");
    assert.equal(await page.getAttribute("#handler-status tbody tr", "data-status"), "ok");
    assert.equal(await page.inputValue('fieldset.handler input[name="urlTemplate"]'), upstream.handlerUrl);
    assert.ok(await page.isChecked('fieldset.handler input[value="connected"]'));
    assert.ok(!(await page.isChecked('fieldset.handler input[value="connect"]')));
    assert.equal(await page.inputValue("#keep-alive"), "25");
    await page.screenshot({ path: join(ARTIFACTS, "hub.png"), fullPage: true });

    // An invalid URL template: the server's message next to the form, the input kept, nothing changed.
    await page.fill('fieldset.handler input[name="urlTemplate"]', "ftp://x");
    await page.click("#save-settings");
    await page.waitForFunction(() => document.querySelector("#hub-settings-error").textContent.length > 0);
    const error = await page.textContent("#hub-settings-error");
    assert.match(error, /urlTemplate 'ftp:\/\/x' must start with http:\/\/ or https:\/\//);
    assert.equal(await page.getAttribute("#hub-settings-error", "role"), "alert");
    assert.equal(await page.inputValue('fieldset.handler input[name="urlTemplate"]'), "ftp://x");
    await page.screenshot({ path: join(ARTIFACTS, "hub-invalid.png"), fullPage: true });
    const after = await (await hubbub.admin("GET", `/admin/hubs/${hubName}`)).json();
    assert.deepEqual(after.properties, stored.properties, "the stored settings are unchanged");

    // Removing every handler and saving leaves the hub with none.
    await page.click("fieldset.handler .remove-handler");
    assert.equal(await page.locator("fieldset.handler").count(), 0);
    assert.ok(await page.isVisible("#handlers-empty"));
    await page.click("#save-settings");
    await page.waitForSelector("#no-handlers");
    assert.deepEqual((await (await hubbub.admin("GET", `/admin/hubs/${hubName}`)).json()).properties.eventHandlers, []);

    // The page links to the live trace of this hub.
    await page.click("#trace-hub-link");
    await page.waitForSelector('#trace-status[data-state="open"]');
    assert.equal(await page.inputValue("#trace-hub"), hubName);
    assert.match(await page.textContent("#trace-status"), new RegExp(`Connected: hub ${hubName}\\.`));

    // The hub's name in the Overview's table links here.
    await page.click('a[data-page="overview"]');
    await page.click(`#hubs a.hub-link[href="#/hubs/${hubName.toLowerCase()}"]`);
    await page.waitForSelector("#hub-settings");
    assert.deepEqual(problems, []);
    await context.close();
  } finally {
    stopQuietly(conn);
    await upstream.close();
    await browser.close();
    await hubbub.dispose();
  }
});

test("portal charts: connections and messages per second on the Overview, refreshed; key use on the Keys page", T, async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const hubbub = await startHubbub();
  const browser = await launch();
  const conns = [];
  let stopTrickle = () => {};
  try {
    const keys = await hubbub.keyShow();
    const hubName = uniqueHub("chat");
    const service = sdkClient(keys.primaryConnectionString, hubName);
    const historyPoints = async () => (await (await hubbub.admin("GET", "/admin/history")).json()).traffic.length;
    const context = await browser.newContext({ viewport: VIEWPORT });
    const page = await context.newPage();
    const problems = pageProblems(page);
    await signIn(page, hubbub, await hubbub.adminToken());
    await page.click('a[data-page="overview"]');
    await page.waitForSelector("#chart-connections svg");
    const points = (selector) => page.$$eval(selector, (lines) => lines.map((l) => ({
      n: Number(l.dataset.points), coords: l.getAttribute("points").trim().split(/\s+/).filter(Boolean).length,
    })));
    // From the start, a line has two points (the first sample, and now).
    for (const line of await points("#chart-connections polyline.series, #chart-messages polyline.series")) {
      assert.ok(line.n >= 2 && line.coords === line.n, JSON.stringify(line));
    }
    assert.deepEqual(await page.locator("#chart-messages .legend li").allTextContents(), ["Received", "Delivered"]);

    // A little traffic over three sampling intervals: clients arrive, REST broadcasts.
    const broadcast = async (n) => {
      for (let i = 0; i < n; i++) await service.sendToAll(`hello ${i}`, { contentType: "text/plain" });
    };
    for (const [users, messages] of [[["ann"], 4], [["ben", "cid"], 12], [[], 6]]) {
      const before = await historyPoints();
      for (const userId of users) conns.push(await connectClient(service, { userId }));
      await broadcast(messages);
      await waitFor(async () => (await historyPoints()) > before, { timeoutMs: 15_000, intervalMs: 250, what: "the next history sample" });
    }
    await waitFor(() => conns.every((c) => c.messages.length === 22 - (c === conns[0] ? 0 : 4)), { what: "the broadcasts at the clients" });
    // Then a steady trickle, for the interval in progress.
    let trickled = 0;
    let trickling = true;
    stopTrickle = () => { trickling = false; };
    const trickle = (async () => {
      while (trickling) {
        await service.sendToAll("tick", { contentType: "text/plain" });
        trickled += 1;
        await new Promise((r) => setTimeout(r, 400));
      }
    })();
    trickle.catch(() => {}); // awaited below; a failure elsewhere must not leave it unhandled

    // The Overview refreshes itself (every 10 s) and the lines grow: the first sample, three
    // intervals, and the one in progress.
    await waitFor(async () => (await points("#chart-connections polyline.series"))[0].n >= 5, {
      timeoutMs: 25_000, intervalMs: 500, what: "the Overview's own refresh with the new samples",
    });
    const svg = page.locator("#chart-connections svg");
    assert.equal(await svg.getAttribute("role"), "img");
    assert.match(await svg.getAttribute("aria-label"), /^Connections, .* Latest: Connections 3\./);
    assert.equal(await page.textContent("#chart-connections svg > title"), "Connections");
    assert.equal(await page.textContent("#connections"), "3");
    assert.match(await page.textContent("#hubs"), new RegExp(hubName, "i"));
    // The delivered rate peaked with 12 broadcasts to 3 clients within one interval.
    const peak = await page.$eval("#chart-messages polyline.series-delivered", (l) =>
      Math.min(...l.getAttribute("points").trim().split(/\s+/).map((xy) => Number(xy.split(",")[1]))));
    const baseline = await page.$eval("#chart-messages line.axis", (l) => Number(l.getAttribute("y1")));
    assert.ok(peak < baseline, "the delivered line rises above zero");
    await page.screenshot({ path: join(ARTIFACTS, "overview.png"), fullPage: true });
    if (process.env.UPDATE_DOCS_IMAGES === "1") {
      mkdirSync(DOCS_IMG, { recursive: true });
      await page.screenshot({ path: join(DOCS_IMG, "portal-overview.png"), fullPage: true });
    }
    trickling = false;
    await trickle;

    // Charts scale down with the page on a phone.
    await page.setViewportSize({ width: 390, height: 844 });
    assert.ok((await overflow(page)) <= 1, "no horizontal page scroll on a phone");
    const width = await svg.evaluate((s) => s.getBoundingClientRect().width);
    assert.ok(width > 200 && width < 390, `the chart fits the phone (${width}px)`);
    await page.screenshot({ path: join(ARTIFACTS, "overview-phone.png"), fullPage: true });
    await page.setViewportSize(VIEWPORT);

    // Key use per minute: the REST calls and connections were signed with the primary key.
    await page.click('a[data-page="keys"]');
    await page.waitForSelector("#chart-key-use svg");
    const primary = page.locator("#chart-key-use polyline.series-primary");
    assert.equal(await primary.count(), 1);
    assert.equal(await primary.getAttribute("data-points"), "60", "every minute of the hour");
    for (const name of ["secondary", "primaryRetiring", "secondaryRetiring"]) {
      assert.equal(await page.locator(`#chart-key-use polyline.series-${name}`).count(), 1, `${name} series`);
    }
    // The latest minutes (the chart's hidden table) count them.
    const primaryUses = await page.locator("#chart-key-use table tbody tr").evaluateAll((trs) =>
      trs.reduce((sum, tr) => sum + Number(tr.children[1].textContent.replace(/\D/g, "")), 0));
    assert.equal(primaryUses, 3 + 22 + trickled, "3 connections and every REST call");
    await page.screenshot({ path: join(ARTIFACTS, "keys-chart.png"), fullPage: true });
    assert.deepEqual(problems, []);
    await context.close();
  } finally {
    stopTrickle();
    stopQuietly(...conns);
    await browser.close();
    await hubbub.dispose();
  }
});
