// MQTT clients (3.1.1 = protocolVersion 4, and 5) driven by the real npm `mqtt` package over
// ws://.../clients/mqtt/hubs/{hub} with tokens minted by @azure/web-pubsub
// getClientAccessToken({ clientProtocol: "mqtt" }):
// - the upgrade is refused without a token, with another hub's token or a WebSocket-client token;
// - REST group sends arrive on topic = group, sendToAll / sendToUser / sendToConnection on
//   $webpubsub/server/messages at QoS 1 (v5: content type from the data type);
// - MQTT publishes reach official JSON clients (3.1.1: binary; v5 content type picks the data type,
//   user properties become metadata) and other MQTT clients (v5 user properties kept);
// - missing roles: PUBACK 0x87 (v5) and nothing delivered; SUBACK 0x80 / 0x87;
// - persistent sessions resume with session present and the queued QoS 1 messages;
// - the will is published on an abrupt end, not on a normal DISCONNECT;
// - REST closeConnection sends v5 DISCONNECT 0x98 with the reason;
// - bad input (wildcards, QoS 2, bad client id, keep-alive, raw protocol errors, no subprotocol)
//   leaves a bystander untouched;
// - live MQTT clients survive a primary key rotation, tokens of the old primary are refused.

import { test } from "node:test";
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { waitFor } from "./harness.mjs";
import {
  withDataplane, withTimeout, upgrade, openRaw, uid, sleep, MARKER_PREFIX,
} from "./dataplane.mjs";

const T = { timeout: 45_000 };
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];
const SERVER_TOPIC = "$webpubsub/server/messages";
const VERSIONS = [4, 5];

// ---------------------------------------------------------------------------------------------
// helpers

/** An MQTT URL on the loopback listener with a token minted by `svc` (default ctx.service). */
async function mqttUrl(ctx, { service, userId, roles, groups, clientProtocol = "mqtt", hubName } = {}) {
  const svc = service ?? ctx.service;
  const opts = { clientProtocol };
  if (userId !== undefined) opts.userId = userId;
  if (roles) opts.roles = roles;
  if (groups) opts.groups = groups;
  const { token } = await svc.getClientAccessToken(opts);
  return `ws://${ctx.hub.publicAddr}/clients/mqtt/hubs/${hubName ?? ctx.hubName}?access_token=${token}`;
}

/** An mqtt.js client that records everything it receives. */
class MqttConn {
  constructor(client, label) {
    this.client = client;
    this.label = label;
    this.messages = []; // { topic, payload: Buffer, text, qos, dup, properties }
    this.packets = []; // every packet received
    this.connacks = [];
    this.disconnects = []; // DISCONNECT packets from the server
    this.errors = [];
    this.closes = 0;
    client.on("message", (topic, payload, packet) => {
      const buf = Buffer.from(payload);
      this.messages.push({ topic, payload: buf, text: buf.toString("utf8"), qos: packet.qos, dup: packet.dup, properties: packet.properties });
    });
    client.on("packetreceive", (p) => this.packets.push(p));
    client.on("connect", (p) => this.connacks.push(p));
    client.on("disconnect", (p) => this.disconnects.push(p));
    client.on("error", (e) => this.errors.push(e));
    client.on("close", () => { this.closes += 1; });
  }

  get clientId() {
    return this.client.options.clientId;
  }

  get connack() {
    return this.connacks[0];
  }

  /** Messages without flush markers. */
  get data() {
    return this.messages.filter((m) => !m.text.startsWith(MARKER_PREFIX));
  }

  summary() {
    return this.data.map((m) => `${m.topic}|q${m.qos}|${m.text}`);
  }

  async waitMessages(pred, what, timeoutMs = 5_000) {
    return waitFor(() => pred(this.data), { timeoutMs, what: `${this.label}: ${what}; got ${JSON.stringify(this.summary())}` });
  }

  async waitClosed(what = "the connection to close", timeoutMs = 5_000) {
    return waitFor(() => this.closes > 0, {
      timeoutMs, what: `${this.label}: ${what}; errors ${JSON.stringify(this.errors.map((e) => [e.message, e.code]))}`,
    });
  }

  /** Wait until the connection attempt settled: CONNACK, error or close. */
  async settled(timeoutMs = 7_000) {
    await waitFor(() => this.connacks.length > 0 || this.errors.length > 0 || this.closes > 0, {
      timeoutMs, what: `${this.label}: the connect attempt to settle`,
    });
    return this;
  }

