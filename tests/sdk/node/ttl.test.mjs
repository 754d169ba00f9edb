// Message time to live: a raw JSON client's sendToGroup with "ttlSeconds" (0-300; others are an
// ack BadRequest) and the REST sends' messageTtlSeconds (0-300; others are a 400). A message
// that cannot be delivered within its TTL is dropped: a reliable receiver (official 1.1.0
// client) whose TCP connection is cut (proxy.mjs) while messages with and without a TTL are
// sent recovers after the short TTL has passed and gets only the messages that are still alive;
// a receiver that stayed connected gets them all.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";
import { withDataplane, JSON_SUBPROTOCOL, expectReject, sleep, rawCall, rawOk, rawMember } from "./dataplane.mjs";
import { startProxy } from "./proxy.mjs";

const T = { timeout: 90_000 };
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

/**
 * A reliable SDK receiver through a proxy, cut and kept away while `during()` runs; it is let
 * back in once `awayMs` have passed since the cut, and recovers the same connection.
 */
async function cutWhile(ctx, proxy, receiver, awayMs, during) {
  proxy.refuse(true);
  proxy.cut();
  const cutAt = Date.now();
  await waitFor(() => proxy.refused >= 1, { timeoutMs: 10_000, what: "a refused reconnect attempt" });
  await during();
  const left = awayMs - (Date.now() - cutAt);
  if (left > 0) await sleep(left);
  proxy.refuse(false);
  return cutAt;
}

test("client ttlSeconds: 0..300 accepted, anything else is an ack BadRequest and not delivered", T,
  withDataplane(async (ctx) => {
    const sender = await rawMember(ctx, "sender", ["g"]);
    const recv = await rawMember(ctx, "recv", ["g"]);
    const problems = [];
    for (const ttl of [0, 1, 300]) {
      const ack = await rawCall(sender, { type: "sendToGroup", group: "g", dataType: "text", data: `ttl:${ttl}`, ttlSeconds: ttl });
      if (ack.success !== true) problems.push(`ttlSeconds ${ttl}: ${JSON.stringify(ack)}`);
    }
    for (const ttl of [301, -1, 1.5, "5", true, 1e12]) {
      const ack = await rawCall(sender, { type: "sendToGroup", group: "g", dataType: "text", data: `bad:${ttl}`, ttlSeconds: ttl });
      if (ack.success !== false || ack.error?.name !== "BadRequest") problems.push(`ttlSeconds ${JSON.stringify(ttl)}: ${JSON.stringify(ack)}`);
    }
    assert.deepEqual(problems, []);
    await ctx.flush([recv]);
    assert.deepEqual(recv.dataMessages, ["ttl:0", "ttl:1", "ttl:300"].map((data) => ({
      type: "message", from: "group", group: "g", fromUserId: "sender", dataType: "text", data,
    })), "the accepted ones arrive at once, with no TTL field on the wire");
  }));

test("client ttlSeconds: a reliable receiver cut for more than the TTL gets only the messages still alive", T,
  withDataplane(async (ctx) => {
    const proxy = await startProxy(ctx.hub.publicPort);
    try {
      const sender = await rawMember(ctx, "sender", ["g"]);
      const stay = await ctx.connect({ protocol: "json", userId: "stay", roles: ROLES, label: "connected receiver" });
      const rel = await ctx.connect({
        protocol: "reliable", userId: "rel", roles: ROLES, label: "cut reliable receiver", transformUrl: (u) => proxy.url(u),
      });
      for (const c of [stay, rel]) await c.client.joinGroup("g");
      await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "before", ttlSeconds: 1 });
      await rel.waitCount(1);

      await cutWhile(ctx, proxy, rel, 2_200, async () => {
        await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "ttl-1", ttlSeconds: 1 });
        await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "no-ttl" });
        await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "ttl-0", ttlSeconds: 0 });
        await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "ttl-60", ttlSeconds: 60 });
      });
      await rel.waitMessages((ms) => ms.length >= 4, "the replay after recovery", 15_000);
      await ctx.flush([rel, stay]);
      assert.deepEqual(rel.data.map((m) => m.data), ["before", "no-ttl", "ttl-0", "ttl-60"], "the expired message is dropped, the rest replayed in order");
      assert.deepEqual(stay.data.map((m) => m.data), ["before", "ttl-1", "no-ttl", "ttl-0", "ttl-60"], "a connected receiver gets them all");
      assert.equal(rel.connected.length, 1, "the reliable receiver recovered the same connection");
      assert.equal(rel.disconnected.length, 0);
    } finally {
      await ctx.cleanup();
      await proxy.close();
    }
  }));

