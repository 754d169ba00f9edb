// MQTT clients (npm `mqtt` 5.16.0 over WebSocket) with an event handler written with the official
// @azure/web-pubsub-express WebPubSubEventHandler in a real express app, tokens from
// @azure/web-pubsub getClientAccessToken({ clientProtocol: "mqtt" }):
// - connect refused by the handler with failWith({ mqtt: { code, reason } }) -> CONNACK code / reason string;
// - connect accepted with userId/groups derived from the CONNECT username/password -> group and
//   user sends reach the client without SUBSCRIBE;
// - onConnected / onDisconnected with the MQTT context (physicalConnectionId, sessionId, initiatedByClient,
//   disconnectPacket);
// - a user event published to $webpubsub/server/events/<event> answered on .../succeeded (and .../failed).

import { test } from "node:test";
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import { waitFor } from "./harness.mjs";
import { withDataplane, uid, sleep } from "./dataplane.mjs";
import { serveEventHandler, configureHub, handlerSetting, waitEvent } from "./upstream.mjs";

const T = { timeout: 60_000 };
const SERVER_TOPIC = "$webpubsub/server/messages";
const VERSIONS = [4, 5]; // MQTT 3.1.1 and 5.0

/**
 * An express app with WebPubSubEventHandler for `hubName`; `handlers` are the handler options
 * (handleConnect, handleUserEvent, ...). Every request the handler functions see is recorded in
 * `up.seen`.
 */
async function mqttApp(hubName, handlers) {
  const seen = { connect: [], connected: [], disconnected: [], user: [] };
  const handler = new WebPubSubEventHandler(hubName, {
    handleConnect(req, res) {
      seen.connect.push(req);
      if (handlers.handleConnect) handlers.handleConnect(req, res);
      else res.success();
    },
    handleUserEvent(req, res) {
      seen.user.push(req);
      if (handlers.handleUserEvent) handlers.handleUserEvent(req, res);
      else res.success();
    },
    onConnected(req) { seen.connected.push(req); },
    onDisconnected(req) { seen.disconnected.push(req); },
  });
  return serveEventHandler(handler, seen);
}

/** The SDK's MQTT client URL, pointed at the loopback listener (the endpoint says localhost). */
async function mqttUrl(ctx, tokenOpts = {}) {
  const t = await ctx.service.getClientAccessToken({ clientProtocol: "mqtt", ...tokenOpts });
  const u = new URL(t.url);
  assert.equal(u.pathname, `/clients/mqtt/hubs/${ctx.hubName}`, `SDK url ${t.url}`);
  assert.equal(u.searchParams.get("access_token"), t.token, `SDK url ${t.url}`);
  return `ws://${ctx.hub.publicAddr}${u.pathname}${u.search}`;
}

/** An mqtt.js client that records every packet, message, error and close. Never reconnects. */
function mqttClient(url, opts, clients) {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...opts });
  const rec = {
    client, label: `mqtt v${opts.protocolVersion} ${opts.clientId}`, packets: [], messages: [], errors: [], closed: false,
    connack() { return this.packets.find((p) => p.cmd === "connack"); },
    describe() {
      return JSON.stringify({
        packets: this.packets.map((p) => ({ cmd: p.cmd, reasonCode: p.reasonCode, returnCode: p.returnCode, properties: p.properties, topic: p.topic })),
        errors: this.errors.map((e) => `${e.message} (code ${e.code})`), closed: this.closed,
      });
    },
    async waitConnack(timeoutMs = 5_000) {
      return waitFor(() => this.connack(), { timeoutMs, what: `${this.label}: CONNACK; ${this.describe()}` });
    },
    async waitMessages(pred, what, timeoutMs = 5_000) {
      return waitFor(() => (pred(this.messages) ? this.messages : null), {
        timeoutMs, what: `${this.label}: ${what}; messages ${JSON.stringify(this.summary())}; ${this.describe()}`,
      });
    },
    summary() { return this.messages.map((m) => `${m.topic}:q${m.qos}:${m.payload.toString("utf8")}`); },
  };
  client.on("packetreceive", (p) => rec.packets.push(p));
  client.on("message", (topic, payload, packet) => rec.messages.push({
    topic, payload: Buffer.from(payload), qos: packet.qos, properties: packet.properties,
  }));
  client.on("error", (e) => rec.errors.push(e));
  client.on("close", () => { rec.closed = true; });
  clients.push(rec);
  return rec;
}

async function closeAll(clients) {
  for (const c of clients) {
    try { await c.client.endAsync(true); } catch { /* gone */ }
  }
}

