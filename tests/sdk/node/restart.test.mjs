// Keys survive restarts, graceful (SIGTERM) and abrupt (SIGKILL).

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  withHubbub, sdkClient, expectRestError, assert401, uniqueHub, parseConnectionString,
} from "./harness.mjs";

const TIMEOUT = { timeout: 90_000 };

/** Both connection strings printed by `key show` work right now. */
async function bothWork(keys, label) {
  for (const csName of ["primaryConnectionString", "secondaryConnectionString"]) {
    await sdkClient(keys[csName], uniqueHub("r")).sendToAll({ label, csName }).catch((e) => {
      throw new Error(`${label}: ${csName} failed: ${e.statusCode ?? ""} ${e.message}`);
    });
  }
}

/** Same keys; connection strings name the (possibly new) endpoint of the restarted server. */
function assertSameKeys(hub, after, before) {
  assert.equal(after.primaryKey, before.primaryKey, "primary key survives the restart");
  assert.equal(after.secondaryKey, before.secondaryKey, "secondary key survives the restart");
  for (const csName of ["primaryConnectionString", "secondaryConnectionString"]) {
    const cs = parseConnectionString(after[csName]);
    assert.equal(cs.endpoint, hub.endpoint, `${csName} names the current endpoint`);
    assert.equal(cs.accesskey, parseConnectionString(before[csName]).accesskey, `${csName} keeps its key`);
  }
}

/** The connection string of `keys` re-pointed at the hub's current endpoint. */
function repoint(hub, cs) {
  return `Endpoint=${hub.endpoint};AccessKey=${parseConnectionString(cs).accesskey};Version=1.0;`;
}

async function stopExpectingGraceful(hub) {
  const ex = await hub.stop("SIGTERM");
  assert.deepEqual(ex, { code: 0, signal: null }, "SIGTERM shuts hubbub down cleanly with exit code 0");
}

test("SIGTERM + restart on the same data dir keeps both keys, and they still work", TIMEOUT, withHubbub(async (hub) => {
  const before = await hub.keyShow();
  await bothWork(before, "before restart");
  await stopExpectingGraceful(hub);
  await hub.start();
  const after = await hub.keyShow();
  assertSameKeys(hub, after, before);
  await bothWork(after, "after restart");
}));

test("a rotated key is what survives a SIGTERM restart; the old one stays rejected", TIMEOUT, withHubbub(async (hub) => {
  const original = await hub.keyShow();
  const rotated = await hub.keyRegenerate("primary");
  assert.notEqual(rotated.primaryKey, original.primaryKey);
  await stopExpectingGraceful(hub);
  await hub.start();
  const after = await hub.keyShow();
  assertSameKeys(hub, after, rotated);
  await bothWork(after, "after restart");
  const err = await expectRestError(
    sdkClient(repoint(hub, original.primaryConnectionString), uniqueHub("old")).sendToAll({}),
    "pre-rotation primary after restart",
  );
  assert401(assert, err, "pre-rotation primary after restart");
}));

test("SIGKILL + restart keeps both keys, and they still work", TIMEOUT, withHubbub(async (hub) => {
  const before = await hub.keyShow();
  await bothWork(before, "before kill");
  const ex = await hub.stop("SIGKILL");
  assert.equal(ex.signal, "SIGKILL");
  await hub.start();
  const after = await hub.keyShow();
  assertSameKeys(hub, after, before);
  await bothWork(after, "after kill -9");
}));

test("a regeneration acknowledged just before SIGKILL is durable", TIMEOUT, withHubbub(async (hub) => {
  const original = await hub.keyShow();
  const rotated = await hub.keyRegenerate("secondary");
  assert.notEqual(rotated.secondaryKey, original.secondaryKey);
  await hub.stop("SIGKILL"); // immediately after the CLI got its answer
  await hub.start();
  const after = await hub.keyShow();
  assertSameKeys(hub, after, rotated);
  await bothWork(after, "after kill -9");
  const err = await expectRestError(
    sdkClient(repoint(hub, original.secondaryConnectionString), uniqueHub("old")).sendToAll({}),
    "pre-rotation secondary after kill -9",
  );
  assert401(assert, err, "pre-rotation secondary after kill -9");
}));

test("several restarts in a row keep the same keys", TIMEOUT, withHubbub(async (hub) => {
  const before = await hub.keyShow();
  for (let i = 0; i < 3; i++) {
    await hub.restart(i % 2 ? "SIGKILL" : "SIGTERM");
    assertSameKeys(hub, await hub.keyShow(), before);
  }
  await bothWork(await hub.keyShow(), "after three restarts");
}));
