// The json.webpubsub.azure.v1 / json.reliable.webpubsub.azure.v1 protocols on the wire,
// spoken by a raw `ws` client: exact frame shapes (connected, ack, message, pong,
// sequenceId), and bad input (non-JSON, unknown type, missing group, invalid base64,
// 1025-char group, a frame over 1 MB). After each bad input another connection is unaffected.

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  withDataplane, JSON_SUBPROTOCOL, RELIABLE_SUBPROTOCOL, uid, sleep,
} from "./dataplane.mjs";

const T = { timeout: 60_000 };
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

for (const protocol of [JSON_SUBPROTOCOL, RELIABLE_SUBPROTOCOL]) {
  const reliable = protocol === RELIABLE_SUBPROTOCOL;
  test(`${protocol}: connected, pong, ack, group and server message frames have the documented shape`, T,
    withDataplane(async (ctx) => {
      const r = await ctx.raw({ protocols: [protocol], userId: "wire", roles: ROLES });
      assert.equal(r.ws.protocol, protocol, "subprotocol echoed");
      const connected = r.json.find((j) => j.type === "system" && j.event === "connected");
      assert.equal(connected.userId, "wire");
      assert.equal(typeof connected.connectionId, "string");
      if (reliable) assert.equal(typeof connected.reconnectionToken, "string", "reliable connected carries reconnectionToken");
      assert.ok(r.frames.every((f) => !f.isBinary), "every frame is a text frame");

      r.send({ type: "ping" });
      assert.deepEqual(await r.waitJson((j) => j.type === "pong", "pong"), { type: "pong" });

      r.send({ type: "joinGroup", group: "wg", ackId: 1 });
      assert.deepEqual(await r.waitAck(1), { type: "ack", ackId: 1, success: true });
      r.send({ type: "sendToGroup", group: "wg", ackId: 2, dataType: "json", data: { a: 1, b: [true, null] }, noEcho: false });
      assert.deepEqual(await r.waitAck(2), { type: "ack", ackId: 2, success: true });
      r.send({ type: "sendToGroup", group: "wg", ackId: 3, dataType: "binary", data: "AQID/w==", noEcho: false });
      await r.waitAck(3);
      r.send({ type: "sendToGroup", group: "wg", dataType: "text", data: "no ack id" });
      // Python-style spacing is accepted too.
      r.send('{"type": "sendToGroup", "group": "wg", "ackId": 4, "dataType": "text", "data": "spaced", "noEcho": false}');
      await r.waitAck(4);
      await ctx.service.sendToConnection(r.connectionId, "from server", { contentType: "text/plain" });
      await r.waitJson((j) => j.type === "message" && j.data === "from server", "server message");

      const msgs = r.json.filter((j) => j.type === "message");
      const strip = ({ sequenceId, ...rest }) => rest;
      assert.deepEqual(msgs.map(strip), [
        { type: "message", from: "group", group: "wg", dataType: "json", data: { a: 1, b: [true, null] }, fromUserId: "wire" },
        { type: "message", from: "group", group: "wg", dataType: "binary", data: "AQID/w==", fromUserId: "wire" },
        { type: "message", from: "group", group: "wg", dataType: "text", data: "no ack id", fromUserId: "wire" },
        { type: "message", from: "group", group: "wg", dataType: "text", data: "spaced", fromUserId: "wire" },
        { type: "message", from: "server", dataType: "text", data: "from server" },
      ]);
      if (reliable) {
        assert.deepEqual(msgs.map((m) => m.sequenceId), [1, 2, 3, 4, 5], "sequenceIds start at 1 and grow by 1");
      } else {
        assert.ok(msgs.every((m) => m.sequenceId === undefined), "no sequenceId on the json protocol");
      }
      const acks = r.json.filter((j) => j.type === "ack");
      assert.deepEqual(acks.map((a) => a.ackId), [1, 2, 3, 4], "only requests with an ackId are acked");
      for (const j of r.json.filter((x) => x.type !== "message")) {
        assert.equal(j.sequenceId, undefined, `no sequenceId on non-message frames: ${JSON.stringify(j)}`);
      }

      // Error acks: Duplicate (same ackId again), InvocationFailed (event, no handler), Forbidden, and 1024-char group OK.
      r.send({ type: "sendToGroup", group: "wg", ackId: 2, dataType: "text", data: "dup" });
      const dup = await r.waitJson((j) => j.type === "ack" && j.ackId === 2 && j.success === false, "Duplicate ack");
      assert.equal(dup.error?.name, "Duplicate", JSON.stringify(dup));
      assert.equal(typeof dup.error.message, "string");
      r.send({ type: "event", event: "myEvent", ackId: 10, dataType: "text", data: "x" });
      const ev = await r.waitAck(10);
      assert.equal(ev.success, false);
      assert.equal(ev.error?.name, "InvocationFailed", JSON.stringify(ev));
      const noRole = await ctx.raw({ protocols: [protocol], userId: "norole" });
      noRole.send({ type: "joinGroup", group: "wg", ackId: 11 });
      const forbidden = await noRole.waitAck(11);
      assert.equal(forbidden.success, false);
      assert.equal(forbidden.error?.name, "Forbidden", JSON.stringify(forbidden));
      assert.equal(typeof forbidden.error.message, "string");
      const long = "l".repeat(1024);
      r.send({ type: "joinGroup", group: long, ackId: 12 });
      assert.deepEqual(await r.waitAck(12), { type: "ack", ackId: 12, success: true }, "a 1024-character group name is valid");
      await ctx.service.group(long).sendToAll("long group", { contentType: "text/plain" });
      const lg = await r.waitJson((j) => j.type === "message" && j.data === "long group", "message to the 1024-char group");
      assert.equal(lg.group, long);
      await sleep(50);
      assert.ok(!r.json.some((j) => j.type === "message" && j.data === "dup"), "a duplicate is not published");
    }));
}

