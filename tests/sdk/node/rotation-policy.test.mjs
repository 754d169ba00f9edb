// A rotation policy with a file sink, seen from an app on the official service SDK
// (@azure/web-pubsub): the app reads its connection string from the sink before each call and
// keeps working through two rotation steps, while a client kept on the value from two steps back
// is refused.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { withHubbub, sdkClient, expectRestError, assert401, uniqueHub } from "./harness.mjs";

const TIMEOUT = { timeout: 90_000 };

test("two rotation steps through a file sink: an app re-reading the sink never fails", TIMEOUT, withHubbub(async (hub) => {
  const sink = join(hub.dataDir, "sinks", "app", "connection-string");
  const cli = (args) => hub.cli([...args, "--admin-url", hub.adminUrl, "--data-dir", hub.dataDir]);
  const set = await cli(["key", "policy", "set", "--every", "30d", "--sink-file", sink]);
  assert.equal(set.code, 0, set.stderr);
  assert.equal(JSON.parse(set.stdout).activeKeyType, "primary");
  assert.equal((await stat(sink)).mode & 0o777, 0o600, "the sink file is private");

  const hubName = uniqueHub("policy");
  const fromSink = async () => (await readFile(sink, "utf8")).trim();
  const firstValue = await fromSink();
  assert.equal(firstValue, (await hub.keyShow()).primaryConnectionString);
  const stuck = sdkClient(firstValue, hubName);

  // The app: every call uses whatever the sink holds right now.
  const state = { ok: 0, failures: [], stopped: false };
  const app = (async () => {
    while (!state.stopped) {
      try {
        await sdkClient(await fromSink(), hubName).sendToAll({ n: state.ok });
        state.ok += 1;
      } catch (e) {
        state.failures.push(`${e.statusCode ?? ""} ${e.message}`);
        if (state.failures.length > 5) return;
      }
    }
  })();
  const waitCalls = async (n) => {
    const until = state.ok + n;
    const deadline = Date.now() + 20_000;
    while (state.ok < until && state.failures.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  try {
    await waitCalls(10);
    const one = await cli(["key", "rotate"]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(JSON.parse(one.stdout).activeKeyType, "secondary");
    await waitCalls(10);
    // The value the app started with is still valid after one step...
    await stuck.sendToAll("one step on");
    const two = await cli(["key", "rotate"]);
    assert.equal(two.code, 0, two.stderr);
    assert.equal(JSON.parse(two.stdout).activeKeyType, "primary");
    await waitCalls(10);
  } finally {
    state.stopped = true;
    await app;
  }
  assert.deepEqual(state.failures, [], "the app re-reading the sink never failed");
  assert.ok(state.ok >= 30, `the app kept calling (${state.ok})`);
  // ...and gone after two: the client that never re-read the sink is refused.
  assert401(assert, await expectRestError(stuck.sendToAll("two steps on"), "value two steps back"), "stale");
  assert.notEqual(await fromSink(), firstValue);

  const shown = await cli(["key", "policy", "show"]);
  const policy = JSON.parse(shown.stdout);
  assert.equal(policy.inStep, true);
  assert.equal(policy.lastOutcome.result, "rotated");
  const cleared = await cli(["key", "policy", "clear"]);
  assert.equal(cleared.code, 0, cleared.stderr);
  assert.notEqual((await cli(["key", "policy", "show"])).code, 0, "no policy any more");
}));

test("--only-if-idle postpones a due step while an app still uses the standby key", { timeout: 90_000 }, withHubbub(async (hub) => {
  const cli = (args) => hub.cli([...args, "--admin-url", hub.adminUrl, "--data-dir", hub.dataDir]);
  const keys = await hub.keyShow();
  const set = await cli(["key", "policy", "set", "--every", "10s", "--only-if-idle", "5m"]);
  assert.equal(set.code, 0, set.stderr);
  // An app still on the standby (secondary) key, through the service SDK.
  const onStandby = sdkClient(keys.secondaryConnectionString, uniqueHub("idle"));
  await onStandby.sendToAll("still here");
  // The step falls due after 10 s; the housekeeper sees the standby key in use and waits.
  let policy;
  const deadline = Date.now() + 40_000;
  while (Date.now() < deadline) {
    policy = JSON.parse((await cli(["key", "policy", "show"])).stdout);
    if (policy.lastOutcome?.result === "postponed") break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(policy.lastOutcome?.result, "postponed", JSON.stringify(policy));
  assert.match(policy.lastOutcome.detail, /secondary key \(standby\) was used 1 time/);
  assert.equal(policy.activeKeyType, "primary");
  assert.equal((await hub.keyShow()).secondaryKey, keys.secondaryKey, "the standby key was not regenerated");
  await onStandby.sendToAll("and still works");
}));
