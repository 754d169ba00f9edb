// Revoke with disconnect, seen from the official SDKs: WebPubSubClient connections whose token
// the primary key signed (minted by @azure/web-pubsub) are closed, those of the secondary key
// stay connected and keep receiving; `hubbub key revoke` says what it did.

import { test } from "node:test";
import assert from "node:assert/strict";
import { WebPubSubClient, WebPubSubJsonProtocol, WebPubSubJsonReliableProtocol } from "@azure/web-pubsub-client";
import { withHubbub, sdkClient, expectRestError, uniqueHub, waitFor } from "./harness.mjs";

const TIMEOUT = { timeout: 60_000 };

async function connect(service, userId, protocol) {
  const { url } = await service.getClientAccessToken({ userId });
  const client = new WebPubSubClient(url, { protocol, autoReconnect: false });
  const state = { received: [], stopped: false, disconnected: null };
  client.on("server-message", (e) => state.received.push(e.message.data));
  client.on("disconnected", (e) => { state.disconnected = e.message ?? "disconnected"; });
  client.on("stopped", () => { state.stopped = true; });
  await client.start();
  return { client, state };
}

test("revoke --disconnect closes exactly the connections the revoked key signed", TIMEOUT, withHubbub(async (hub) => {
  const keys = await hub.keyShow();
  const hubName = uniqueHub("revoke");
  const primary = sdkClient(keys.primaryConnectionString, hubName);
  const secondary = sdkClient(keys.secondaryConnectionString, hubName);
  const onPrimary = await connect(primary, "p1", WebPubSubJsonProtocol());
  const onPrimaryReliable = await connect(primary, "p2", WebPubSubJsonReliableProtocol());
  const onSecondary = await connect(secondary, "s1", WebPubSubJsonProtocol());

  const r = await hub.cli([
    "key", "revoke", "--key-type", "primary", "--disconnect",
    "--admin-url", hub.adminUrl, "--data-dir", hub.dataDir,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /Revoked the primary key: version 1/);
  assert.match(r.stderr, /Closed 2 connection\(s\)/);
  const after = JSON.parse(r.stdout);
  assert.notEqual(after.primaryKey, keys.primaryKey);
  assert.equal(after.secondaryKey, keys.secondaryKey);

  await waitFor(() => onPrimary.state.stopped && onPrimaryReliable.state.stopped, {
    what: "both primary-key clients stopped",
  });
  // The secondary key's connection is untouched and hears a broadcast.
  await secondary.sendToAll("still here", { contentType: "text/plain" });
  await waitFor(() => onSecondary.state.received.includes("still here"), { what: "the broadcast" });
  assert.equal(onSecondary.state.stopped, false);
  // The old primary is refused at once.
  await expectRestError(primary.sendToAll("x"), "the revoked primary key");
  onSecondary.client.stop();
}));
