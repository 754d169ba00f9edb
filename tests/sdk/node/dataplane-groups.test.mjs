// What clients do themselves through @azure/web-pubsub-client: joinGroup / leaveGroup
// and sendToGroup with the documented roles (exact, wildcard, none -> Forbidden),
// echo / noEcho, text / json / binary payloads, and Duplicate acks for repeated ackIds.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  withDataplane, PROTOCOLS, expectAckError, arrayBuffer, norm, uid,
} from "./dataplane.mjs";

const T = { timeout: 60_000 };

/** Send a REST text message to `group` and report whether `conn` got it (flush-based). */
async function receivesGroup(ctx, conn, group) {
  const text = `probe-${group}-${uid()}`;
  await ctx.service.group(group).sendToAll(text, { contentType: "text/plain" });
  await ctx.flush([conn]);
  return conn.data.some((m) => m.data === text && m.group === group);
}

for (const protocol of PROTOCOLS) {
  test(`${protocol}: joinGroup/leaveGroup with webpubsub.joinLeaveGroup; without the role -> Forbidden`, T,
    withDataplane(async (ctx) => {
      const c = await ctx.connect({ protocol, userId: "joiner", roles: ["webpubsub.joinLeaveGroup"] });
      assert.equal(await receivesGroup(ctx, c, "room"), false, "not in room before joinGroup");
      const joined = await c.client.joinGroup("room");
      assert.equal(joined.isDuplicated, false);
      assert.equal(await receivesGroup(ctx, c, "room"), true, "in room after joinGroup");
      assert.equal(await ctx.service.groupExists("room"), true);
      await c.client.leaveGroup("room");
      assert.equal(await receivesGroup(ctx, c, "room"), false, "not in room after leaveGroup");
      assert.equal(await ctx.service.groupExists("room"), false, "group without members does not exist");

      const none = await ctx.connect({ protocol, userId: "nobody" });
      await expectAckError(assert, none.client.joinGroup("room"), "Forbidden", "joinGroup without role");
      assert.equal(await receivesGroup(ctx, none, "room"), false, "a refused join does not join");
      await expectAckError(assert, none.client.leaveGroup("room"), "Forbidden", "leaveGroup without role");
    }));
}

test("exact-group role webpubsub.joinLeaveGroup.<g> allows only that group", T, withDataplane(async (ctx) => {
  const c = await ctx.connect({ protocol: "json", roles: ["webpubsub.joinLeaveGroup.g1"] });
  await c.client.joinGroup("g1");
  assert.equal(await receivesGroup(ctx, c, "g1"), true);
  await expectAckError(assert, c.client.joinGroup("g2"), "Forbidden", "joinGroup g2 with role for g1");
  await expectAckError(assert, c.client.joinGroup("g1x"), "Forbidden", "joinGroup g1x with role for g1");
  assert.equal(await receivesGroup(ctx, c, "g2"), false);
  await c.client.leaveGroup("g1");
  assert.equal(await receivesGroup(ctx, c, "g1"), false);
}));

test("wildcard role webpubsub.joinLeaveGroups.<pattern>: '*' stays within one level, '**' spans levels", T,
  withDataplane(async (ctx) => {
    const c = await ctx.connect({
      protocol: "reliable", roles: ["webpubsub.joinLeaveGroups.chat.*", "webpubsub.joinLeaveGroups.news.**"],
    });
    for (const g of ["chat.a", "chat.lobby", "news.a", "news.a.b"]) {
      await c.client.joinGroup(g);
      assert.equal(await receivesGroup(ctx, c, g), true, `joined ${g}`);
    }
    for (const g of ["chat.a.b", "chatx", "chat", "other", "xchat.a"]) {
      await expectAckError(assert, c.client.joinGroup(g), "Forbidden", `joinGroup ${g} with chat.* / news.**`);
      assert.equal(await receivesGroup(ctx, c, g), false, `not joined to ${g}`);
    }
    await c.client.leaveGroup("chat.a");
    assert.equal(await receivesGroup(ctx, c, "chat.a"), false, "left chat.a");
  }));

for (const protocol of PROTOCOLS) {
  test(`${protocol}: sendToGroup text/json/binary with echo, noEcho and fire-and-forget`, T,
    withDataplane(async (ctx) => {
      const sender = await ctx.connect({
        protocol, userId: "alice", roles: ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"], label: "sender",
      });
      const receiver = await ctx.connect({ protocol, userId: "bob", groups: ["room"], label: "receiver" });
      const outsider = await ctx.connect({ protocol, userId: "carol", groups: ["elsewhere"], label: "outsider" });
      await sender.client.joinGroup("room");

      const bytes = [0, 1, 2, 250, 255];
      const r1 = await sender.client.sendToGroup("room", "hello text", "text");
      assert.equal(r1.isDuplicated, false);
      await sender.client.sendToGroup("room", { a: 1, b: [true, null], s: "x" }, "json");
      await sender.client.sendToGroup("room", arrayBuffer(bytes), "binary");
      await sender.client.sendToGroup("room", "no echo", "text", { noEcho: true });
      await sender.client.sendToGroup("room", "fire and forget", "text", { fireAndForget: true });
      await sender.client.sendToGroup("room", 42, "json");

      const expected = [
        "group:room:text:hello text",
        'group:room:json:{"a":1,"b":[true,null],"s":"x"}',
        `group:room:binary:${norm("binary", arrayBuffer(bytes))}`,
        "group:room:text:no echo",
        "group:room:text:fire and forget",
        "group:room:json:42",
      ];
      await receiver.waitMessages((ms) => ms.length >= expected.length, `${expected.length} group messages`);
      await ctx.flush([sender, receiver, outsider]);
      assert.deepEqual(receiver.summary(), expected, "receiver gets every message in order");
      assert.deepEqual(sender.summary(), expected.filter((e) => !e.endsWith(":no echo")), "sender gets its own messages except noEcho");
      assert.deepEqual(outsider.summary(), [], "a connection outside the group gets nothing");
      for (const m of receiver.data) {
        assert.equal(m.fromUserId, "alice", `fromUserId: ${JSON.stringify(m)}`);
        assert.equal(m.group, "room");
        assert.equal(m.from, "group");
      }
      const bin = receiver.data.find((m) => m.dataType === "binary");
      assert.ok(bin.data instanceof ArrayBuffer, "binary data arrives as ArrayBuffer");
      assert.deepEqual([...new Uint8Array(bin.data)], bytes);
    }));
}