  async end() {
    try {
      await withTimeout(this.client.endAsync(true), 5_000, `${this.label}: endAsync`);
    } catch { /* already gone */ }
  }
}

/** Start an mqtt.js client (not waiting). Closed at the end of the test by withMqtt. */
function mqttStart(ctx, url, { v = 5, clientId = uid("c"), label, ...opts } = {}) {
  const client = mqtt.connect(url, {
    protocolVersion: v, clientId, reconnectPeriod: 0, connectTimeout: 5_000, ...opts,
  });
  const conn = new MqttConn(client, label ?? `mqtt v${v} ${clientId}`);
  ctx.mqtts.push(conn);
  return conn;
}

/** Connect an MQTT client with an SDK-minted MQTT token and wait for a successful CONNACK. */
async function mqttOpen(ctx, { v = 5, userId, roles = ROLES, groups, service, url, ...opts } = {}) {
  const u = url ?? await mqttUrl(ctx, { service, userId, roles, groups });
  const conn = mqttStart(ctx, u, { v, ...opts });
  await conn.settled();
  if (!conn.connack) {
    throw new Error(`${conn.label}: no CONNACK; errors ${JSON.stringify(conn.errors.map((e) => [e.message, e.code]))}, closes ${conn.closes}`);
  }
  return conn;
}

/** A connect attempt that must never be established (upgrade refused): close, no CONNACK. */
async function assertRefused(ctx, url, v, what) {
  const conn = mqttStart(ctx, url, { v, label: what });
  await conn.settled();
  await sleep(200);
  assert.equal(conn.connacks.length, 0, `${what}: no CONNACK`);
  assert.equal(conn.client.connected, false, `${what}: never connected`);
  assert.ok(conn.closes > 0, `${what}: the transport closed`);
  const r = await upgrade(url, { protocols: ["mqtt"] });
  if (r.raw) r.raw.close();
  assert.equal(r.status, 401, `${what}: the upgrade itself answers 401`);
}

/**
 * Send a unique marker to each MQTT connection by sendToConnection (client id = connection id) and
 * wait for it: everything sent to that connection earlier has arrived by then.
 */
async function flushMqtt(ctx, conns, timeoutMs = 5_000) {
  await Promise.all(conns.map(async (c) => {
    const marker = `${MARKER_PREFIX}${uid()}`;
    await ctx.service.sendToConnection(c.clientId, marker, { contentType: "text/plain" });
    await waitFor(() => c.messages.some((m) => m.text === marker), {
      timeoutMs, what: `${c.label}: flush marker; got ${JSON.stringify(c.summary())}`,
    });
  }));
}

/** The bystander still receives a fresh group message on `group`. */
async function assertAlive(ctx, bystander, group, what) {
  const text = `alive-${uid()}`;
  await ctx.service.group(group).sendToAll(text, { contentType: "text/plain" });
  await bystander.waitMessages((ms) => ms.some((m) => m.topic === group && m.text === text), `bystander after ${what}`);
  assert.equal(bystander.disconnects.length, 0, `bystander got no DISCONNECT after ${what}`);
  assert.equal(bystander.closes, 0, `bystander not closed after ${what}`);
}

/** Reason codes of the PUBACKs answering the publish packet `sent` (resolved by publishAsync). */
function pubacks(conn, sent) {
  assert.equal(sent?.cmd, "publish", `publishAsync resolves with the sent packet: ${JSON.stringify(sent)}`);
  return conn.packets.filter((p) => p.cmd === "puback" && p.messageId === sent.messageId).map((p) => p.reasonCode);
}

function bytesOf(data) {
  if (data instanceof ArrayBuffer) return [...new Uint8Array(data)];
  if (ArrayBuffer.isView(data)) return [...new Uint8Array(data.buffer, data.byteOffset, data.byteLength)];
  return data;
}

// --- raw MQTT packets (for protocol violations mqtt.js would not send) ---

function varint(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}
const u16 = (n) => Buffer.from([n >> 8, n & 0xff]);
const mstr = (s) => Buffer.concat([u16(Buffer.byteLength(s)), Buffer.from(s)]);
const packet = (first, body) => Buffer.concat([Buffer.from([first]), varint(body.length), body]);

function rawConnect(v, clientId, keepAlive = 60) {
  const vh = Buffer.concat([mstr("MQTT"), Buffer.from([v, 0x02]), u16(keepAlive), v === 5 ? Buffer.from([0]) : Buffer.alloc(0)]);
  return packet(0x10, Buffer.concat([vh, mstr(clientId)]));
}