test("mqtt: a connect handler refusing with failWith({ mqtt: { code, reason } }) -> CONNACK refusal (v5 135 + reason string, 3.1.1 return code 5)", T,
  withDataplane(async (ctx) => {
    const up = await mqttApp(ctx.hubName, {
      handleConnect(req, res) {
        if (req.mqtt?.protocolVersion === 5) res.failWith({ mqtt: { code: 0x87, reason: "not you" } });
        else res.failWith({ mqtt: { code: 5, reason: "not you either" } });
      },
    });
    const clients = [];
    try {
      await configureHub(ctx.hub, ctx.hubName, { eventHandlers: [handlerSetting(up.handlerUrl)] });
      const url = await mqttUrl(ctx, { userId: "refused-user" });

      const v5 = mqttClient(url, { protocolVersion: 5, clientId: `r5${uid()}` }, clients);
      const ack5 = await v5.waitConnack();
      assert.equal(ack5.reasonCode, 135, `v5 CONNACK: ${v5.describe()}`);
      assert.equal(ack5.properties?.reasonString, "not you", `v5 CONNACK properties: ${JSON.stringify(ack5.properties)}`);
      await waitFor(() => v5.errors.length > 0 && v5.closed, { timeoutMs: 5_000, what: `v5 error + close; ${v5.describe()}` });
      assert.equal(v5.errors[0].code, 135, `mqtt.js error: ${v5.errors[0].message}`);
      assert.equal(v5.client.connected, false);

      const v4 = mqttClient(url, { protocolVersion: 4, clientId: `r4${uid()}` }, clients);
      const ack4 = await v4.waitConnack();
      assert.equal(ack4.returnCode, 5, `3.1.1 CONNACK: ${v4.describe()}`);
      await waitFor(() => v4.errors.length > 0 && v4.closed, { timeoutMs: 5_000, what: `3.1.1 error + close; ${v4.describe()}` });
      assert.equal(v4.errors[0].code, 5, `mqtt.js error: ${v4.errors[0].message}`);

      // What the handler saw: MQTT connect requests, per protocol version.
      assert.deepEqual(up.seen.connect.map((r) => [r.context.clientProtocol, r.mqtt?.protocolVersion, r.context.connectionId, r.claims?.sub?.[0]]), [
        ["mqtt", 5, v5.client.options.clientId, "refused-user"],
        ["mqtt", 4, v4.client.options.clientId, "refused-user"],
      ]);
      for (const r of up.seen.connect) {
        assert.equal(typeof r.context.mqtt?.physicalConnectionId, "string", `physicalConnectionId in ${JSON.stringify(r.context)}`);
        assert.ok(r.context.mqtt.physicalConnectionId.length > 0);
      }
      // The express SDK turned the refusals into 401 (0x87 / 5 = not authorized).
      const posts = up.events("connect");
      assert.deepEqual(posts.map((r) => r.status), [401, 401], `upstream answers: ${JSON.stringify(up.summary())}`);
      assert.deepEqual(posts.map((r) => r.headers["ce-subprotocol"]), ["mqtt", "mqtt"]);
      // Refused connections never become sessions.
      await sleep(200);
      assert.deepEqual([up.seen.connected.length, up.seen.disconnected.length], [0, 0], `events: ${JSON.stringify(up.summary())}`);
    } finally {
      await closeAll(clients);
      await up.close();
    }
  }));

