// Message metadata end to end: a raw JSON client's sendToGroup / event / invoke carry
// "metadata"; receivers get it on the message frame (raw JSON, and through the official 1.1.0
// client's group-message / server-message events, JSON and reliable, also on replay after a TCP
// cut); bad metadata is refused with an ack BadRequest (boundaries accepted); REST sends take
// X-WebPubSub-Metadata-<key> headers (keys lower-cased; bad ones are a 400 InvalidMetadata); an
// express app with @azure/web-pubsub-express gets a client event's metadata as
// x-webpubsub-metadata-* request headers, and its response headers become the reply's metadata
// (server message for an event, invokeResponse for an invoke).

import { test } from "node:test";
import assert from "node:assert/strict";
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import { waitFor } from "./harness.mjs";
import { withDataplane, JSON_SUBPROTOCOL, expectReject, sleep, rawCall, rawOk, rawMember } from "./dataplane.mjs";
import { startUpstream, configureHub, handlerSetting, waitEvent } from "./upstream.mjs";
import { startProxy } from "./proxy.mjs";

const T = { timeout: 60_000 };
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

const META = { "Trace-Id": "t-1", kind: "a b ~!#$%&'()*+,-./:;<=>?@[\\]^_`{|}", "x.y_z": "ok ok" };

test("client sendToGroup metadata reaches raw JSON, SDK JSON and SDK reliable receivers exactly, keys in order", T,
  withDataplane(async (ctx) => {
    const sender = await rawMember(ctx, "sender", ["g"]);
    const raw = await rawMember(ctx, "raw", ["g"]);
    const sdkJson = await ctx.connect({ protocol: "json", userId: "sj", roles: ROLES });
    const sdkRel = await ctx.connect({ protocol: "reliable", userId: "sr", roles: ROLES });
    for (const c of [sdkJson, sdkRel]) await c.client.joinGroup("g");

    await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "with-meta", metadata: META, noEcho: true });
    await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "json", data: { j: 1 }, metadata: { one: "1" }, noEcho: true });
    await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "binary", data: "AQI=", metadata: { bin: "yes" }, noEcho: true });
    await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "no-meta", noEcho: true });
    await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "empty-meta", metadata: {}, noEcho: true });
    await ctx.flush([raw, sdkJson, sdkRel]);

    const base = { type: "message", from: "group", group: "g", fromUserId: "sender" };
    assert.deepEqual(raw.dataMessages, [
      { ...base, dataType: "text", data: "with-meta", metadata: META },
      { ...base, dataType: "json", data: { j: 1 }, metadata: { one: "1" } },
      { ...base, dataType: "binary", data: "AQI=", metadata: { bin: "yes" } },
      { ...base, dataType: "text", data: "no-meta" },
      { ...base, dataType: "text", data: "empty-meta" },
    ], `raw receiver frames: ${raw.describeFrames()}`);
    assert.deepEqual(Object.keys(raw.dataMessages[0].metadata), Object.keys(META), "metadata keys keep the sender's order and case");

    for (const c of [sdkJson, sdkRel]) {
      assert.deepEqual(c.data.map((m) => [(m.data instanceof ArrayBuffer || ArrayBuffer.isView(m.data)) ? [...new Uint8Array(m.data.buffer ?? m.data, m.data.byteOffset ?? 0, m.data.byteLength)] : m.data, m.metadata]), [
        ["with-meta", META], [{ j: 1 }, { one: "1" }], [[1, 2], { bin: "yes" }], ["no-meta", undefined], ["empty-meta", undefined],
      ], `${c.label}: what the SDK passes through`);
    }
    assert.deepEqual(sender.dataMessages, [], "noEcho");
  }));