function rawPublish(v, topic, payload) {
  return packet(0x30, Buffer.concat([mstr(topic), v === 5 ? Buffer.from([0]) : Buffer.alloc(0), Buffer.from(payload)]));
}

/** Decode the MQTT packets in the binary frames of a RawWs: [{ type, body }]. */
function rawPackets(raw) {
  const buf = Buffer.concat(raw.frames.filter((f) => f.isBinary).map((f) => f.data));
  const out = [];
  let i = 0;
  while (i < buf.length) {
    const type = buf[i] >> 4;
    let len = 0;
    let mul = 1;
    let j = i + 1;
    for (;;) {
      const b = buf[j++];
      len += (b & 0x7f) * mul;
      mul *= 128;
      if (!(b & 0x80)) break;
    }
    out.push({ type, first: buf[i], body: buf.subarray(j, j + len) });
    i = j + len;
  }
  return out;
}

/** withDataplane + every MQTT client ended (forced) before the server stops. */
function withMqtt(fn) {
  return withDataplane(async (ctx, t) => {
    ctx.mqtts = [];
    try {
      await fn(ctx, t);
    } finally {
      await Promise.all(ctx.mqtts.map((c) => c.end()));
    }
  }, { hubPrefix: "mq" });
}

// ---------------------------------------------------------------------------------------------
// 1. connect / refuse

test("connect: SDK-minted MQTT tokens connect (v4, v5 CONNACK properties); no token, another hub's token and a WebSocket-client token are refused at the upgrade", T,
  withMqtt(async (ctx) => {
    for (const v of VERSIONS) {
      const c = await mqttOpen(ctx, { v, userId: `u${v}` });
      assert.equal(c.client.connected, true);
      assert.equal(c.connack.sessionPresent, false, `v${v}: a new session`);
      if (v === 5) {
        assert.equal(c.connack.reasonCode, 0);
        const p = c.connack.properties ?? {};
        assert.deepEqual({
          maximumQoS: p.maximumQoS,
          retainAvailable: p.retainAvailable,
          wildcardSubscriptionAvailable: p.wildcardSubscriptionAvailable,
          sharedSubscriptionAvailable: p.sharedSubscriptionAvailable,
          subscriptionIdentifiersAvailable: p.subscriptionIdentifiersAvailable,
          maximumPacketSize: p.maximumPacketSize,
        }, {
          maximumQoS: 1, retainAvailable: false, wildcardSubscriptionAvailable: false, sharedSubscriptionAvailable: false,
          subscriptionIdentifiersAvailable: false, maximumPacketSize: 1048576,
        }, `v5 CONNACK properties: ${JSON.stringify(p)}`);
        assert.ok(!p.topicAliasMaximum, `topic alias maximum 0: ${JSON.stringify(p)}`);
      } else {
        assert.equal(c.connack.returnCode, 0);
      }
      assert.equal(await ctx.service.connectionExists(c.clientId), true, `v${v}: the client id is the connection id`);
    }

    const base = `ws://${ctx.hub.publicAddr}/clients/mqtt/hubs/${ctx.hubName}`;
    const otherHub = await mqttUrl(ctx, { service: ctx.serviceFor(ctx.keys.primaryConnectionString, `${ctx.hubName}x`), roles: ROLES });
    const otherHubToken = new URL(otherHub).searchParams.get("access_token");
    const wsClientTok = (await ctx.service.getClientAccessToken({ userId: "ws", roles: ROLES })).token;
    for (const v of VERSIONS) {
      await assertRefused(ctx, base, v, `v${v} without a token`);
      await assertRefused(ctx, `${base}?access_token=${otherHubToken}`, v, `v${v} with a token for another hub`);
      await assertRefused(ctx, `${base}?access_token=${wsClientTok}`, v, `v${v} with a WebSocket-client token`);
    }
  }));

// ---------------------------------------------------------------------------------------------
// 2. REST sends to MQTT subscribers