test("mqtt: userId and groups from the connect handler (derived from username/password) -> group and user sends arrive without SUBSCRIBE", T,
  withDataplane(async (ctx) => {
    const up = await mqttApp(ctx.hubName, {
      handleConnect(req, res) {
        const password = req.mqtt?.password ? Buffer.from(req.mqtt.password, "base64").toString("utf8") : null;
        if (password !== `pw-${req.mqtt?.username}`) {
          res.failWith({ mqtt: { code: req.mqtt?.protocolVersion === 5 ? 0x86 : 4, reason: "bad password" } });
          return;
        }
        const answer = { userId: `u-${req.mqtt.username}`, groups: ["g1"] };
        if (req.mqtt.protocolVersion === 5) answer.mqtt = { userProperties: [{ name: "welcome", value: req.mqtt.username }] };
        res.success(answer);
      },
    });
    const clients = [];
    try {
      await configureHub(ctx.hub, ctx.hubName, { eventHandlers: [handlerSetting(up.handlerUrl)] });
      const url = await mqttUrl(ctx); // no userId in the token
      for (const protocolVersion of VERSIONS) {
        const username = `alice${protocolVersion}`;
        const c = mqttClient(url, {
          protocolVersion, clientId: `ok${protocolVersion}${uid()}`, username, password: `pw-${username}`,
          ...(protocolVersion === 5 ? { properties: { userProperties: { tenant: "t1" } } } : {}),
        }, clients);
        const ack = await c.waitConnack();
        assert.equal(protocolVersion === 5 ? ack.reasonCode : ack.returnCode, 0, `CONNACK: ${c.describe()}`);
        if (protocolVersion === 5) {
          // the handler's user properties come back in the CONNACK
          assert.deepEqual({ ...ack.properties?.userProperties }, { welcome: username }, `CONNACK properties ${JSON.stringify(ack.properties)}`);
        }
        await waitFor(() => c.client.connected, { timeoutMs: 5_000, what: `${c.label} connected` });

        const req = up.seen.connect.at(-1);
        assert.equal(req.mqtt.username, username);
        assert.equal(Buffer.from(req.mqtt.password, "base64").toString("utf8"), `pw-${username}`, "password is base64 in the connect event");
        assert.equal(req.mqtt.protocolVersion, protocolVersion);
        assert.deepEqual(req.mqtt.userProperties ?? null, protocolVersion === 5 ? [{ name: "tenant", value: "t1" }] : null,
          `userProperties: ${JSON.stringify(req.mqtt.userProperties)}`);

        assert.equal(await ctx.service.userExists(`u-${username}`), true, `userExists(u-${username})`);
        await ctx.service.group("g1").sendToAll(`to-g1-${protocolVersion}`, { contentType: "text/plain" });
        await ctx.service.group("g2").sendToAll("to-g2", { contentType: "text/plain" });
        await ctx.service.sendToUser(`u-${username}`, { to: username });
        await c.waitMessages((ms) => ms.length >= 2, "the group and the user message");
        await sleep(200); // a stray g2 message would show up here
        assert.deepEqual(c.messages.map((m) => [m.topic, m.qos, m.payload.toString("utf8")]), [
          ["g1", 0, `to-g1-${protocolVersion}`], // groups from the handler are joined at QoS 0
          [SERVER_TOPIC, 1, JSON.stringify({ to: username })],
        ], `messages of ${c.label}`);
        await c.client.endAsync();
      }
      // A wrong password is refused by the handler.
      const bad = mqttClient(url, { protocolVersion: 5, clientId: `bad${uid()}`, username: "mallory", password: "guess" }, clients);
      const ack = await bad.waitConnack();
      assert.equal(ack.reasonCode, 0x86, `CONNACK: ${bad.describe()}`);
      assert.equal(ack.properties?.reasonString, "bad password");
    } finally {
      await closeAll(clients);
      await up.close();
    }
  }));

test("mqtt: onConnected and onDisconnected carry the MQTT context; a normal end() is initiatedByClient with DISCONNECT code 0", T,
  withDataplane(async (ctx) => {
    const up = await mqttApp(ctx.hubName, {});
    const clients = [];
    try {
      await configureHub(ctx.hub, ctx.hubName, { eventHandlers: [handlerSetting(up.handlerUrl)] });
      for (const protocolVersion of VERSIONS) {
        const userId = `ev-user-${protocolVersion}`;
        const url = await mqttUrl(ctx, { userId });
        const clientId = `ev${protocolVersion}${uid()}`;
        const c = mqttClient(url, { protocolVersion, clientId }, clients);
        await c.waitConnack();
        await waitFor(() => c.client.connected, { timeoutMs: 5_000, what: `${c.label} connected; ${c.describe()}` });

        const connectReq = up.seen.connect.find((r) => r.context.connectionId === clientId);
        assert.ok(connectReq, `connect event for ${clientId}: ${JSON.stringify(up.summary())}`);
        const connected = await waitFor(() => up.seen.connected.find((r) => r.context.connectionId === clientId),
          { timeoutMs: 5_000, what: `onConnected for ${clientId}; ${JSON.stringify(up.summary())}` });
        assert.equal(connected.context.clientProtocol, "mqtt");
        assert.equal(connected.context.userId, userId);
        assert.equal(connected.context.hub, ctx.hubName.toLowerCase());
        const physical = connected.context.mqtt?.physicalConnectionId;
        const session = connected.context.mqtt?.sessionId;
        assert.ok(typeof physical === "string" && physical.length > 0, `physicalConnectionId: ${JSON.stringify(connected.context)}`);
        assert.ok(typeof session === "string" && session.length > 0, `sessionId: ${JSON.stringify(connected.context)}`);
        assert.equal(physical, connectReq.context.mqtt?.physicalConnectionId, "the same physical connection as in connect");

        await c.client.endAsync(); // sends DISCONNECT (v5: reason code 0)
        const d = await waitFor(() => up.seen.disconnected.find((r) => r.context.connectionId === clientId),
          { timeoutMs: 5_000, what: `onDisconnected for ${clientId}; ${JSON.stringify(up.summary())}` });
        assert.equal(d.context.clientProtocol, "mqtt");
        assert.equal(d.context.userId, userId);
        assert.equal(d.context.mqtt?.sessionId, session, "same sessionId on disconnected");
        assert.equal(d.context.mqtt?.physicalConnectionId, physical, "same physicalConnectionId on disconnected");
        assert.equal(d.mqtt?.initiatedByClient, true, `disconnected body: ${JSON.stringify({ reason: d.reason, mqtt: d.mqtt })}`);
        assert.equal(d.mqtt?.disconnectPacket?.code, 0, `disconnected body: ${JSON.stringify({ reason: d.reason, mqtt: d.mqtt })}`);
        const raw = await waitEvent(up, "disconnected", clientId);
        assert.equal(raw.headers["ce-subprotocol"], "mqtt");
        assert.equal(raw.headers["ce-sessionid"], session);
      }
      // One connect, connected and disconnected per client, nothing else.
      assert.deepEqual(up.posts().map((r) => r.eventName), ["connect", "connected", "disconnected", "connect", "connected", "disconnected"],
        JSON.stringify(up.summary()));
    } finally {
      await closeAll(clients);
      await up.close();
    }
  }));

