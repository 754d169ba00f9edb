// The REST data plane through @azure/web-pubsub (service SDK), observed by real clients:
// every send route with excluded / filter and the three content types, group and user
// membership management, existence checks, permissions, and listConnections paging.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  withDataplane, expectReject, expectAckError, norm, uid, rest, API,
} from "./dataplane.mjs";

const T = { timeout: 60_000 };

/**
 * Four connections:
 *   c1: user u1, group g1, json protocol
 *   c2: user u1, no group, reliable protocol
 *   c3: user u2, groups g1 + g2, reliable protocol
 *   c4: anonymous, group g2, json protocol
 */
async function fourClients(ctx) {
  const c1 = await ctx.connect({ protocol: "json", userId: "u1", groups: ["g1"], label: "c1(u1,g1)" });
  const c2 = await ctx.connect({ protocol: "reliable", userId: "u1", label: "c2(u1)" });
  const c3 = await ctx.connect({ protocol: "reliable", userId: "u2", groups: ["g1", "g2"], label: "c3(u2,g1,g2)" });
  const c4 = await ctx.connect({ protocol: "json", groups: ["g2"], label: "c4(anon,g2)" });
  return { c1, c2, c3, c4, all: [c1, c2, c3, c4] };
}

const B64 = (bytes) => norm("binary", new Uint8Array(bytes));

test("every REST send route reaches exactly the right connections (excluded, filter, content types)", T,
  withDataplane(async (ctx) => {
    const svc = ctx.service;
    const { c1, c2, c3, c4, all } = await fourClients(ctx);

    await svc.sendToAll("all-text", { contentType: "text/plain", excludedConnections: [c2.connectionId] });
    await svc.sendToAll({ n: 2, s: "json" }, { filter: "userId eq 'u1'" });
    await svc.sendToAll(Buffer.from([1, 2, 3]), { filter: "'g1' in groups" });
    await svc.sendToAll("not-u1", { contentType: "text/plain", filter: "userId ne 'u1'", excludedConnections: [c4.connectionId] });
    await svc.group("g1").sendToAll("g1-text", { contentType: "text/plain", excludedConnections: [c1.connectionId] });
    await svc.group("g2").sendToAll({ g2: true }, { filter: "userId eq 'u2'" });
    await svc.group("g2").sendToAll(Buffer.from([9, 8]));
    await svc.sendToUser("u1", ["user", "json"]);
    await svc.sendToUser("u1", "u1-in-g1", { contentType: "text/plain", filter: "'g1' in groups" });
    await svc.sendToConnection(c4.connectionId, Buffer.from([255, 0]));
    await svc.sendToConnection(c2.connectionId, "just c2", { contentType: "text/plain" });
    await svc.sendToAll("quoted", {}); // a JSON string: dataType json, data "quoted"
    await svc.sendToUser("nobody-at-all", "lost", { contentType: "text/plain" });
    await svc.sendToConnection("no-such-connection", "lost", { contentType: "text/plain" });
    await svc.group("empty-group").sendToAll("lost", { contentType: "text/plain" });

    await ctx.flush(all);
    const expected = {
      c1: ["server:text:all-text", 'server:json:{"n":2,"s":"json"}', `server:binary:${B64([1, 2, 3])}`,
        'server:json:["user","json"]', "server:text:u1-in-g1", "server:json:quoted"],
      c2: ['server:json:{"n":2,"s":"json"}', 'server:json:["user","json"]', "server:text:just c2", "server:json:quoted"],
      c3: ["server:text:all-text", `server:binary:${B64([1, 2, 3])}`, "server:text:not-u1", "group:g1:text:g1-text",
        'group:g2:json:{"g2":true}', `group:g2:binary:${B64([9, 8])}`, "server:json:quoted"],
      c4: ["server:text:all-text", `group:g2:binary:${B64([9, 8])}`, `server:binary:${B64([255, 0])}`, "server:json:quoted"],
    };
    for (const [name, conn] of Object.entries({ c1, c2, c3, c4 })) {
      assert.deepEqual(conn.summary(), expected[name], `${name} received`);
    }
    for (const conn of all) {
      for (const m of conn.data) {
        assert.equal(m.fromUserId, undefined, `${conn.label}: REST messages have no fromUserId: ${JSON.stringify(m)}`);
        if (m.from === "server") assert.equal(m.group, undefined, `${conn.label}: server message without group`);
      }
    }
  }));