test("client ttlSeconds: a receiver back within the TTL still gets the message", T,
  withDataplane(async (ctx) => {
    const proxy = await startProxy(ctx.hub.publicPort);
    try {
      const sender = await rawMember(ctx, "sender", ["g"]);
      const rel = await ctx.connect({ protocol: "reliable", userId: "rel", roles: ROLES, transformUrl: (u) => proxy.url(u) });
      await rel.client.joinGroup("g");
      const cutAt = await cutWhile(ctx, proxy, rel, 0, async () => {
        await rawOk(sender, { type: "sendToGroup", group: "g", dataType: "text", data: "ttl-10", ttlSeconds: 10 });
      });
      await rel.waitMessages((ms) => ms.length >= 1, "the replay", 8_000);
      assert.ok(Date.now() - cutAt < 10_000, "recovered within the TTL");
      assert.deepEqual(rel.data.map((m) => m.data), ["ttl-10"]);
    } finally {
      await ctx.cleanup();
      await proxy.close();
    }
  }));

test("REST messageTtlSeconds on all four routes: expired messages are dropped for a cut reliable receiver; 301 is a 400", T,
  withDataplane(async (ctx) => {
    const svc = ctx.service;
    const proxy = await startProxy(ctx.hub.publicPort);
    try {
      const stay = await ctx.connect({ protocol: "json", userId: "u", label: "connected receiver" });
      const rel = await ctx.connect({ protocol: "reliable", userId: "u", label: "cut reliable receiver", transformUrl: (u) => proxy.url(u) });
      for (const c of [stay, rel]) await svc.group("g").addConnection(c.connectionId);
      const text = { contentType: "text/plain" };
      const routes = {
        all: (m, o) => svc.sendToAll(m, { ...text, ...o }),
        group: (m, o) => svc.group("g").sendToAll(m, { ...text, ...o }),
        user: (m, o) => svc.sendToUser("u", m, { ...text, ...o }),
        conn: async (m, o) => {
          await svc.sendToConnection(stay.connectionId, m, { ...text, ...o });
          await svc.sendToConnection(rel.connectionId, m, { ...text, ...o });
        },
      };
      await cutWhile(ctx, proxy, rel, 2_200, async () => {
        for (const [route, send] of Object.entries(routes)) {
          await send(`${route}:ttl-1`, { messageTtlSeconds: 1 });
          await send(`${route}:no-ttl`, {});
          await send(`${route}:ttl-60`, { messageTtlSeconds: 60 });
        }
      });
      await rel.waitMessages((ms) => ms.length >= 8, "the replay after recovery", 15_000);
      await ctx.flush([rel, stay]);
      const alive = Object.keys(routes).flatMap((r) => [`${r}:no-ttl`, `${r}:ttl-60`]);
      assert.deepEqual(rel.data.map((m) => m.data), alive, "the cut receiver: only messages still alive, in order");
      assert.deepEqual(stay.data.map((m) => m.data), Object.keys(routes).flatMap((r) => [`${r}:ttl-1`, `${r}:no-ttl`, `${r}:ttl-60`]),
        "a connected receiver gets them all");
      assert.equal(rel.connected.length, 1, "recovered the same connection");

      for (const [route, send] of Object.entries(routes)) {
        const e = await expectReject(send(`${route}:ttl-301`, { messageTtlSeconds: 301 }), `${route} messageTtlSeconds 301`);
        assert.equal(e.statusCode, 400, `${route} messageTtlSeconds 301: ${e.message} ${e.response?.bodyAsText}`);
      }
      await ctx.flush([stay]);
      assert.equal(stay.data.filter((m) => String(m.data).endsWith("ttl-301")).length, 0, "nothing refused was delivered");
    } finally {
      await ctx.cleanup();
      await proxy.close();
    }
  }));