test("metadata survives a reliable replay after a TCP cut (client and REST sends)", T,
  withDataplane(async (ctx) => {
    const proxy = await startProxy(ctx.hub.publicPort);
    try {
      const sender = await rawMember(ctx, "sender", ["g"]);
      const rel = await ctx.connect({ protocol: "reliable", userId: "rel", roles: ROLES, transformUrl: (u) => proxy.url(u) });
      await rel.client.joinGroup("g");
      proxy.refuse(true);
      proxy.cut();
      await waitFor(() => proxy.refused >= 1, { timeoutMs: 10_000, what: "a refused reconnect attempt" });
      await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "during-cut", metadata: { phase: "cut" } });
      await ctx.service.sendToConnection(rel.connectionId, "rest-during-cut", {
        contentType: "text/plain", requestOptions: { customHeaders: { "X-WebPubSub-Metadata-Phase": "rest-cut" } },
      });
      proxy.refuse(false);
      await rel.waitMessages((ms) => ms.length >= 2, "the replay", 15_000);
      await ctx.flush([rel]);
      assert.deepEqual(rel.data.map((m) => [m.from, m.data, m.metadata]), [
        ["group", "during-cut", { phase: "cut" }],
        ["server", "rest-during-cut", { phase: "rest-cut" }],
      ]);
      assert.equal(rel.connected.length, 1, "recovered the same connection");
    } finally {
      await ctx.cleanup();
      await proxy.close();
    }
  }));

test("bad client metadata is refused with an ack BadRequest and not delivered; the limits themselves are accepted", T,
  withDataplane(async (ctx) => {
    const sender = await rawMember(ctx, "sender", ["g"]);
    const recv = await rawMember(ctx, "recv", ["g"]);
    const fill = (n, len) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v".repeat(len)]));
    const good = {
      "key of 256 bytes": { ["k".repeat(256)]: "v" },
      "value of 1024 bytes": { k: "v".repeat(1024) },
      "8192 bytes in all": fill(8, 1022), // 8 x (2 + 1022)
      "every token character": { "!#$%&'*+-.^_`|~09azAZ": "v" },
    };
    const bad = {
      "key of 257 bytes": { ["k".repeat(257)]: "v" },
      "value of 1025 bytes": { k: "v".repeat(1025) },
      "8193 bytes in all": { ...fill(7, 1022), k7: "v".repeat(1023) },
      "key with a space": { "bad key": "v" },
      "key with a colon": { "a:b": "v" },
      "empty key": { "": "v" },
      "non-ASCII key": { "cl\u00e9": "v" },
      "non-ASCII value": { k: "caf\u00e9" },
      "value with a newline": { k: "a\nb" },
      "value with DEL": { k: "a\u007fb" },
      "number value": { k: 1 },
      "null value": { k: null },
      "metadata is an array": ["k", "v"],
      "metadata is a string": "k=v",
    };
    const problems = [];
    for (const [what, metadata] of Object.entries(bad)) {
      for (const type of ["sendToGroup", "event"]) {
        const frame = type === "sendToGroup"
          ? { type, group: "g", dataType: "text", data: `bad:${what}`, metadata }
          : { type, event: "e", dataType: "text", data: `bad:${what}`, metadata };
        const ack = await rawCall(sender, frame);
        if (ack.success !== false || ack.error?.name !== "BadRequest") problems.push(`${type} with ${what}: ${JSON.stringify(ack)}`);
      }
    }
    for (const [what, metadata] of Object.entries(good)) {
      const ack = await rawCall(sender, { type: "sendToGroup", group: "g", dataType: "text", data: `good:${what}`, metadata });
      if (ack.success !== true) problems.push(`${what} must be accepted: ${JSON.stringify(ack)}`);
    }
    assert.deepEqual(problems, []);
    await ctx.flush([recv]);
    assert.deepEqual(recv.dataMessages.map((m) => [m.data, m.metadata]), Object.entries(good).map(([w, m]) => [`good:${w}`, m]),
      "only the accepted messages arrive, with their metadata");
    assert.equal(sender.closed, null, "the connection stays open");
  }));