test("a sender does not need to be a member; sendToGroup without role -> Forbidden; exact and wildcard send roles", T,
  withDataplane(async (ctx) => {
    const receiver = await ctx.connect({ protocol: "json", groups: ["room", "chat.a", "chat.a.b", "other"], label: "receiver" });
    const member = await ctx.connect({ protocol: "reliable", userId: "member", groups: ["room"], label: "member without role" });
    const exact = await ctx.connect({ protocol: "json", userId: "exact", roles: ["webpubsub.sendToGroup.room"], label: "exact role" });
    const wild = await ctx.connect({ protocol: "reliable", userId: "wild", roles: ["webpubsub.sendToGroups.chat.*"], label: "wildcard role" });

    await expectAckError(assert, member.client.sendToGroup("room", "denied member", "text"), "Forbidden", "member without sendToGroup role");
    await exact.client.sendToGroup("room", "from exact", "text");
    await expectAckError(assert, exact.client.sendToGroup("other", "denied exact", "text"), "Forbidden", "exact role, other group");
    await wild.client.sendToGroup("chat.a", "from wild", "text");
    await expectAckError(assert, wild.client.sendToGroup("chat.a.b", "denied deep", "text"), "Forbidden", "chat.* does not cover chat.a.b");
    await expectAckError(assert, wild.client.sendToGroup("room", "denied wild", "text"), "Forbidden", "chat.* does not cover room");

    await ctx.flush([receiver, member]);
    assert.deepEqual(receiver.summary(), ["group:room:text:from exact", "group:chat.a:text:from wild"]);
    assert.deepEqual(member.summary(), ["group:room:text:from exact"]);
    assert.equal(receiver.data[0].fromUserId, "exact");
    assert.equal(receiver.data[1].fromUserId, "wild");
  }));

for (const protocol of PROTOCOLS) {
  test(`${protocol}: re-sending with the same explicit ackId is acked as Duplicate and delivered once`, T,
    withDataplane(async (ctx) => {
      const sender = await ctx.connect({ protocol, userId: "dup", roles: ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"] });
      const receiver = await ctx.connect({ protocol, groups: ["dg"] });
      const first = await sender.client.sendToGroup("dg", "once", "text", { ackId: 1000 });
      assert.deepEqual(first, { ackId: 1000, isDuplicated: false });
      const second = await sender.client.sendToGroup("dg", "once", "text", { ackId: 1000 });
      assert.deepEqual(second, { ackId: 1000, isDuplicated: true }, "second send with ackId 1000");
      // A different payload with the same ackId is still a duplicate (the id is what counts).
      const third = await sender.client.sendToGroup("dg", "other payload", "text", { ackId: 1000 });
      assert.equal(third.isDuplicated, true, "third send with ackId 1000");
      // joinGroup with an already used ackId: duplicate too, and a new id works.
      const j1 = await sender.client.joinGroup("dg2", { ackId: 2000 });
      assert.equal(j1.isDuplicated, false);
      const j2 = await sender.client.joinGroup("dg2", { ackId: 2000 });
      assert.equal(j2.isDuplicated, true, "joinGroup with a used ackId");
      const fresh = await sender.client.sendToGroup("dg", "fresh", "text", { ackId: 1001 });
      assert.equal(fresh.isDuplicated, false);
      await ctx.flush([receiver]);
      assert.deepEqual(receiver.summary(), ["group:dg:text:once", "group:dg:text:fresh"]);
    }));
}

test("sendEvent on a hub without event handlers is acked with InvocationFailed", T, withDataplane(async (ctx) => {
  for (const protocol of PROTOCOLS) {
    const c = await ctx.connect({ protocol, userId: "ev" });
    await expectAckError(assert, c.client.sendEvent("myEvent", "text body", "text"), "InvocationFailed", `${protocol}: sendEvent`);
    await expectAckError(assert, c.client.sendEvent("myEvent", { a: 1 }, "json"), "InvocationFailed", `${protocol}: sendEvent json`);
    // The connection stays usable.
    await ctx.service.sendToConnection(c.connectionId, "after event", { contentType: "text/plain" });
    await c.waitMessages((ms) => ms.some((m) => m.data === "after event"), "message after a failed event");
    assert.equal(c.disconnected.length, 0, `${protocol}: no disconnect`);
  }
}));
