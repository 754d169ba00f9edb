// Stale callers: an app still using a regenerated key, through the official SDKs
// (@azure/web-pubsub for REST, @azure/web-pubsub-client for a client connection), gets a 401
// that names the key, its version and what to do, and shows up in `hubbub key stale-callers`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";
import {
  withHubbub, sdkClient, expectRestError, assert401, uniqueHub, waitFor,
} from "./harness.mjs";

const TIMEOUT = { timeout: 60_000 };

async function staleCallers(hub) {
  const r = await hub.cli([
    "key", "stale-callers", "--json", "--admin-url", hub.adminUrl, "--data-dir", hub.dataDir,
  ]);
  assert.equal(r.code, 0, `key stale-callers: ${r.stderr}`);
  return JSON.parse(r.stdout).value;
}

test("an app on a regenerated key is told which key and is listed as a stale caller", TIMEOUT, withHubbub(async (hub) => {
  const before = await hub.keyShow();
  const hubName = uniqueHub("stale");
  const oldService = sdkClient(before.primaryConnectionString, hubName);
  await oldService.sendToAll("works before");
  await hub.keyRegenerate("primary");

  // The service SDK: a 401 whose message names the key and its version.
  const err = await expectRestError(oldService.sendToAll("after"), "REST with the old primary key");
  const body = assert401(assert, err, "old primary key");
  assert.match(body.message, /primary key version 1, which was regenerated at \d{4}-\d\d-\d\dT/);
  assert.match(body.message, /connection string/);
  assert.ok(!body.message.includes(before.primaryKey), "the key itself is never in the message");

  // The client SDK, with a token the old key signed: refused.
  const { url } = await oldService.getClientAccessToken({ userId: "stale-user" });
  const client = new WebPubSubClient(url, { protocol: WebPubSubJsonProtocol(), autoReconnect: false });
  await assert.rejects(client.start(), "a connection with an old-key token is refused");
  client.stop();

  // The secondary key was not regenerated: nothing stale about it.
  await sdkClient(before.secondaryConnectionString, hubName).sendToAll("secondary still works");

  const callers = await waitFor(async () => {
    const list = await staleCallers(hub);
    return list.length >= 2 ? list : null;
  }, { what: "two stale callers" });
  const rest = callers.find((c) => c.kind === "rest");
  const connection = callers.find((c) => c.kind === "connection");
  for (const [caller, what] of [[rest, "REST"], [connection, "connection"]]) {
    assert.ok(caller, `${what} caller listed: ${JSON.stringify(callers)}`);
    assert.equal(caller.keyType, "primary");
    assert.equal(caller.version, 1);
    assert.equal(caller.hub.toLowerCase(), hubName.toLowerCase());
    assert.equal(caller.sourceAddress, "127.0.0.1");
    assert.ok(caller.count >= 1);
    assert.ok(Date.parse(caller.firstSeenAt) <= Date.parse(caller.lastSeenAt));
  }
  assert.match(rest.userAgent, /azsdk-js/i, "the SDK's user agent names the app");
  assert.ok(!callers.some((c) => c.keyType === "secondary"));

  // The table form names the key, the version and the hub.
  const table = await hub.cli(["key", "stale-callers", "--admin-url", hub.adminUrl, "--data-dir", hub.dataDir]);
  assert.equal(table.code, 0);
  assert.match(table.stdout, /primary\s+1\s+rest/);
  assert.ok(table.stdout.includes(rest.hub));

  // And /metrics counts them.
  const metrics = await (await hub.admin("GET", "/metrics")).text();
  assert.match(metrics, /hubbub_key_stale_authentications_total\{slot="primary"\} [2-9]/);
}));
