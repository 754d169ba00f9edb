// The previous client release, @azure/web-pubsub-client 1.0.4 (installed under the npm alias
// `web-pubsub-client-1.0.4`), against Hubbub: connect with its default protocol (reliable JSON)
// and with the plain JSON protocol, joinGroup / leaveGroup, sendToGroup in text / json / binary
// received by another client, REST sendToAll in the three content types, and recovery of the
// same connection after the TCP connection is cut (through the proxy of proxy.mjs).
// The rest of the suite drives the newest client; this file keeps the older one working.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import * as clientSdk104 from "web-pubsub-client-1.0.4";
import { waitFor } from "./harness.mjs";
import {
  withDataplane, arrayBuffer, norm, sleep, JSON_SUBPROTOCOL, RELIABLE_SUBPROTOCOL,
} from "./dataplane.mjs";
import { startProxy } from "./proxy.mjs";

const T = { timeout: 60_000 };
const SDK = clientSdk104;

// "default" passes no protocol option: the client's own default, which is the reliable protocol.
const VARIANTS = [
  { protocol: "default", subprotocol: RELIABLE_SUBPROTOCOL, reliable: true },
  { protocol: "json", subprotocol: JSON_SUBPROTOCOL, reliable: false },
];

/** A message as [from, group, dataType, payload] (binary payloads as "b64:<base64>"). */
function shape(m) {
  return [m.from, m.group, m.dataType, norm(m.dataType, m.data)];
}

/** The subprotocol the server accepted in the handshake of `conn`'s current socket. */
function negotiated(conn) {
  return conn.client._wsClient?._socket?.protocol;
}

test("the alias web-pubsub-client-1.0.4 is @azure/web-pubsub-client 1.0.4, distinct from the suite's client", async () => {
  const require = createRequire(import.meta.url);
  const old = JSON.parse(await readFile(require.resolve("web-pubsub-client-1.0.4/package.json"), "utf8"));
  assert.equal(old.name, "@azure/web-pubsub-client");
  assert.equal(old.version, "1.0.4");
  const current = JSON.parse(await readFile(require.resolve("@azure/web-pubsub-client/package.json"), "utf8"));
  assert.notEqual(current.version, "1.0.4", "the main suite runs a newer client");
  const { WebPubSubClient } = await import("@azure/web-pubsub-client");
  assert.notEqual(SDK.WebPubSubClient, WebPubSubClient, "two different client classes are loaded");
});

for (const v of VARIANTS) {
  const name = v.protocol === "default" ? "default protocol (reliable)" : "json protocol";

  test(`client 1.0.4, ${name}: connect, join/leave, sendToGroup text/json/binary to another client, REST sendToAll`, T,
    withDataplane(async (ctx) => {
      const roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];
      const alice = await ctx.connect({ sdk: SDK, protocol: v.protocol, userId: "alice", roles, label: "alice (1.0.4)" });
      const bob = await ctx.connect({ sdk: SDK, protocol: v.protocol, userId: "bob", roles, label: "bob (1.0.4)" });

      // connected: ids and user ids as issued; the subprotocol the server accepted.
      assert.equal(alice.connected.length, 1);
      assert.equal(alice.connected[0].userId, "alice");
      assert.equal(bob.connected[0].userId, "bob");
      assert.equal(typeof alice.connectionId, "string");
      assert.ok(alice.connectionId.length > 0);
      assert.notEqual(alice.connectionId, bob.connectionId);
      assert.equal(negotiated(alice), v.subprotocol, "subprotocol accepted by the server");
      assert.equal(typeof alice.client._reconnectionToken === "string" && alice.client._reconnectionToken.length > 0,
        v.reliable, `reconnection token in the connected message: ${JSON.stringify(alice.client._reconnectionToken)}`);
      assert.equal(await ctx.service.connectionExists(alice.connectionId), true);
      assert.equal(await ctx.service.userExists("bob"), true);

      // joinGroup through the 1.0.4 client, acked.
      const ja = await alice.client.joinGroup("room");
      assert.equal(ja.isDuplicated, false, `joinGroup ack ${JSON.stringify(ja)}`);
      await bob.client.joinGroup("room");
      assert.equal(await ctx.service.groupExists("room"), true);

      // Alice publishes text, json and binary (noEcho); Bob receives each payload as sent.
      const bytes = [0, 1, 2, 127, 128, 250, 255];
      const json = { n: 1, s: "zwei", list: [3, null, true], nested: { x: "ü" } };
      const r1 = await alice.client.sendToGroup("room", "hello from 1.0.4", "text", { noEcho: true });
      assert.equal(r1.isDuplicated, false);
      assert.equal(typeof r1.ackId, "number", `sendToGroup ack ${JSON.stringify(r1)}`);
      await alice.client.sendToGroup("room", json, "json", { noEcho: true });
      await alice.client.sendToGroup("room", arrayBuffer(bytes), "binary", { noEcho: true });
      await bob.waitCount(3);
      assert.deepEqual(bob.data.map(shape), [
        ["group", "room", "text", "hello from 1.0.4"],
        ["group", "room", "json", json],
        ["group", "room", "binary", `b64:${Buffer.from(bytes).toString("base64")}`],
      ], `bob: ${JSON.stringify(bob.summary())}`);
      assert.ok(bob.data[2].data instanceof ArrayBuffer, "binary payload is an ArrayBuffer");
      assert.deepEqual(bob.data.map((m) => m.fromUserId), ["alice", "alice", "alice"], "fromUserId");

      // With echo (the default), the sender gets its own message too.
      await bob.client.sendToGroup("room", "echoed", "text");
      await alice.waitMessages((ms) => ms.some((m) => m.data === "echoed"), "bob's group message");
      await bob.waitMessages((ms) => ms.some((m) => m.data === "echoed"), "bob's own echo");
      await ctx.flush([alice, bob]);
      assert.deepEqual(alice.summary(), ["group:room:text:echoed"], "noEcho kept alice's own messages from her");

      // REST sendToAll in the three content types reaches both clients as server messages.
      const restJson = { from: "rest", k: [1, 2] };
      await ctx.service.sendToAll("rest text", { contentType: "text/plain" });
      await ctx.service.sendToAll(restJson);
      await ctx.service.sendToAll(arrayBuffer([9, 8, 7, 0]), { contentType: "application/octet-stream" });
      const wantServer = [
        ["server", undefined, "text", "rest text"],
        ["server", undefined, "json", restJson],
        ["server", undefined, "binary", `b64:${Buffer.from([9, 8, 7, 0]).toString("base64")}`],
      ];
      for (const c of [alice, bob]) {
        await c.waitMessages((ms) => ms.filter((m) => m.from === "server").length >= 3, "three server messages");
        assert.deepEqual(c.data.slice(-3).map(shape), wantServer, `${c.label}: REST messages ${JSON.stringify(c.summary())}`);
      }

      // Reliable messages carry strictly increasing sequence ids; plain JSON ones carry none.
      for (const c of [alice, bob]) {
        const seq = c.messages.map((m) => m.sequenceId);
        if (v.reliable) {
          assert.ok(seq.every((s, i) => Number.isInteger(s) && (i === 0 || s > seq[i - 1])), `${c.label}: sequenceIds ${JSON.stringify(seq)}`);
        } else {
          assert.ok(seq.every((s) => s === undefined), `${c.label}: no sequenceIds on the json protocol ${JSON.stringify(seq)}`);
        }
      }

      // leaveGroup: bob no longer gets room messages; alice still does.
      const lb = await bob.client.leaveGroup("room");
      assert.equal(lb.isDuplicated, false);
      const bobBefore = bob.data.length;
      await ctx.service.group("room").sendToAll("after bob left", { contentType: "text/plain" });
      await alice.waitMessages((ms) => ms.some((m) => m.data === "after bob left"), "group message after bob left");
      await ctx.flush([bob]);
      assert.deepEqual(bob.summary().slice(bobBefore), [], "bob got nothing after leaveGroup");
      assert.equal(alice.disconnected.length, 0);
      assert.equal(bob.disconnected.length, 0);
    }));
}