for (const v of VERSIONS) {
  test(`v${v}: REST group send arrives on topic = group, sendToAll/User/Connection on ${SERVER_TOPIC} at QoS 1${v === 5 ? " with content types" : ""}`, T,
    withMqtt(async (ctx) => {
      const c = await mqttOpen(ctx, { v, userId: "ru" });
      const granted = await c.client.subscribeAsync({ g: { qos: 1 }, g2: { qos: 2 } });
      assert.deepEqual(granted.map((g) => [g.topic, g.qos]), [["g", 1], ["g2", 1]], "QoS 1 granted, QoS 2 downgraded to 1");
      const other = await mqttOpen(ctx, { v, userId: "other", label: "other user (not subscribed)" });

      const svc = ctx.service;
      await svc.group("g").sendToAll("group text", { contentType: "text/plain" });
      await svc.sendToAll({ all: true });
      await svc.sendToUser("ru", Buffer.from([0, 1, 2, 255]), { contentType: "application/octet-stream" });
      await svc.sendToConnection(c.clientId, "to the connection", { contentType: "text/plain" });
      await svc.group("g2").sendToAll({ g2: 1 });
      await flushMqtt(ctx, [c, other]);

      assert.deepEqual(c.data.map((m) => [m.topic, m.qos, m.text]), [
        ["g", 1, "group text"],
        [SERVER_TOPIC, 1, '{"all":true}'],
        [SERVER_TOPIC, 1, Buffer.from([0, 1, 2, 255]).toString("utf8")],
        [SERVER_TOPIC, 1, "to the connection"],
        ["g2", 1, '{"g2":1}'],
      ], `v${v} receiver`);
      assert.deepEqual([...c.data[2].payload], [0, 1, 2, 255], "binary payload bytes unchanged");
      if (v === 5) {
        assert.deepEqual(c.data.map((m) => m.properties?.contentType), [
          "text/plain", "application/json", "application/octet-stream", "text/plain", "application/json",
        ]);
        assert.deepEqual(c.data.map((m) => m.properties?.payloadFormatIndicator ?? false), [true, true, false, true, true],
          "payload format indicator 1 for text/json only");
      } else {
        assert.ok(c.data.every((m) => m.properties === undefined), "no properties in 3.1.1");
      }
      assert.deepEqual(other.data.map((m) => [m.topic, m.text]), [[SERVER_TOPIC, '{"all":true}']],
        "a client of another user gets only sendToAll");
    }));
}

// ---------------------------------------------------------------------------------------------
// 3. MQTT publish -> JSON client and MQTT receivers

test("MQTT publishes QoS 1 reach an official JSON client and MQTT receivers: 3.1.1 is binary; v5 content type picks the data type, user properties become metadata", T,
  withMqtt(async (ctx) => {
    const json = await ctx.connect({ protocol: "json", userId: "jsonu", roles: ROLES, label: "JSON client" });
    await json.client.joinGroup("g");
    const r5 = await mqttOpen(ctx, { v: 5, userId: "r5", label: "v5 receiver" });
    const r4 = await mqttOpen(ctx, { v: 4, userId: "r4", label: "v4 receiver" });
    for (const r of [r5, r4]) await r.client.subscribeAsync("g", { qos: 1 });

    const p4 = await mqttOpen(ctx, { v: 4, userId: "pub4", label: "v4 publisher" });
    const p5 = await mqttOpen(ctx, { v: 5, userId: "pub5", label: "v5 publisher" });
    const sent4 = await p4.client.publishAsync("g", Buffer.from([1, 2, 3]), { qos: 1 });
    assert.deepEqual(pubacks(p4, sent4), [undefined], "v4 QoS 1 publish acknowledged (3.1.1 PUBACK has no reason code)");
    const sent5 = await p5.client.publishAsync("g", '{"x":1,"y":[true]}', {
      qos: 1, properties: { contentType: "application/json", userProperties: { "Trace-Id": "t-1", kind: "a b" } },
    });
    assert.deepEqual(pubacks(p5, sent5), [0], "v5 PUBACK success");
    await p5.client.publishAsync("g", "plain text", { qos: 1, properties: { contentType: "text/plain" } });
    await p5.client.publishAsync("g", "no content type", { qos: 1 });

    await ctx.flush([json]);
    await flushMqtt(ctx, [r5, r4]);

    assert.deepEqual(json.data.map((m) => [m.from, m.group, m.fromUserId, m.dataType, bytesOf(m.data), m.metadata]), [
      ["group", "g", "pub4", "binary", [1, 2, 3], undefined],
      ["group", "g", "pub5", "json", { x: 1, y: [true] }, { "Trace-Id": "t-1", kind: "a b" }],
      ["group", "g", "pub5", "text", "plain text", undefined],
      ["group", "g", "pub5", "binary", [...Buffer.from("no content type")], undefined],
    ], `JSON client: ${JSON.stringify(json.summary())}`);

    const texts = [Buffer.from([1, 2, 3]).toString("utf8"), '{"x":1,"y":[true]}', "plain text", "no content type"];
    for (const r of [r5, r4]) {
      assert.deepEqual(r.data.map((m) => [m.topic, m.qos, m.text]), texts.map((t) => ["g", 1, t]), `${r.label}`);
    }
    assert.deepEqual(r5.data.map((m) => [m.properties?.contentType, m.properties?.userProperties && { ...m.properties.userProperties }]), [
      ["application/octet-stream", undefined],
      ["application/json", { "Trace-Id": "t-1", kind: "a b" }],
      ["text/plain", undefined],
      ["application/octet-stream", undefined],
    ], "v5 receiver: content type and user properties");
    assert.deepEqual(p4.data.concat(p5.data), [], "publishers did not subscribe and get nothing back");
  }));