test("filters: and/or/not, in (...), functions, userId eq null, quotes; a bad filter is a 400", T,
  withDataplane(async (ctx) => {
    const svc = ctx.service;
    const { c1, c2, c3, c4, all } = await fourClients(ctx);
    const send = (filter) => svc.sendToAll(filter, { contentType: "text/plain", filter });
    const filters = {
      "userId in ('u1', 'u2') and 'g1' in groups": ["c1", "c3"],
      "userId eq 'u1' and (not ('g1' in groups))": ["c2"],
      "'g2' in groups or userId eq 'u1'": ["c1", "c2", "c3", "c4"],
      "userId eq null": ["c4"],
      [`connectionId eq '${c3.connectionId}'`]: ["c3"],
      "startswith(userId, 'u') and length(groups) ge 1": ["c1", "c3"],
      "tolower(userId) eq 'U2'": [],
      "toupper(userId) eq 'U2'": ["c3"],
      "userId eq 'vic''s'": [],
    };
    for (const f of Object.keys(filters)) await send(f);
    await ctx.flush(all);
    const byName = { c1, c2, c3, c4 };
    for (const [name, conn] of Object.entries(byName)) {
      const want = Object.entries(filters).filter(([, who]) => who.includes(name)).map(([f]) => `server:text:${f}`);
      assert.deepEqual(conn.summary(), want, `${name} (${conn.label}) received`);
    }
    const bad = await expectReject(svc.sendToAll("x", { contentType: "text/plain", filter: "userId eq" }), "malformed filter");
    assert.equal(bad.statusCode, 400, `malformed filter: ${bad.message}`);
  }));

