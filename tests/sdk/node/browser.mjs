// Headless Chromium (Debian's package, or CHROMIUM_PATH) driven by playwright-core, for the
// portal tests: launch it, sign in to a server's portal, and collect what the page complains
// about (script errors, Content-Security-Policy refusals).

import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** Sign in to the portal of `hubbub` with `token` (the form posts, the page reloads). */
export async function signIn(page, hubbub, token) {
  await page.goto(`${hubbub.adminUrl}/portal`);
  await page.fill("#token", token);
  await Promise.all([page.waitForLoadState("load"), page.click("button[type=submit]")]);
}

/** Script errors and CSP refusals seen by `page`, as a growing list of strings. */
export function pageProblems(page) {
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return problems;
}