/** Outcome of a bad frame: an error ack for `ackId`, or the server closing the connection. */
async function outcome(victim, ackId, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ack = ackId === undefined ? undefined : victim.json.find((j) => j.type === "ack" && j.ackId === ackId);
    if (ack) return { kind: "ack", ack };
    if (victim.closed) {
      const disc = victim.json.find((j) => j.type === "system" && j.event === "disconnected");
      return { kind: "close", close: victim.closed, disconnected: disc };
    }
    await sleep(20);
  }
  return { kind: "nothing", frames: victim.describeFrames() };
}

const BAD = [
  { name: "a non-JSON text frame", frame: "this is not json {", mustClose: true, needDisconnected: true },
  { name: "an unknown type with an ackId", frame: { type: "noSuchType", ackId: 7 }, ackId: 7 },
  { name: "joinGroup without group", frame: { type: "joinGroup", ackId: 8 }, ackId: 8 },
  {
    name: "sendToGroup binary with invalid base64",
    frame: { type: "sendToGroup", group: "bg", dataType: "binary", data: "!!not base64!!", ackId: 9 },
    ackId: 9,
  },
  { name: "joinGroup with a 1025-character group", frame: { type: "joinGroup", group: "x".repeat(1025), ackId: 10 }, ackId: 10 },
  {
    name: "a frame over 1 MB",
    frame: () => JSON.stringify({ type: "sendToGroup", group: "bg", dataType: "text", data: randomBytes(900_000).toString("base64"), ackId: 11 }),
    ackId: undefined,
    mustClose: true,
    before: async (victim, bystander) => {
      // Control: a message just under 1 MB is fine.
      const data = randomBytes(700_000).toString("base64"); // 933,336 characters
      victim.send({ type: "sendToGroup", group: "bg", dataType: "text", data, ackId: 20 });
      const ack = await victim.waitAck(20, 10_000);
      assert.equal(ack.success, true, `a 0.93 MB message is accepted: ${JSON.stringify(ack)}`);
      await bystander.waitMessages((ms) => ms.some((m) => m.data === data), "the 0.93 MB group message", 10_000);
    },
  },
];

for (const bad of BAD) {
  for (const protocol of [JSON_SUBPROTOCOL, RELIABLE_SUBPROTOCOL]) {
    test(`bad input over ${protocol}: ${bad.name}; other connections are unaffected`, T,
      withDataplane(async (ctx, t) => {
        const bystander = await ctx.connect({ protocol: "reliable", userId: "bystander", groups: ["bg"], label: "bystander" });
        const rawBystander = await ctx.raw({ protocols: [JSON_SUBPROTOCOL], userId: "raw-bystander", groups: ["bg"] });
        const victim = await ctx.raw({ protocols: [protocol], userId: "victim", groups: ["bg"], roles: ROLES });
        if (bad.before) await bad.before(victim, bystander);
        const seenBefore = bystander.data.length;

        const frame = typeof bad.frame === "function" ? bad.frame() : bad.frame;
        victim.send(frame);
        const out = await outcome(victim, bad.ackId);
        t.diagnostic(`${bad.name} over ${protocol}: ${JSON.stringify(out.kind === "ack" ? out.ack : out)}`);

        assert.notEqual(out.kind, "nothing", `${bad.name}: neither an error ack nor a close within 5 s; frames ${out.frames}`);
        if (bad.mustClose) assert.equal(out.kind, "close", `${bad.name}: the connection must be closed, got ${JSON.stringify(out)}`);
        if (out.kind === "ack") {
          assert.equal(out.ack.success, false, `${bad.name}: ack must report failure: ${JSON.stringify(out.ack)}`);
          assert.equal(typeof out.ack.error?.name, "string", `${bad.name}: error.name: ${JSON.stringify(out.ack)}`);
          assert.ok(out.ack.error.name.length > 0);
          // An error ack leaves the connection usable.
          victim.send({ type: "ping" });
          await victim.waitJson((j) => j.type === "pong", `${bad.name}: pong after the error ack`);
        } else {
          assert.notEqual(out.close.code, 1006, `${bad.name}: closed with a close frame, got ${JSON.stringify(out.close)}`);
          if (bad.needDisconnected) {
            assert.ok(out.disconnected, `${bad.name}: a disconnected system message precedes the close; frames ${victim.describeFrames()}`);
          }
        }

        // Other connections are unaffected and got nothing from the bad frame.
        const probe = `after ${bad.name} ${uid()}`;
        await ctx.service.group("bg").sendToAll(probe, { contentType: "text/plain" });
        await bystander.waitMessages((ms) => ms.some((m) => m.data === probe), "probe after bad input");
        await rawBystander.waitJson((j) => j.type === "message" && j.data === probe, "probe at the raw bystander");
        const leaked = bystander.data.slice(seenBefore).filter((m) => m.data !== probe);
        assert.deepEqual(leaked.map((m) => `${m.dataType}:${String(m.data).slice(0, 40)}`), [], `${bad.name}: nothing from the bad frame reached the group`);
        assert.equal(bystander.disconnected.length, 0);
        assert.equal(rawBystander.closed, null);
        assert.equal(await ctx.service.connectionExists(bystander.connectionId), true);
      }));
  }
}