test("group and user membership: add/remove connection and user, remove from all groups, unknown id -> 404", T,
  withDataplane(async (ctx) => {
    const svc = ctx.service;
    const c1 = await ctx.connect({ protocol: "json", userId: "u1", label: "c1(u1)" });
    const c2 = await ctx.connect({ protocol: "reliable", userId: "u1", label: "c2(u1)" });
    const c3 = await ctx.connect({ protocol: "reliable", userId: "u2", label: "c3(u2)" });
    const all = [c1, c2, c3];
    const stage = async (name, groups) => {
      const tag = `${name}-${uid()}`;
      for (const g of groups) await svc.group(g).sendToAll(`${tag}@${g}`, { contentType: "text/plain" });
      await ctx.flush(all);
      const got = {};
      for (const c of all) got[c.label] = c.data.filter((m) => String(m.data).startsWith(`${tag}@`)).map((m) => m.data.split("@")[1]);
      return got;
    };

    await svc.group("ga").addConnection(c3.connectionId);
    assert.deepEqual(await stage("addConnection", ["ga"]), { "c1(u1)": [], "c2(u1)": [], "c3(u2)": ["ga"] });
    assert.equal(await svc.groupExists("ga"), true);
    await svc.group("ga").removeConnection(c3.connectionId);
    assert.deepEqual(await stage("removeConnection", ["ga"]), { "c1(u1)": [], "c2(u1)": [], "c3(u2)": [] });
    assert.equal(await svc.groupExists("ga"), false);
    // Removing again is idempotent.
    await svc.group("ga").removeConnection(c3.connectionId);

    await svc.group("gb").addUser("u1");
    assert.deepEqual(await stage("addUser", ["gb"]), { "c1(u1)": ["gb"], "c2(u1)": ["gb"], "c3(u2)": [] });
    await svc.group("gb").removeUser("u1");
    assert.deepEqual(await stage("removeUser", ["gb"]), { "c1(u1)": [], "c2(u1)": [], "c3(u2)": [] });

    await svc.group("gc").addUser("u1");
    await svc.group("gd").addUser("u1");
    await svc.group("gd").addConnection(c3.connectionId);
    assert.deepEqual(await stage("users-before", ["gc", "gd"]), { "c1(u1)": ["gc", "gd"], "c2(u1)": ["gc", "gd"], "c3(u2)": ["gd"] });
    await svc.removeUserFromAllGroups("u1");
    assert.deepEqual(await stage("removeUserFromAllGroups", ["gc", "gd"]), { "c1(u1)": [], "c2(u1)": [], "c3(u2)": ["gd"] });

    await svc.group("ge").addConnection(c3.connectionId);
    await svc.group("gf").addConnection(c3.connectionId);
    await svc.group("gf").addConnection(c1.connectionId);
    await svc.removeConnectionFromAllGroups(c3.connectionId);
    assert.deepEqual(await stage("removeConnectionFromAllGroups", ["gd", "ge", "gf"]), { "c1(u1)": ["gf"], "c2(u1)": [], "c3(u2)": [] });

    // Unknown connection id: the SDK turns the 404 into "Connection id '...' doesn't exist".
    const e = await expectReject(svc.group("ga").addConnection("no-such-connection"), "addConnection of an unknown id");
    assert.equal(e.statusCode, 404, `unknown connection: ${e.message}`);
    assert.match(e.message, /doesn't exist/);
  }));

test("addConnectionsToGroups / removeConnectionsFromGroups with a filter", T, withDataplane(async (ctx) => {
  const svc = ctx.service;
  const { c1, c2, c3, c4, all } = await fourClients(ctx);
  await svc.addConnectionsToGroups(["gx", "gy"], "userId eq 'u1'");
  await svc.addConnectionsToGroups(["gz"], "'g2' in groups");
  const probe = async (tag) => {
    for (const g of ["gx", "gy", "gz"]) await svc.group(g).sendToAll(`${tag}@${g}`, { contentType: "text/plain" });
    await ctx.flush(all);
    return Object.fromEntries([c1, c2, c3, c4].map((c) => [c.label, c.data.filter((m) => String(m.data).startsWith(`${tag}@`)).map((m) => m.group)]));
  };
  assert.deepEqual(await probe("added"), {
    "c1(u1,g1)": ["gx", "gy"], "c2(u1)": ["gx", "gy"], "c3(u2,g1,g2)": ["gz"], "c4(anon,g2)": ["gz"],
  });
  await svc.removeConnectionsFromGroups(["gx"], "userId eq 'u1'");
  await svc.removeConnectionsFromGroups(["gz"], `connectionId eq '${c4.connectionId}'`);
  assert.deepEqual(await probe("removed"), {
    "c1(u1,g1)": ["gy"], "c2(u1)": ["gy"], "c3(u2,g1,g2)": ["gz"], "c4(anon,g2)": [],
  });
}));

test("connectionExists / userExists / groupExists: true and false, and false again after disconnect", T,
  withDataplane(async (ctx) => {
    const svc = ctx.service;
    const c = await ctx.connect({ protocol: "json", userId: "exists-user", groups: ["exists-group"] });
    assert.equal(await svc.connectionExists(c.connectionId), true);
    assert.equal(await svc.connectionExists("no-such-connection"), false);
    assert.equal(await svc.userExists("exists-user"), true);
    assert.equal(await svc.userExists("no-such-user"), false);
    assert.equal(await svc.groupExists("exists-group"), true);
    assert.equal(await svc.groupExists("no-such-group"), false);
    // Raw HEAD answers: 200 / 404.
    const head = await rest(ctx.hub, ctx.keys.primaryKey, "HEAD", `/api/hubs/${ctx.hubName}/connections/no-such-connection?${API}`);
    assert.equal(head.status, 404, "HEAD of an unknown connection");
    const head200 = await rest(ctx.hub, ctx.keys.primaryKey, "HEAD", `/api/hubs/${ctx.hubName}/connections/${c.connectionId}?${API}`);
    assert.equal(head200.status, 200, "HEAD of a live connection");
    c.stop();
    const deadline = Date.now() + 5_000;
    let state;
    do {
      state = [await svc.connectionExists(c.connectionId), await svc.userExists("exists-user"), await svc.groupExists("exists-group")];
      if (!state.some(Boolean)) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < deadline);
    assert.deepEqual(state, [false, false, false], "connection/user/group exist no more after the client stopped");
  }));

test("grant/revoke/hasPermission (with and without targetName) change what the client may do", T,
  withDataplane(async (ctx) => {
    const svc = ctx.service;
    const c = await ctx.connect({ protocol: "reliable", userId: "perm", groups: ["pg"] });
    const watcher = await ctx.connect({ protocol: "json", groups: ["pg", "other", "any1", "any2"] });
    const id = c.connectionId;
    const has = (perm, targetName) => svc.hasPermission(id, perm, targetName === undefined ? {} : { targetName });

    assert.equal(await has("sendToGroup"), false);
    assert.equal(await has("sendToGroup", "pg"), false);
    assert.equal(await has("joinLeaveGroup"), false);
    await expectAckError(assert, c.client.sendToGroup("pg", "before grant", "text"), "Forbidden", "sendToGroup before grant");

    await svc.grantPermission(id, "sendToGroup", { targetName: "pg" });
    assert.equal(await has("sendToGroup", "pg"), true, "hasPermission sendToGroup pg after grant");
    assert.equal(await has("sendToGroup", "other"), false, "hasPermission sendToGroup other");
    await c.client.sendToGroup("pg", "after grant", "text");
    await expectAckError(assert, c.client.sendToGroup("other", "not granted", "text"), "Forbidden", "sendToGroup other");

    await svc.grantPermission(id, "joinLeaveGroup");
    assert.equal(await has("joinLeaveGroup"), true, "hasPermission joinLeaveGroup (all groups)");
    assert.equal(await has("joinLeaveGroup", "any1"), true, "joinLeaveGroup for all groups covers any1");
    await c.client.joinGroup("any1");
    await svc.revokePermission(id, "joinLeaveGroup");
    assert.equal(await has("joinLeaveGroup"), false, "revoked joinLeaveGroup");
    await expectAckError(assert, c.client.joinGroup("any2"), "Forbidden", "joinGroup after revoke");

    await svc.revokePermission(id, "sendToGroup", { targetName: "pg" });
    assert.equal(await has("sendToGroup", "pg"), false, "revoked sendToGroup pg");
    await expectAckError(assert, c.client.sendToGroup("pg", "after revoke", "text"), "Forbidden", "sendToGroup after revoke");

    // Permissions from the token role are visible through hasPermission too.
    const roled = await ctx.connect({ protocol: "json", roles: ["webpubsub.sendToGroup.rg", "webpubsub.joinLeaveGroup"] });
    assert.equal(await svc.hasPermission(roled.connectionId, "sendToGroup", { targetName: "rg" }), true, "token role sendToGroup.rg");
    assert.equal(await svc.hasPermission(roled.connectionId, "sendToGroup", { targetName: "pg" }), false, "token role does not cover pg");
    assert.equal(await svc.hasPermission(roled.connectionId, "joinLeaveGroup", { targetName: "whatever" }), true, "token role joinLeaveGroup");
    // Revoking a token role takes it away.
    await svc.revokePermission(roled.connectionId, "joinLeaveGroup");
    await expectAckError(assert, roled.client.joinGroup("whatever"), "Forbidden", "joinGroup after revoking the token role");

    await ctx.flush([watcher]);
    assert.deepEqual(watcher.summary(), ["group:pg:text:after grant"], "only the permitted message was published");
  }));

test("listConnections in a group pages with maxPageSize and lists every connection exactly once", T,
  withDataplane(async (ctx) => {
    const svc = ctx.service;
    const members = [];
    for (let i = 0; i < 7; i++) {
      members.push(await ctx.connect({ protocol: i % 2 ? "json" : "reliable", userId: `lu${i}`, groups: ["lg"] }));
    }
    await ctx.connect({ protocol: "json", userId: "not-member", groups: ["other"] });
    const want = members.map((c) => ({ connectionId: c.connectionId, userId: c.connected[0].userId }))
      .sort((a, b) => a.connectionId.localeCompare(b.connectionId));

    const listed = [];
    for await (const m of await svc.group("lg").listConnections({ maxPageSize: 2 })) listed.push(m);
    const norm2 = (arr) => arr.map((m) => ({ connectionId: m.connectionId, userId: m.userId }))
      .sort((a, b) => a.connectionId.localeCompare(b.connectionId));
    assert.deepEqual(norm2(listed), want, "maxPageSize 2: every member exactly once");

    const pages = [];
    for await (const page of (await svc.group("lg").listConnections({ maxPageSize: 3 })).byPage()) pages.push(page.length);
    assert.ok(pages.length >= 3, `7 members with maxPageSize 3 take at least 3 pages: ${JSON.stringify(pages)}`);
    assert.ok(pages.every((n) => n <= 3), `no page above maxPageSize: ${JSON.stringify(pages)}`);
    assert.equal(pages.reduce((a, b) => a + b, 0), 7);

    const all = [];
    for await (const m of await svc.group("lg").listConnections()) all.push(m);
    assert.deepEqual(norm2(all), want, "no paging options");

    const top = [];
    for await (const m of await svc.group("lg").listConnections({ top: 3, maxPageSize: 2 })) top.push(m);
    assert.equal(top.length, 3, `top 3: ${JSON.stringify(top)}`);
    assert.equal(new Set(top.map((m) => m.connectionId)).size, 3);

    const none = [];
    for await (const m of await svc.group("empty-group").listConnections()) none.push(m);
    assert.deepEqual(none, [], "empty group");
  }));