test("mqtt: a publish to $webpubsub/server/events/echo reaches handleUserEvent; the answer comes back on .../succeeded (and a failure on .../failed)", T,
  withDataplane(async (ctx) => {
    const up = await mqttApp(ctx.hubName, {
      handleUserEvent(req, res) {
        const data = Buffer.isBuffer(req.data) ? req.data.toString("utf8") : String(req.data);
        if (req.context.eventName === "boom") res.fail(400, `no ${data}`);
        else res.success(`pong:${data}`, "text");
      },
    });
    const clients = [];
    try {
      await configureHub(ctx.hub, ctx.hubName, { eventHandlers: [handlerSetting(up.handlerUrl)] });
      for (const protocolVersion of VERSIONS) {
        const userId = `echo-user-${protocolVersion}`;
        const url = await mqttUrl(ctx, { userId });
        const clientId = `ue${protocolVersion}${uid()}`;
        const c = mqttClient(url, { protocolVersion, clientId }, clients);
        await c.waitConnack();
        await waitFor(() => c.client.connected, { timeoutMs: 5_000, what: `${c.label} connected; ${c.describe()}` });
        const before = up.seen.user.length;

        const pubOpts = protocolVersion === 5 ? { qos: 1, properties: { contentType: "text/plain" } } : { qos: 1 };
        const puback = await c.client.publishAsync("$webpubsub/server/events/echo", `ping${protocolVersion}`, pubOpts);
        if (protocolVersion === 5) assert.equal(puback?.reasonCode ?? 0, 0, `PUBACK ${JSON.stringify(puback)}`);
        await c.waitMessages((ms) => ms.some((m) => m.topic.endsWith("/succeeded")), "the echo answer");

        await c.client.publishAsync("$webpubsub/server/events/boom", "bang", { qos: 1 });
        await c.waitMessages((ms) => ms.some((m) => m.topic.endsWith("/failed")), "the failure answer");
        await sleep(200);

        assert.deepEqual(c.messages.map((m) => [m.topic, m.qos]), [
          ["$webpubsub/server/events/echo/succeeded", 1],
          ["$webpubsub/server/events/boom/failed", 1],
        ], `answers to ${c.label}: ${JSON.stringify(c.summary())}`);
        assert.equal(c.messages[0].payload.toString("utf8"), `pong:ping${protocolVersion}`);
        // The failure reason is text naming the handler's status and its body
        // (Hubbub: "the event handler answered 400: no bang").
        const reason = c.messages[1].payload.toString("utf8");
        assert.ok(reason.includes("400") && reason.includes("no bang"), `failed reason ${JSON.stringify(reason)}`);
        if (protocolVersion === 5) {
          const ct = c.messages[0].properties?.contentType;
          assert.ok(typeof ct === "string" && ct.startsWith("text/plain"), `succeeded content type ${JSON.stringify(c.messages[0].properties)}`);
          // As Azure does: the handler's status as a user property.
          assert.equal({ ...c.messages[0].properties?.userProperties }["azure-status-code"], "200",
            `succeeded user properties ${JSON.stringify(c.messages[0].properties)}`);
        }

        const seen = up.seen.user.slice(before);
        assert.deepEqual(seen.map((r) => [r.context.eventName, r.dataType, r.context.clientProtocol, r.context.userId, r.context.connectionId]), [
          ["echo", protocolVersion === 5 ? "text" : "binary", "mqtt", userId, clientId],
          ["boom", "binary", "mqtt", userId, clientId],
        ]);
        for (const r of seen) {
          assert.equal(typeof r.context.mqtt?.sessionId, "string", `sessionId on the user event: ${JSON.stringify(r.context)}`);
        }
        await c.client.endAsync();
      }
    } finally {
      await closeAll(clients);
      await up.close();
    }
  }));