test("client 1.0.4, default protocol: TCP cut, messages sent meanwhile arrive once and in order on the same connection", T,
  withDataplane(async (ctx) => {
    const proxy = await startProxy(ctx.hub.publicPort);
    try {
      const c = await ctx.connect({
        sdk: SDK, protocol: "default", userId: "rec-104", roles: ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"],
        transformUrl: (u) => proxy.url(u), label: "1.0.4 client via proxy",
      });
      const id = c.connectionId;
      assert.equal(negotiated(c), RELIABLE_SUBPROTOCOL);
      await c.client.joinGroup("rg");
      for (let i = 1; i <= 3; i++) await ctx.service.group("rg").sendToAll(`m${i}`, { contentType: "text/plain" });
      await c.waitCount(3);

      proxy.refuse(true);
      proxy.cut();
      await waitFor(() => proxy.refused >= 1, { timeoutMs: 10_000, what: "a refused reconnect attempt" });
      // While cut: the server keeps the session and its group membership, and queues what is sent.
      for (let i = 4; i <= 8; i++) {
        if (i % 2) await ctx.service.group("rg").sendToAll(`m${i}`, { contentType: "text/plain" });
        else await ctx.service.sendToConnection(id, `m${i}`, { contentType: "text/plain" });
      }
      assert.equal(await ctx.service.connectionExists(id), true, "the session is kept during the cut");
      proxy.refuse(false);

      await c.waitMessages((ms) => ms.length >= 8, "messages sent during the cut", 15_000);
      await ctx.service.sendToConnection(id, "m9", { contentType: "text/plain" });
      await c.waitMessages((ms) => ms.length >= 9, "a message after recovery");
      await sleep(300); // room for a late duplicate
      assert.deepEqual(c.data.map((m) => m.data), ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"],
        "every message exactly once, in order");
      assert.equal(c.connected.length, 1, "no second connected event");
      assert.equal(c.disconnected.length, 0, "no disconnected event");
      assert.ok(proxy.requestLines.some((l) => l.includes(`awps_connection_id=${id}`) && l.includes("awps_reconnection_token=")),
        `the client used the recovery URL: ${JSON.stringify(proxy.requestLines)}`);
      // Still the same, working connection: it publishes with an ack and gets its own echo.
      const res = await c.client.sendToGroup("rg", { after: "recovery" }, "json");
      assert.equal(res.isDuplicated, false);
      await c.waitMessages((ms) => ms.some((m) => m.dataType === "json" && m.data?.after === "recovery"), "own group message after recovery");
      assert.equal(await ctx.service.connectionExists(id), true);
    } finally {
      await ctx.cleanup();
      await proxy.close();
    }
  }));