// ---------------------------------------------------------------------------------------------
// 4. missing roles

test("without sendToGroup: v5 QoS 1 PUBACK 0x87, 3.1.1 a plain PUBACK, nothing delivered; without joinLeaveGroup: SUBACK 0x80 (v4) / 0x87 (v5)", T,
  withMqtt(async (ctx) => {
    const sub = await mqttOpen(ctx, { v: 5, userId: "sub", label: "subscriber" });
    await sub.client.subscribeAsync("g", { qos: 1 });
    const json = await ctx.connect({ protocol: "json", userId: "j", roles: ROLES, label: "JSON member" });
    await json.client.joinGroup("g");

    const p5 = await mqttOpen(ctx, { v: 5, userId: "np5", roles: ["webpubsub.joinLeaveGroup"] });
    const err = await p5.client.publishAsync("g", "forbidden-5", { qos: 1 }).then(
      (r) => assert.fail(`v5 publish without sendToGroup resolved: ${JSON.stringify(r)}`), (e) => e);
    assert.equal(err.code, 0x87, `v5 publish error: ${err.message}`);
    assert.deepEqual(p5.packets.filter((p) => p.cmd === "puback").map((p) => p.reasonCode), [0x87], "the PUBACK itself carries 0x87");

    const p4 = await mqttOpen(ctx, { v: 4, userId: "np4", roles: ["webpubsub.joinLeaveGroup"] });
    const sent4 = await p4.client.publishAsync("g", "forbidden-4", { qos: 1 });
    assert.deepEqual(pubacks(p4, sent4), [undefined], "3.1.1 gets a normal PUBACK");
    assert.equal(p4.client.connected, true);

    await flushMqtt(ctx, [sub]);
    await ctx.flush([json]);
    assert.deepEqual(sub.data, [], "the MQTT subscriber got nothing");
    assert.deepEqual(json.data, [], "the JSON member got nothing");
    assert.equal(p5.client.connected, true, "the v5 publisher stays connected");

    // Granted role for the exact group works (sanity that the check is about the role).
    const scoped = await mqttOpen(ctx, { v: 5, userId: "scoped", roles: ["webpubsub.sendToGroup.g"] });
    await scoped.client.publishAsync("g", "allowed", { qos: 1 });
    await sub.waitMessages((ms) => ms.some((m) => m.text === "allowed"), "the scoped-role publish");

    for (const v of VERSIONS) {
      const c = await mqttOpen(ctx, { v, userId: `nj${v}`, roles: ["webpubsub.sendToGroup"] });
      const e = await c.client.subscribeAsync("g", { qos: 1 }).then(
        (r) => assert.fail(`v${v} subscribe without joinLeaveGroup resolved: ${JSON.stringify(r)}`), (x) => x);
      assert.deepEqual(e.packet?.granted, [v === 5 ? 0x87 : 0x80], `v${v} SUBACK (${e.message})`);
      await ctx.service.group("g").sendToAll("group msg", { contentType: "text/plain" });
      await flushMqtt(ctx, [c]);
      assert.deepEqual(c.data, [], `v${v}: not a member after the refused subscribe`);
    }
  }));

// ---------------------------------------------------------------------------------------------
// 5. persistent sessions