test("REST sends: X-WebPubSub-Metadata-* headers on all four routes become metadata (lower-cased keys); bad ones are 400 InvalidMetadata", T,
  withDataplane(async (ctx) => {
    const svc = ctx.service;
    const raw = await rawMember(ctx, "u1", ["g"]);
    const sdk = await ctx.connect({ protocol: "reliable", userId: "u1", label: "sdk reliable" });
    await svc.group("g").addConnection(sdk.connectionId);
    const hdr = (route) => ({ requestOptions: { customHeaders: { "X-WebPubSub-Metadata-Trace-Id": `tr-${route}`, "x-webpubsub-metadata-Route": route } } });
    await svc.sendToAll("to-all", { contentType: "text/plain", ...hdr("all") });
    await svc.group("g").sendToAll({ to: "group" }, hdr("group"));
    await svc.sendToUser("u1", "to-user", { contentType: "text/plain", ...hdr("user") });
    await svc.sendToConnection(raw.connectionId, "to-conn", { contentType: "text/plain", ...hdr("conn") });
    await svc.sendToConnection(sdk.connectionId, "to-conn", { contentType: "text/plain", ...hdr("conn") });
    await svc.sendToAll("no-meta", { contentType: "text/plain" });
    await ctx.flush([raw, sdk]);

    const want = (route) => ({ "trace-id": `tr-${route}`, route });
    assert.deepEqual(raw.dataMessages, [
      { type: "message", from: "server", dataType: "text", data: "to-all", metadata: want("all") },
      { type: "message", from: "group", group: "g", dataType: "json", data: { to: "group" }, metadata: want("group") },
      { type: "message", from: "server", dataType: "text", data: "to-user", metadata: want("user") },
      { type: "message", from: "server", dataType: "text", data: "to-conn", metadata: want("conn") },
      { type: "message", from: "server", dataType: "text", data: "no-meta" },
    ], `raw receiver: ${raw.describeFrames()}`);
    assert.deepEqual(sdk.data.map((m) => [m.from, m.metadata]), [
      ["server", want("all")], ["group", want("group")], ["server", want("user")], ["server", want("conn")], ["server", undefined],
    ], "SDK reliable receiver: metadata passed through");

    const badHeaders = {
      "key of 257 bytes": { [`X-WebPubSub-Metadata-${"k".repeat(257)}`]: "v" },
      "value of 1025 bytes": { "X-WebPubSub-Metadata-K": "v".repeat(1025) },
      "more than 8 KiB": Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`X-WebPubSub-Metadata-K${i}`, "v".repeat(1000)])),
      "empty key": { "X-WebPubSub-Metadata-": "v" },
      "non-ASCII value": { "X-WebPubSub-Metadata-K": "caf\u00e9" },
    };
    const problems = [];
    for (const [what, customHeaders] of Object.entries(badHeaders)) {
      for (const [route, send] of [
        ["hub", () => svc.sendToAll(`bad:${what}`, { contentType: "text/plain", requestOptions: { customHeaders } })],
        ["group", () => svc.group("g").sendToAll(`bad:${what}`, { contentType: "text/plain", requestOptions: { customHeaders } })],
        ["user", () => svc.sendToUser("u1", `bad:${what}`, { contentType: "text/plain", requestOptions: { customHeaders } })],
        ["connection", () => svc.sendToConnection(raw.connectionId, `bad:${what}`, { contentType: "text/plain", requestOptions: { customHeaders } })],
      ]) {
        let e;
        try { e = await expectReject(send(), `${route} ${what}`); } catch (x) { problems.push(x.message); continue; }
        let body;
        try { body = JSON.parse(e.response?.bodyAsText ?? ""); } catch { /* not JSON */ }
        if (e.statusCode !== 400 || body?.code !== "InvalidMetadata" || typeof body?.message !== "string"
          || e.response?.headers?.get("x-ms-error-code") !== "InvalidMetadata") {
          problems.push(`${route} with ${what}: ${e.statusCode} ${e.response?.bodyAsText} (${e.message})`);
        }
      }
    }
    assert.deepEqual(problems, []);
    await ctx.flush([raw]);
    assert.equal(raw.dataMessages.filter((m) => String(m.data).startsWith("bad:")).length, 0, "nothing refused was delivered");
  }));

/**
 * An express app: a middleware first, for the
 * event "meta", sets X-WebPubSub-Metadata-* response headers (echoing the request's trace-id);
 * then WebPubSubEventHandler answers "reply:<data>" as text.
 */
async function metaApp(hubName) {
  const handler = new WebPubSubEventHandler(hubName, {
    handleUserEvent(req, res) {
      res.success(`reply:${req.data}`, "text");
    },
  });
  const app = express();
  app.use((req, res, next) => {
    if (req.headers["ce-eventname"] === "meta") {
      res.setHeader("X-WebPubSub-Metadata-Reply-Key", "Reply Value");
      res.setHeader("X-WebPubSub-Metadata-Echo", req.headers["x-webpubsub-metadata-trace-id"] ?? "none");
    }
    next();
  });
  app.use(handler.getMiddleware());
  app.use((req, res) => res.status(404).end());
  const up = await startUpstream(app);
  up.handlerUrl = `${up.base}/api/webpubsub/hubs/{hub}/`;
  return up;
}

