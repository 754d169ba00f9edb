// Closing connections through REST: closeConnection (with reason), closeAllConnections,
// closeUserConnections and group closeAllConnections (with excluded), seen by the
// official client (disconnected event + reason) and by a raw json-protocol socket.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";
import {
  withDataplane, JSON_SUBPROTOCOL, RELIABLE_SUBPROTOCOL, upgrade, clientUrl, sleep,
} from "./dataplane.mjs";

const T = { timeout: 60_000 };

async function waitDisconnected(conn, timeoutMs = 10_000) {
  await waitFor(() => conn.disconnected.length > 0, {
    timeoutMs, what: `${conn.label}: disconnected event`,
  });
  return conn.disconnected[0];
}

async function waitGone(ctx, ids, timeoutMs = 5_000) {
  await waitFor(async () => {
    for (const id of ids) if (await ctx.service.connectionExists(id)) return false;
    return true;
  }, { timeoutMs, what: `connections ${ids} to be gone` });
}

/** The connection is still up: no disconnected event, it exists, and it receives a message. */
async function assertAlive(ctx, conn) {
  assert.equal(conn.disconnected.length, 0, `${conn.label}: no disconnected event`);
  assert.equal(await ctx.service.connectionExists(conn.connectionId), true, `${conn.label}: still exists`);
  const text = `alive-${conn.connectionId}`;
  await ctx.service.sendToConnection(conn.connectionId, text, { contentType: "text/plain" });
  await conn.waitMessages((ms) => ms.some((m) => m.data === text), "a message after the close calls");
}

test("closeConnection with a reason: the client sees `disconnected` with that reason; others stay", T,
  withDataplane(async (ctx) => {
    const victim = await ctx.connect({ protocol: "json", userId: "v", label: "victim(json)" });
    const bystander = await ctx.connect({ protocol: "reliable", userId: "b", label: "bystander" });
    await ctx.service.closeConnection(victim.connectionId, { reason: "bye for now" });
    const ev = await waitDisconnected(victim);
    assert.equal(ev.message?.message, "bye for now", `disconnected event: ${JSON.stringify(ev)}`);
    assert.equal(ev.connectionId, victim.connectionId);
    await waitGone(ctx, [victim.connectionId]);
    await assertAlive(ctx, bystander);
    // Closing an unknown / already closed connection is fine (204).
    await ctx.service.closeConnection(victim.connectionId, { reason: "again" });
    await ctx.service.closeConnection("no-such-connection");
  }));

test("closeConnection on the wire: disconnected system message, then a close frame", T,
  withDataplane(async (ctx, t) => {
    for (const protocol of [JSON_SUBPROTOCOL, RELIABLE_SUBPROTOCOL]) {
      const raw = await ctx.raw({ protocols: [protocol], userId: "wire" });
      await ctx.service.closeConnection(raw.connectionId, { reason: "closed by app" });
      const closed = await raw.waitClosed(5_000);
      const disc = raw.json.find((j) => j.type === "system" && j.event === "disconnected");
      assert.ok(disc, `${protocol}: disconnected system message before the close; frames ${raw.describeFrames()}`);
      assert.equal(disc.message, "closed by app", `${protocol}: disconnected message`);
      assert.notEqual(closed.code, 1006, `${protocol}: the server sent a close frame (got ${JSON.stringify(closed)})`);
      t.diagnostic(`closeConnection on ${protocol}: close code ${closed.code}, reason ${JSON.stringify(closed.reason)}`);
      // 1000 is recommended for REST-initiated closes; 1008 is tolerated.
      assert.ok([1000, 1008].includes(closed.code), `${protocol}: close code ${closed.code} is 1000 or 1008`);
    }
  }));