for (const v of VERSIONS) {
  test(`v${v}: a persistent session resumes with session present and the QoS 1 messages sent while away; clean start drops it`, T,
    withMqtt(async (ctx) => {
      const clientId = uid("persist");
      const persist = v === 5 ? { clean: false, properties: { sessionExpiryInterval: 60 } } : { clean: false };
      const url = await mqttUrl(ctx, { userId: "pu", roles: ROLES });
      const c1 = await mqttOpen(ctx, { v, url, clientId, ...persist, label: "first connection" });
      assert.equal(c1.connack.sessionPresent, false);
      await c1.client.subscribeAsync({ g: { qos: 1 }, g0: { qos: 0 } });
      await ctx.service.group("g").sendToAll("before", { contentType: "text/plain" });
      await ctx.service.group("g0").sendToAll("before-q0", { contentType: "text/plain" });
      await c1.waitMessages((ms) => ms.some((m) => m.text === "before-q0"), "the first messages");
      assert.deepEqual(c1.data.map((m) => [m.topic, m.qos, m.text]), [["g", 1, "before"], ["g0", 0, "before-q0"]]);
      c1.client.stream.destroy();
      await c1.waitClosed("the destroyed transport");

      for (const n of [1, 2, 3]) {
        await ctx.service.group("g").sendToAll(`away-${n}`, { contentType: "text/plain" });
        await ctx.service.group("g0").sendToAll(`away-q0-${n}`, { contentType: "text/plain" });
      }
      assert.equal(await ctx.service.connectionExists(clientId), true, "the session is kept while away");

      const c2 = await mqttOpen(ctx, { v, url, clientId, ...persist, label: "resumed connection" });
      assert.equal(c2.connack.sessionPresent, true, "session present");
      await c2.waitMessages((ms) => ms.length >= 3, "the queued messages");
      await ctx.service.group("g").sendToAll("after", { contentType: "text/plain" });
      await ctx.service.group("g0").sendToAll("after-q0", { contentType: "text/plain" });
      await flushMqtt(ctx, [c2]);
      assert.deepEqual(c2.data.map((m) => [m.topic, m.qos, m.text]), [
        ["g", 1, "away-1"], ["g", 1, "away-2"], ["g", 1, "away-3"], ["g", 1, "after"], ["g0", 0, "after-q0"],
      ], "queued QoS 1 messages (QoS 0 ones dropped while away), then both subscriptions are still in place");

      c2.client.stream.destroy();
      await c2.waitClosed("the second destroyed transport");
      await ctx.service.group("g").sendToAll("away-again", { contentType: "text/plain" });
      const c3 = await mqttOpen(ctx, { v, url, clientId, clean: true, label: "clean reconnect" });
      assert.equal(c3.connack.sessionPresent, false, "clean start: no session present");
      await ctx.service.group("g").sendToAll("after-clean", { contentType: "text/plain" });
      await flushMqtt(ctx, [c3]);
      assert.deepEqual(c3.data, [], `clean start: nothing old and no subscription: ${JSON.stringify(c3.summary())}`);
    }));
}

// ---------------------------------------------------------------------------------------------
// 6. will

for (const v of VERSIONS) {
  test(`v${v}: the will is published on an abrupt end (to MQTT and JSON members), not after a normal end()`, T,
    withMqtt(async (ctx) => {
      const sub = await mqttOpen(ctx, { v: 4, userId: "wsub", label: "will subscriber" });
      await sub.client.subscribeAsync("w", { qos: 1 });
      const json = await ctx.connect({ protocol: "json", userId: "wj", roles: ROLES, label: "JSON will member" });
      await json.client.joinGroup("w");

      const will = (payload) => ({ topic: "w", payload: Buffer.from(payload), qos: 1, retain: false });
      const abrupt = await mqttOpen(ctx, { v, userId: "willer", will: will(`will-abrupt-${v}`) });
      abrupt.client.stream.destroy();
      await sub.waitMessages((ms) => ms.some((m) => m.text === `will-abrupt-${v}`), "the will");
      await json.waitMessages((ms) => ms.length >= 1, "the will at the JSON member");
      assert.deepEqual(json.data.map((m) => [m.group, m.fromUserId, m.dataType, bytesOf(m.data)]), [
        ["w", "willer", "binary", [...Buffer.from(`will-abrupt-${v}`)]],
      ]);

      const normal = await mqttOpen(ctx, { v, userId: "willer2", will: will(`will-normal-${v}`) });
      await withTimeout(normal.client.endAsync(), 5_000, "normal end()");
      await waitFor(async () => !(await ctx.service.connectionExists(normal.clientId)), {
        timeoutMs: 5_000, what: "the normally ended connection to be gone",
      });
      await flushMqtt(ctx, [sub]);
      await ctx.flush([json]);
      assert.deepEqual(sub.data.map((m) => m.text), [`will-abrupt-${v}`], "no will after a normal DISCONNECT");
      assert.equal(json.data.length, 1, `JSON member: ${JSON.stringify(json.summary())}`);
    }));
}

// ---------------------------------------------------------------------------------------------
// 7. closeConnection