const metaHeaders = (r) => Object.fromEntries(Object.entries(r.headers).filter(([k]) => k.startsWith("x-webpubsub-metadata-")));

test("event handlers: a client event's metadata arrives as x-webpubsub-metadata-* headers; response headers become the reply's metadata (event and invoke)", T,
  withDataplane(async (ctx) => {
    const up = await metaApp(ctx.hubName);
    try {
      await configureHub(ctx.hub, ctx.hubName, { eventHandlers: [handlerSetting(up.handlerUrl, { systemEvents: [] })] });
      const raw = await rawMember(ctx, "raw");

      // event
      await rawOk(raw, { type: "event", event: "meta", dataType: "text", data: "e1", metadata: { "Trace-Id": "T-1", other: "x y" } });
      const r1 = await waitEvent(up, "meta", raw.connectionId);
      assert.deepEqual(metaHeaders(r1), { "x-webpubsub-metadata-trace-id": "T-1", "x-webpubsub-metadata-other": "x y" },
        `request headers: ${JSON.stringify(r1.headers)}`);
      const reply = await raw.waitJson((j) => j.type === "message" && j.from === "server", "the event's reply");
      assert.deepEqual(reply, {
        type: "message", from: "server", dataType: "text", data: "reply:e1", metadata: { "reply-key": "Reply Value", echo: "T-1" },
      });

      // invoke
      raw.send({ type: "invoke", invocationId: "inv-1", event: "meta", dataType: "text", data: "i1", metadata: { "Trace-Id": "T-2" } });
      const res = await raw.waitJson((j) => j.type === "invokeResponse" && j.invocationId === "inv-1", "invokeResponse");
      assert.deepEqual(res, {
        type: "invokeResponse", invocationId: "inv-1", success: true, dataType: "text", data: "reply:i1",
        metadata: { "reply-key": "Reply Value", echo: "T-2" },
      });
      const r2 = up.events("meta", raw.connectionId).at(-1);
      assert.deepEqual(metaHeaders(r2), { "x-webpubsub-metadata-trace-id": "T-2" });

      // An invoke with bad metadata is answered with an invokeResponse error, not a closed socket.
      const before = up.events("meta", raw.connectionId).length;
      raw.send({ type: "invoke", invocationId: "inv-bad", event: "meta", dataType: "text", data: "x", metadata: { "bad key": "v" } });
      const bad = await raw.waitJson((j) => j.type === "invokeResponse" && j.invocationId === "inv-bad", "the bad invoke's response");
      assert.deepEqual([bad.success, bad.error?.name], [false, "BadRequest"], JSON.stringify(bad));
      assert.match(bad.error.message, /HTTP token/);
      assert.equal(up.events("meta", raw.connectionId).length, before, "the handler was not called");

      // An event without metadata: no metadata headers; another event name: no metadata back.
      await rawOk(raw, { type: "event", event: "plain", dataType: "text", data: "p1" });
      const r3 = await waitEvent(up, "plain", raw.connectionId);
      assert.deepEqual(metaHeaders(r3), {}, "no metadata headers without metadata");
      const plainReply = await raw.waitJson((j) => j.type === "message" && j.data === "reply:p1", "plain reply");
      assert.equal("metadata" in plainReply, false, `no metadata on a reply without metadata headers: ${JSON.stringify(plainReply)}`);

      // The official client: its events carry none, the reply's metadata is passed through on server-message.
      const sdk = await ctx.connect({ protocol: "json", userId: "sdk" });
      await sdk.client.sendEvent("meta", "s1", "text");
      await sdk.waitCount(1);
      assert.deepEqual([sdk.data[0].data, sdk.data[0].metadata], ["reply:s1", { "reply-key": "Reply Value", echo: "none" }]);
      const inv = await sdk.client.invokeEvent("meta", "s2", "text");
      assert.deepEqual([inv.dataType, inv.data], ["text", "reply:s2"], `invoke result ${JSON.stringify(inv)}`);
      await sleep(50);
    } finally {
      await up.close();
    }
  }));
