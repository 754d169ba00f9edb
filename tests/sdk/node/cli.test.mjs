// The `hubbub key ...` CLI: token discovery and error handling.

import { test } from "node:test";
import assert from "node:assert/strict";
import { withHubbub } from "./harness.mjs";

const TIMEOUT = { timeout: 60_000 };

test("key regenerate with an unknown key type fails cleanly and changes nothing", TIMEOUT, withHubbub(async (hub) => {
  const before = await hub.keyShow();
  const r = await hub.cli([
    "key", "regenerate", "--key-type", "tertiary", "--admin-url", hub.adminUrl, "--data-dir", hub.dataDir,
  ]);
  assert.notEqual(r.code, 0, "non-zero exit");
  assert.ok(r.stderr.trim().length > 0, "an error is printed on stderr");
  assert.deepEqual(await hub.keyShow(), before);
}));

test("key CLI finds the admin token via --data-dir, --admin-token or HUBBUB_ADMIN_TOKEN", TIMEOUT, withHubbub(async (hub) => {
  const expected = await hub.keyShow(); // via --data-dir
  const token = await hub.adminToken();
  const viaFlag = await hub.cli(["key", "show", "--admin-url", hub.adminUrl, "--admin-token", token]);
  assert.equal(viaFlag.code, 0, `--admin-token: ${viaFlag.stderr}`);
  assert.deepEqual(JSON.parse(viaFlag.stdout), expected);
  const viaEnv = await hub.cli(["key", "show", "--admin-url", hub.adminUrl], { env: { HUBBUB_ADMIN_TOKEN: token } });
  assert.equal(viaEnv.code, 0, `HUBBUB_ADMIN_TOKEN: ${viaEnv.stderr}`);
  assert.deepEqual(JSON.parse(viaEnv.stdout), expected);
}));

test("key CLI with a wrong admin token fails with a one-line error and changes nothing", TIMEOUT, withHubbub(async (hub) => {
  const before = await hub.keyShow();
  const wrong = "not-the-admin-token";
  const show = await hub.cli(["key", "show", "--admin-url", hub.adminUrl, "--admin-token", wrong]);
  assert.notEqual(show.code, 0, `key show with a wrong token must fail; stdout: ${show.stdout}`);
  assert.ok(!show.stdout.includes(before.primaryKey), "no key is printed");
  assert.equal(show.stderr.trim().split("\n").length, 1, `one line on stderr: ${show.stderr}`);
  assert.ok(show.stderr.trim().length > 0, "an error is printed on stderr");
  const regen = await hub.cli([
    "key", "regenerate", "--key-type", "primary", "--admin-url", hub.adminUrl, "--admin-token", wrong,
  ]);
  assert.notEqual(regen.code, 0, "key regenerate with a wrong token must fail");
  assert.equal(regen.stderr.trim().split("\n").length, 1, `one line on stderr: ${regen.stderr}`);
  assert.deepEqual(await hub.keyShow(), before);
}));

test("key CLI against an admin URL where nothing listens fails with a one-line error", TIMEOUT, withHubbub(async (hub) => {
  const deadUrl = `http://127.0.0.1:${hub.adminPort}`;
  await hub.stop("SIGTERM");
  const r = await hub.cli(["key", "show", "--admin-url", deadUrl, "--data-dir", hub.dataDir]);
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout.trim(), "", "nothing on stdout");
  assert.equal(r.stderr.trim().split("\n").length, 1, `one line on stderr: ${r.stderr}`);
}));