test("REST closeConnection: v5 gets DISCONNECT 0x98 with the reason string, v4 is closed; connectionExists follows", T,
  withMqtt(async (ctx) => {
    for (const v of VERSIONS) {
      const c = await mqttOpen(ctx, { v, userId: `cc${v}` });
      assert.equal(await ctx.service.connectionExists(c.clientId), true, `v${v}: exists while connected`);
      await ctx.service.closeConnection(c.clientId, { reason: `bye-${v}` });
      await c.waitClosed("closeConnection");
      if (v === 5) {
        assert.equal(c.disconnects.length, 1, "one DISCONNECT");
        assert.equal(c.disconnects[0].reasonCode, 0x98);
        assert.equal(c.disconnects[0].properties?.reasonString, "bye-5");
      } else {
        assert.equal(c.disconnects.length, 0, "3.1.1 has no server DISCONNECT");
      }
      await waitFor(async () => !(await ctx.service.connectionExists(c.clientId)), {
        timeoutMs: 5_000, what: `v${v}: connectionExists false after closeConnection`,
      });
    }
  }));

// ---------------------------------------------------------------------------------------------
// 8. bad input

test("bad input (wildcards, QoS 2, bad client id, keep-alive 181, raw protocol violations, no subprotocol) leaves a bystander untouched", T,
  withMqtt(async (ctx) => {
    const bystander = await mqttOpen(ctx, { v: 5, userId: "by", label: "bystander" });
    await bystander.client.subscribeAsync("g", { qos: 1 });
    const url = await mqttUrl(ctx, { userId: "bad", roles: ROLES });

    // Wildcard subscriptions.
    for (const v of VERSIONS) {
      const c = await mqttOpen(ctx, { v, url });
      const e = await c.client.subscribeAsync("a/+", { qos: 1 }).then((r) => assert.fail(`v${v} a/+ granted ${JSON.stringify(r)}`), (x) => x);
      assert.deepEqual(e.packet?.granted, [v === 5 ? 0xa2 : 0x80], `v${v} wildcard SUBACK (${e.message})`);
      assert.equal(c.client.connected, true, `v${v}: still connected after the refused wildcard`);
      await assertAlive(ctx, bystander, "g", `v${v} wildcard subscribe`);
    }

    // QoS 2 publish.
    {
      const c = await mqttOpen(ctx, { v: 5, url });
      c.client.publish("g", "qos2", { qos: 2 }, () => {});
      await c.waitClosed("QoS 2 publish");
      assert.deepEqual(c.disconnects.map((d) => d.reasonCode), [0x9b], "v5 DISCONNECT QoS not supported");
      const c4 = await mqttOpen(ctx, { v: 4, url });
      c4.client.publish("g", "qos2", { qos: 2 }, () => {});
      await c4.waitClosed("v4 QoS 2 publish");
      await flushMqtt(ctx, [bystander]);
      assert.ok(!bystander.data.some((m) => m.text === "qos2"), "the QoS 2 publish is not delivered");
      await assertAlive(ctx, bystander, "g", "QoS 2 publish");
    }

    // Invalid client id.
    for (const v of VERSIONS) {
      const c = mqttStart(ctx, url, { v, clientId: "bad-id!" });
      await c.settled();
      await waitFor(() => c.errors.length > 0, { timeoutMs: 3_000, what: `v${v} bad client id error` });
      assert.equal(c.connacks.length, 0);
      assert.equal(c.errors[0].code, v === 5 ? 0x85 : 2, `v${v} bad client id: ${c.errors[0].message}`);
      const connack = c.packets.find((p) => p.cmd === "connack");
      assert.equal(v === 5 ? connack?.reasonCode : connack?.returnCode, v === 5 ? 0x85 : 2);
      await assertAlive(ctx, bystander, "g", `v${v} bad client id`);
    }

    // Keep-alive 181 on 3.1.1: closed without CONNACK.
    {
      const c = mqttStart(ctx, url, { v: 4, keepalive: 181 });
      await c.waitClosed("keep-alive 181");
      assert.equal(c.packets.length, 0, `no CONNACK for keep-alive 181: ${JSON.stringify(c.packets)}`);
      assert.equal(c.client.connected, false);
      // 180 is fine; v5 over 180 is accepted with Server Keep Alive 180.
      const ok = await mqttOpen(ctx, { v: 4, url, keepalive: 180 });
      assert.equal(ok.connack.returnCode, 0);
      const ok5 = await mqttOpen(ctx, { v: 5, url, keepalive: 300 });
      assert.deepEqual([ok5.connack.reasonCode, ok5.connack.properties?.serverKeepAlive], [0, 180], "v5 keep-alive 300 -> Server Keep Alive 180");
      await assertAlive(ctx, bystander, "g", "keep-alive 181");
    }

    // Raw: PUBLISH before CONNECT -> closed, no answer.
    {
      const raw = ctx.track(await openRaw(url, { protocols: ["mqtt"] }));
      assert.equal(raw.ws.protocol, "mqtt");
      raw.ws.send(rawPublish(5, "g", "sneaky"));
      await raw.waitClosed(5_000, "PUBLISH before CONNECT");
      assert.deepEqual(rawPackets(raw), [], "nothing sent back");
      await flushMqtt(ctx, [bystander]);
      assert.ok(!bystander.data.some((m) => m.text === "sneaky"));
      await assertAlive(ctx, bystander, "g", "PUBLISH before CONNECT");
    }

    // Raw: a second CONNECT after CONNACK -> v5 DISCONNECT 0x82, then closed; 3.1.1 closed.
    for (const v of VERSIONS) {
      const raw = ctx.track(await openRaw(url, { protocols: ["mqtt"] }));
      const id = uid("raw");
      raw.ws.send(rawConnect(v, id));
      await waitFor(() => rawPackets(raw).some((p) => p.type === 2), { timeoutMs: 5_000, what: `v${v} raw CONNACK; frames ${raw.describeFrames()}` });
      const connack = rawPackets(raw)[0];
      assert.equal(connack.body[1], 0, `v${v} raw CONNACK accepted: ${connack.body.toString("hex")}`);
      raw.ws.send(rawConnect(v, id));
      await raw.waitClosed(5_000, `v${v} second CONNECT`);
      const after = rawPackets(raw).slice(1);
      if (v === 5) {
        assert.deepEqual(after.map((p) => [p.first, p.body[0]]), [[0xe0, 0x82]], `v5: DISCONNECT 0x82 (${raw.describeFrames()})`);
      } else {
        assert.deepEqual(after, [], "3.1.1: just closed");
      }
      await assertAlive(ctx, bystander, "g", `v${v} second CONNECT`);
    }

    // No (or another) subprotocol -> 400 before the upgrade.
    for (const protocols of [[], ["json.webpubsub.azure.v1"]]) {
      const r = await upgrade(url, { protocols });
      if (r.raw) r.raw.close();
      assert.equal(r.status, 400, `subprotocols ${JSON.stringify(protocols)}`);
    }
    const ok = await upgrade(url, { protocols: ["mqttv3.1"] });
    assert.equal(ok.status, 101, "mqttv3.1 is accepted too");
    ctx.track(ok.raw);
    await assertAlive(ctx, bystander, "g", "refused upgrades");
  }));