test("a reliable connection closed by REST cannot be recovered: the recovery upgrade is closed with 1008", T,
  withDataplane(async (ctx) => {
    const { token } = await ctx.service.getClientAccessToken({ userId: "rec" });
    const url = clientUrl(ctx.hub, ctx.hubName, token);
    const first = await upgrade(url, { protocols: [RELIABLE_SUBPROTOCOL] });
    assert.equal(first.status, 101);
    ctx.track(first.raw);
    const connected = await first.raw.connectedMessage();
    assert.equal(typeof connected.reconnectionToken, "string", `reconnectionToken in ${JSON.stringify(connected)}`);
    await ctx.service.closeConnection(connected.connectionId, { reason: "gone" });
    await first.raw.waitClosed();

    const recoveryUrl = `${url}&awps_connection_id=${encodeURIComponent(connected.connectionId)}&awps_reconnection_token=${encodeURIComponent(connected.reconnectionToken)}`;
    const rec = await upgrade(recoveryUrl, { protocols: [RELIABLE_SUBPROTOCOL] });
    assert.equal(rec.status, 101, `recovery of a closed session: upgrade status ${rec.status} ${rec.body ?? ""}`);
    ctx.track(rec.raw);
    const closed = await rec.raw.waitClosed(5_000, "the recovery connection to be closed");
    assert.equal(closed.code, 1008, `recovery of a closed session is closed with 1008: ${JSON.stringify(closed)}`);

    // A live session with a wrong reconnection token: refused the same way, the live connection stays.
    const live = await ctx.connect({ protocol: "reliable", userId: "live" });
    const liveToken = (await ctx.service.getClientAccessToken({ userId: "live" })).token;
    const forged = `${clientUrl(ctx.hub, ctx.hubName, liveToken)}&awps_connection_id=${live.connectionId}&awps_reconnection_token=${encodeURIComponent(`${connected.reconnectionToken}x`)}`;
    const bad = await upgrade(forged, { protocols: [RELIABLE_SUBPROTOCOL] });
    assert.equal(bad.status, 101, `recovery with a wrong token: upgrade status ${bad.status} ${bad.body ?? ""}`);
    ctx.track(bad.raw);
    const badClose = await bad.raw.waitClosed(5_000, "the forged recovery to be closed");
    assert.equal(badClose.code, 1008, `forged recovery closed with 1008: ${JSON.stringify(badClose)}`);
    await ctx.service.sendToConnection(live.connectionId, "still mine", { contentType: "text/plain" });
    await live.waitMessages((ms) => ms.some((m) => m.data === "still mine"), "the live connection keeps its session");
    assert.equal(live.disconnected.length, 0);

    // The official reliable client in the same situation: disconnected event, no resurrection.
    const c = await ctx.connect({ protocol: "reliable", userId: "rec2", label: "reliable client" });
    await ctx.service.closeConnection(c.connectionId, { reason: "bye reliable" });
    await waitDisconnected(c, 10_000);
    await waitGone(ctx, [c.connectionId]);
    assert.equal(c.connected.length, 1, "no new connected event (autoReconnect is off)");
  }));

test("closeAllConnections with excluded closes everybody else", T, withDataplane(async (ctx) => {
  const a = await ctx.connect({ protocol: "json", userId: "a", label: "a(json)" });
  const b = await ctx.connect({ protocol: "reliable", userId: "b", label: "b(reliable)" });
  const keep = await ctx.connect({ protocol: "json", userId: "keep", label: "keep" });
  const other = ctx.serviceFor(ctx.keys.primaryConnectionString, `${ctx.hubName}other`);
  const otherHub = await ctx.connect({ service: other, protocol: "json", label: "other hub" });
  await ctx.service.closeAllConnections({ reason: "everyone out", excluded: [keep.connectionId] });
  const evA = await waitDisconnected(a);
  assert.equal(evA.message?.message, "everyone out");
  await waitDisconnected(b);
  await waitGone(ctx, [a.connectionId, b.connectionId]);
  await assertAlive(ctx, keep);
  await sleep(200);
  assert.equal(otherHub.disconnected.length, 0, "a connection of another hub is not closed");
  assert.equal(await other.connectionExists(otherHub.connectionId), true);
}));

test("closeUserConnections closes the user's connections only (excluded honoured)", T, withDataplane(async (ctx) => {
  const u1a = await ctx.connect({ protocol: "json", userId: "u1", label: "u1a" });
  const u1b = await ctx.connect({ protocol: "reliable", userId: "u1", label: "u1b" });
  const u1keep = await ctx.connect({ protocol: "json", userId: "u1", label: "u1keep" });
  const u2 = await ctx.connect({ protocol: "json", userId: "u2", label: "u2" });
  await ctx.service.closeUserConnections("u1", { reason: "user out", excluded: [u1keep.connectionId] });
  const ev = await waitDisconnected(u1a);
  assert.equal(ev.message?.message, "user out");
  await waitDisconnected(u1b);
  await waitGone(ctx, [u1a.connectionId, u1b.connectionId]);
  await assertAlive(ctx, u1keep);
  await assertAlive(ctx, u2);
  assert.equal(await ctx.service.userExists("u1"), true, "u1 still has a connection");
}));

test("group closeAllConnections closes members except excluded; non-members stay", T, withDataplane(async (ctx) => {
  const m1 = await ctx.connect({ protocol: "json", userId: "m1", groups: ["cg"], label: "m1" });
  const m2 = await ctx.connect({ protocol: "reliable", userId: "m2", groups: ["cg"], label: "m2" });
  const mKeep = await ctx.connect({ protocol: "json", userId: "mk", groups: ["cg"], label: "mKeep" });
  const outsider = await ctx.connect({ protocol: "json", userId: "o", groups: ["og"], label: "outsider" });
  await ctx.service.group("cg").closeAllConnections({ reason: "group closed", excluded: [mKeep.connectionId] });
  const ev = await waitDisconnected(m1);
  assert.equal(ev.message?.message, "group closed");
  await waitDisconnected(m2);
  await waitGone(ctx, [m1.connectionId, m2.connectionId]);
  await assertAlive(ctx, mKeep);
  await assertAlive(ctx, outsider);
  // The excluded member is still in the group.
  await ctx.service.group("cg").sendToAll("still grouped", { contentType: "text/plain" });
  await mKeep.waitMessages((ms) => ms.some((m) => m.data === "still grouped" && m.group === "cg"), "group message");
}));
