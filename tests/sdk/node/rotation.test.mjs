// Key rotation with zero downtime: one key keeps serving while the other is regenerated.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  withHubbub, sdkClient, expectRestError, assert401, waitFor, uniqueHub, KEY_RE,
} from "./harness.mjs";

const TIMEOUT = { timeout: 90_000 };
const WORKERS = 3;
const MIN_CALLS_EACH_SIDE = 10;

/**
 * Keep `WORKERS` loops calling sendToAll with `connectionString` until stopped.
 * Every call must succeed (SDK retries are off).
 */
function serveContinuously(connectionString) {
  const client = sdkClient(connectionString, uniqueHub("serve"));
  const state = { ok: 0, failures: [], stopped: false };
  const hardDeadline = Date.now() + 60_000;
  const worker = async (w) => {
    while (!state.stopped && Date.now() < hardDeadline) {
      try {
        await client.sendToAll({ worker: w, n: state.ok });
        state.ok += 1;
      } catch (e) {
        state.failures.push(`${e.statusCode ?? ""} ${e.message} ${e.response?.bodyAsText ?? ""}`.trim());
        if (state.failures.length > 20) return;
      }
    }
  };
  const all = Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
  state.finish = async () => {
    state.stopped = true;
    await all;
    return state;
  };
  return state;
}

async function adminKeys(hub) {
  const r = await hub.admin("GET", "/admin/keys");
  assert.equal(r.status, 200, "GET /admin/keys");
  return r.json();
}

async function rotate(hub, { rotated, serving }) {
  const before = await hub.keyShow();
  const adminBefore = await adminKeys(hub);
  const servingCs = before[`${serving}ConnectionString`];
  const oldCs = before[`${rotated}ConnectionString`];

  // Sanity: both work before the rotation.
  await sdkClient(oldCs, uniqueHub("pre")).sendToAll({ pre: true });

  const loop = serveContinuously(servingCs);
  let regenerated;
  try {
    await waitFor(() => loop.ok >= MIN_CALLS_EACH_SIDE || loop.failures.length > 0, {
      timeoutMs: 20_000, what: `${MIN_CALLS_EACH_SIDE} calls with the ${serving} key before rotating`,
    });
    const okBefore = loop.ok;
    regenerated = await hub.keyRegenerate(rotated);
    const okAtRegenerate = loop.ok;
    await waitFor(() => loop.ok >= okAtRegenerate + MIN_CALLS_EACH_SIDE || loop.failures.length > 0, {
      timeoutMs: 20_000, what: `${MIN_CALLS_EACH_SIDE} calls with the ${serving} key after rotating`,
    });
    // The regeneration really happened while the serving key was in use.
    assert.ok(okAtRegenerate > okBefore, `calls completed while key regenerate ran (${okBefore} -> ${okAtRegenerate})`);
  } finally {
    await loop.finish();
  }
  assert.deepEqual(loop.failures, [], `every ${serving}-key call must succeed during ${rotated} rotation`);
  assert.ok(loop.ok >= 2 * MIN_CALLS_EACH_SIDE, `enough calls were made (${loop.ok})`);

  // The regenerate output is the full, new key set.
  assert.deepEqual(
    Object.keys(regenerated).sort(),
    ["primaryConnectionString", "primaryKey", "secondaryConnectionString", "secondaryKey"],
  );
  const newKey = regenerated[`${rotated}Key`];
  assert.match(newKey, KEY_RE);
  assert.notEqual(newKey, before[`${rotated}Key`], `${rotated} key changed`);
  assert.notEqual(newKey, before[`${serving}Key`], `new ${rotated} key differs from the ${serving} key`);
  assert.equal(regenerated[`${serving}Key`], before[`${serving}Key`], `${serving} key unchanged`);
  assert.equal(regenerated[`${serving}ConnectionString`], servingCs, `${serving} connection string unchanged`);
  assert.equal(
    regenerated[`${rotated}ConnectionString`],
    `Endpoint=${hub.endpoint};AccessKey=${newKey};Version=1.0;`,
  );
  assert.deepEqual(await hub.keyShow(), regenerated, "key show agrees with the regenerate output");

  // Old key: rejected immediately, with a 401 carrying an error code.
  const err = await expectRestError(
    sdkClient(oldCs, uniqueHub("old")).sendToAll({ stale: true }),
    `old ${rotated} connection string after rotation`,
  );
  assert401(assert, err, `old ${rotated} key`);
  // New key: accepted immediately.
  await sdkClient(regenerated[`${rotated}ConnectionString`], uniqueHub("new")).sendToAll({ fresh: true });
  // Serving key: still accepted.
  await sdkClient(servingCs, uniqueHub("still")).sendToAll({ still: true });

  // The admin view agrees: the rotated slot got a new version, the serving slot
  // did not, and the serving slot verified every loop call.
  const adminAfter = await adminKeys(hub);
  assert.equal(adminAfter[`${rotated}Key`], newKey);
  assert.ok(
    adminAfter[rotated].version > adminBefore[rotated].version,
    `${rotated}.version increases (${adminBefore[rotated].version} -> ${adminAfter[rotated].version})`,
  );
  assert.equal(adminAfter[serving].version, adminBefore[serving].version, `${serving}.version unchanged`);
  const servedDelta = adminAfter[serving].authenticatedRequests - adminBefore[serving].authenticatedRequests;
  assert.ok(
    servedDelta >= loop.ok + 1,
    `${serving}.authenticatedRequests grew by ${servedDelta}, expected at least ${loop.ok + 1}`,
  );
  return { before, after: regenerated };
}

test("primary rotation: the secondary serves throughout, the old primary gets 401, the new one works", TIMEOUT,
  withHubbub(async (hub) => {
    await rotate(hub, { rotated: "primary", serving: "secondary" });
  }));

test("secondary rotation: the primary serves throughout, the old secondary gets 401, the new one works", TIMEOUT,
  withHubbub(async (hub) => {
    await rotate(hub, { rotated: "secondary", serving: "primary" });
  }));

test("full rotation cycle: primary then secondary; only the newest keys work", TIMEOUT, withHubbub(async (hub) => {
  const first = await rotate(hub, { rotated: "primary", serving: "secondary" });
  const second = await rotate(hub, { rotated: "secondary", serving: "primary" });
  assert.equal(second.after.primaryKey, first.after.primaryKey);
  for (const cs of [first.before.primaryConnectionString, first.before.secondaryConnectionString]) {
    assert401(assert, await expectRestError(sdkClient(cs, uniqueHub("gone")).sendToAll({}), "original key"), "original key");
  }
  await sdkClient(second.after.primaryConnectionString, uniqueHub("p")).sendToAll({});
  await sdkClient(second.after.secondaryConnectionString, uniqueHub("s")).sendToAll({});
}));

test("salt regeneration leaves both access keys working and unchanged", TIMEOUT, withHubbub(async (hub) => {
  const before = await hub.keyShow();
  const adminBefore = await adminKeys(hub);
  const after = await hub.keyRegenerate("salt");
  assert.deepEqual(after, before, "primary/secondary keys and connection strings are unchanged");
  const adminAfter = await adminKeys(hub);
  assert.ok(adminAfter.salt.version > adminBefore.salt.version, "salt.version increases");
  assert.equal(adminAfter.primary.version, adminBefore.primary.version);
  assert.equal(adminAfter.secondary.version, adminBefore.secondary.version);
  await sdkClient(before.primaryConnectionString, uniqueHub("p")).sendToAll({});
  await sdkClient(before.secondaryConnectionString, uniqueHub("s")).sendToAll({});
}));