// ---------------------------------------------------------------------------------------------
// 9. key rotation

test("primary key rotation: a live v5 client stays connected and receives secondary-key sends; old-primary tokens are refused", T,
  withMqtt(async (ctx) => {
    const keys0 = ctx.keys;
    const live = await mqttOpen(ctx, { v: 5, userId: "live", label: "live v5 client (primary token)" });
    await live.client.subscribeAsync("g", { qos: 1 });
    const oldUrl = await mqttUrl(ctx, { userId: "late", roles: ROLES });

    const keys1 = await ctx.hub.keyRegenerate("primary");
    assert.notEqual(keys1.primaryKey, keys0.primaryKey, "the primary key changed");
    const secondary = ctx.serviceFor(keys0.secondaryConnectionString);
    await secondary.group("g").sendToAll("after rotation", { contentType: "text/plain" });
    await secondary.sendToConnection(live.clientId, "direct", { contentType: "text/plain" });
    await live.waitMessages((ms) => ms.length >= 2, "sends after the rotation");
    assert.deepEqual(live.data.map((m) => [m.topic, m.text]), [["g", "after rotation"], [SERVER_TOPIC, "direct"]]);
    assert.equal(live.client.connected, true);
    assert.deepEqual([live.disconnects.length, live.closes], [0, 0], "no DISCONNECT, no close");

    await assertRefused(ctx, oldUrl, 5, "token signed by the old primary");
    const fresh = await mqttOpen(ctx, { v: 5, service: ctx.serviceFor(keys1.primaryConnectionString), userId: "fresh" });
    assert.equal(fresh.connack.reasonCode, 0, "a token of the new primary connects");
    const sec = await mqttOpen(ctx, { v: 4, service: secondary, userId: "sec" });
    assert.equal(sec.connack.returnCode, 0, "a token of the secondary connects");
  }));
