// Group state over the JSON subprotocol, driven by raw WebSocket clients (the 1.1.0 client
// defines the frames but has no API for them): setGroupState / subscribeGroupState /
// unsubscribeGroupState; the snapshot a follower gets, the updates for set, clear, leave (by the
// client or through REST) and disconnect; members only (Forbidden); 64 pairs and 4 KiB per
// connection and group (BadRequest); unsubscribing or leaving the group ends the updates.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";
import { withDataplane, JSON_SUBPROTOCOL, sleep, rawCall, rawOk } from "./dataplane.mjs";

const T = { timeout: 60_000 };
const ROLES = ["webpubsub.joinLeaveGroup"];

async function refused(raw, frame, name) {
  const ack = await rawCall(raw, frame);
  assert.equal(ack.success, false, `${JSON.stringify(frame).slice(0, 200)} must be refused: ${JSON.stringify(ack)}`);
  assert.equal(ack.error?.name, name, `${JSON.stringify(frame).slice(0, 200)}: ${JSON.stringify(ack)}`);
  return ack;
}

async function member(ctx, userId, groups = []) {
  const r = await ctx.raw({ protocols: [JSON_SUBPROTOCOL], userId, roles: ROLES });
  r.label = userId ?? "anonymous";
  for (const g of groups) await rawOk(r, { type: "joinGroup", group: g });
  return r;
}

const updates = (r, group) => r.json.filter((j) => j.type === "groupStateUpdate" && (group === undefined || j.group === group));
const snapshots = (r, group) => r.json.filter((j) => j.type === "groupStateSnapshot" && j.group === group);

/** Subscribe and return the snapshot (asserting the ack comes first). */
async function subscribe(r, group) {
  const before = snapshots(r, group).length;
  const ack = await rawOk(r, { type: "subscribeGroupState", group });
  await waitFor(() => snapshots(r, group).length > before, {
    timeoutMs: 5_000, what: `${r.label}: snapshot of ${group}; frames ${r.describeFrames()}`,
  });
  const snap = snapshots(r, group)[before];
  const frames = r.json;
  assert.ok(frames.indexOf(ack) < frames.lastIndexOf(snap), `${r.label}: the ack comes before the snapshot: ${r.describeFrames()}`);
  return snap;
}

/** Items without their timestamps, sorted by connection id. */
function strip(items) {
  return [...items].map(({ updatedAt, ...rest }) => rest).sort((a, b) => a.connectionId.localeCompare(b.connectionId));
}

function checkTimes(items, from, to) {
  for (const it of items) {
    assert.equal(typeof it.updatedAt, "number", `updatedAt is a number: ${JSON.stringify(it)}`);
    assert.ok(Number.isInteger(it.updatedAt) && it.updatedAt >= from - 1000 && it.updatedAt <= to + 1000,
      `updatedAt ${it.updatedAt} is unix ms between ${from} and ${to}: ${JSON.stringify(it)}`);
  }
}

/** Wait for the n-th update of `group` (1-based) on `r`. */
async function nthUpdate(r, group, n) {
  await waitFor(() => updates(r, group).length >= n, {
    timeoutMs: 5_000, what: `${r.label}: update #${n} of ${group}; frames ${r.describeFrames()}`,
  });
  return updates(r, group)[n - 1];
}

test("group state: snapshot of every member's state; updates for set, clear, leave and disconnect; only followers get them", T,
  withDataplane(async (ctx) => {
    const t0 = Date.now();
    const a = await member(ctx, "alice", ["room", "other"]);
    const b = await member(ctx, undefined, ["room"]); // no userId: items carry none
    const c = await member(ctx, "carol", ["room"]); // member without state, not following
    const d = await member(ctx, "dave", ["room"]); // the follower

    await rawOk(a, { type: "setGroupState", group: "room", state: { status: "away", mood: "fine" } });
    await rawOk(b, { type: "setGroupState", group: "room", state: { status: "here" } });
    await rawOk(a, { type: "setGroupState", group: "other", state: { elsewhere: "yes" } });
    await rawOk(c, { type: "setGroupState", group: "room", state: { temp: "1" } });
    await rawOk(c, { type: "setGroupState", group: "room" }); // cleared again: not in the snapshot
    const t1 = Date.now();

    const snap = await subscribe(d, "room");
    assert.deepEqual(Object.keys(snap).sort(), ["group", "items", "type"], `snapshot fields: ${JSON.stringify(snap)}`);
    assert.deepEqual(strip(snap.items), strip([
      { connectionId: a.connectionId, userId: "alice", state: { status: "away", mood: "fine" } },
      { connectionId: b.connectionId, state: { status: "here" } },
    ]), `snapshot: ${JSON.stringify(snap)}`);
    checkTimes(snap.items, t0, t1);
    assert.equal(snap.items.find((i) => i.connectionId === b.connectionId).userId, undefined, "no userId for an anonymous member");
    assert.deepEqual(updates(d), [], `no update before subscribing: ${d.describeFrames()}`);

    // Set: one item with the new state (the whole state, replacing the old one).
    const t2 = Date.now();
    await rawOk(a, { type: "setGroupState", group: "room", state: { status: "back" } });
    const u1 = await nthUpdate(d, "room", 1);
    assert.deepEqual(Object.keys(u1).sort(), ["group", "items", "type"], `update fields: ${JSON.stringify(u1)}`);
    assert.deepEqual(strip(u1.items), [{ connectionId: a.connectionId, userId: "alice", state: { status: "back" } }], JSON.stringify(u1));
    checkTimes(u1.items, t2, Date.now());

    // A change in another group does not reach followers of "room".
    await rawOk(a, { type: "setGroupState", group: "other", state: { elsewhere: "still" } });

    // Clear: an item without state.
    await rawOk(a, { type: "setGroupState", group: "room" });
    const u2 = await nthUpdate(d, "room", 2);
    assert.deepEqual(strip(u2.items), [{ connectionId: a.connectionId, userId: "alice" }], JSON.stringify(u2));
    assert.equal("state" in u2.items[0], false, `a cleared state has no state field: ${JSON.stringify(u2)}`);

    // Leave: the member's state is cleared for the followers.
    await rawOk(b, { type: "leaveGroup", group: "room" });
    const u3 = await nthUpdate(d, "room", 3);
    assert.deepEqual(strip(u3.items), [{ connectionId: b.connectionId }], JSON.stringify(u3));

    // Disconnect: cleared too.
    const e = await member(ctx, "erin", ["room"]);
    await rawOk(e, { type: "setGroupState", group: "room", state: { typing: "true" } });
    const u4 = await nthUpdate(d, "room", 4);
    assert.deepEqual(strip(u4.items), [{ connectionId: e.connectionId, userId: "erin", state: { typing: "true" } }], JSON.stringify(u4));
    e.close();
    const u5 = await nthUpdate(d, "room", 5);
    assert.deepEqual(strip(u5.items), [{ connectionId: e.connectionId, userId: "erin" }], JSON.stringify(u5));

    await ctx.flush([a, b, c, d]);
    assert.equal(updates(d, "room").length, 5, `exactly five updates: ${JSON.stringify(updates(d))}`);
    assert.deepEqual(updates(d).filter((u) => u.group !== "room"), [], "nothing of the group 'other'");
    for (const r of [a, b, c]) assert.deepEqual(updates(r), [], `${r.label} does not follow and gets no updates`);

    // The snapshot now: alice and b are gone (cleared / left), only what is set remains.
    await rawOk(c, { type: "setGroupState", group: "room", state: { k: "v" } });
    const again = await subscribe(d, "room");
    assert.deepEqual(strip(again.items), [{ connectionId: c.connectionId, userId: "carol", state: { k: "v" } }], JSON.stringify(again));
  }));

test("group state: removal from the group through REST clears the member's state for the followers", T,
  withDataplane(async (ctx) => {
    const a = await member(ctx, "alice", ["room"]);
    const u = await member(ctx, "ursula", ["room"]);
    const d = await member(ctx, "dave", ["room"]);
    await rawOk(a, { type: "setGroupState", group: "room", state: { s: "1" } });
    await rawOk(u, { type: "setGroupState", group: "room", state: { s: "2" } });
    await subscribe(d, "room");

    await ctx.service.group("room").removeConnection(a.connectionId);
    await ctx.service.group("room").removeUser("ursula");
    await waitFor(() => updates(d, "room").length >= 2, { timeoutMs: 3_000, what: "two updates" }).catch(() => {});
    await ctx.flush([d]);
    const got = updates(d, "room").map((x) => strip(x.items));
    const snap = await subscribe(d, "room");
    assert.deepEqual({ updates: got, snapshot: snap.items }, {
      updates: [[{ connectionId: a.connectionId, userId: "alice" }], [{ connectionId: u.connectionId, userId: "ursula" }]],
      snapshot: [],
    }, "followers hear both REST removals as cleared states, and the snapshot is empty");
  }));

test("group state: non-members are refused (Forbidden); 64 pairs and 4 KiB are the limits (BadRequest)", T,
  withDataplane(async (ctx) => {
    const a = await member(ctx, "alice", ["room"]);
    const d = await member(ctx, "dave", ["room"]);
    const outsider = await member(ctx, "olga", ["elsewhere"]);
    await subscribe(d, "room");

    await refused(outsider, { type: "setGroupState", group: "room", state: { x: "y" } }, "Forbidden");
    await refused(outsider, { type: "setGroupState", group: "room" }, "Forbidden");
    await refused(outsider, { type: "subscribeGroupState", group: "room" }, "Forbidden");
    await refused(a, { type: "setGroupState", group: "never-joined", state: { x: "y" } }, "Forbidden");

    const pairs = (n, valueLen = 1) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${String(i).padStart(2, "0")}`, "v".repeat(valueLen)]));
    // 64 pairs: accepted.
    const p64 = pairs(64);
    await rawOk(a, { type: "setGroupState", group: "room", state: p64 });
    const u1 = await nthUpdate(d, "room", 1);
    assert.deepEqual(u1.items[0].state, p64, "64 pairs arrive whole");
    // 65 pairs: refused, nothing announced, the state stays as it was.
    await refused(a, { type: "setGroupState", group: "room", state: pairs(65) }, "BadRequest");
    // Exactly 4096 bytes of keys and values (4 x (3 + 1021)): accepted.
    const exact = pairs(4, 1021);
    await rawOk(a, { type: "setGroupState", group: "room", state: exact });
    const u2 = await nthUpdate(d, "room", 2);
    assert.deepEqual(u2.items[0].state, exact, "4096 bytes arrive whole");
    // One byte more: refused.
    await refused(a, { type: "setGroupState", group: "room", state: { ...pairs(3, 1021), k03: "v".repeat(1022) } }, "BadRequest");
    // Keys and values are checked as metadata's.
    await refused(a, { type: "setGroupState", group: "room", state: { "bad key": "v" } }, "BadRequest");
    await refused(a, { type: "setGroupState", group: "room", state: { k: "caf\u00e9" } }, "BadRequest");
    await refused(a, { type: "setGroupState", group: "room", state: { k: 1 } }, "BadRequest");

    await ctx.flush([d]);
    assert.equal(updates(d, "room").length, 2, `refused sets announce nothing: ${JSON.stringify(updates(d).map((u) => Object.keys(u.items[0].state ?? {}).length))}`);
    const snap = await subscribe(d, "room");
    assert.deepEqual(snap.items.map((i) => i.state), [exact], "the last accepted state is kept");
    assert.deepEqual(updates(outsider), [], "the outsider got nothing");
  }));

test("group state: unsubscribing, or leaving the group, stops the updates", T,
  withDataplane(async (ctx) => {
    const a = await member(ctx, "alice", ["room"]);
    const d = await member(ctx, "dave", ["room"]); // unsubscribes
    const l = await member(ctx, "lea", ["room"]); // leaves the group
    const f = await member(ctx, "fred", ["room"]); // keeps following (control)
    for (const r of [d, l, f]) await subscribe(r, "room");

    await rawOk(a, { type: "setGroupState", group: "room", state: { n: "1" } });
    for (const r of [d, l, f]) await nthUpdate(r, "room", 1);

    await rawOk(d, { type: "unsubscribeGroupState", group: "room" });
    await rawOk(l, { type: "leaveGroup", group: "room" });
    await rawOk(a, { type: "setGroupState", group: "room", state: { n: "2" } });
    await rawOk(a, { type: "setGroupState", group: "room" });
    const g = await member(ctx, "gus", ["room"]);
    await rawOk(g, { type: "setGroupState", group: "room", state: { n: "3" } });
    g.close();

    await waitFor(() => updates(f, "room").length >= 5, { timeoutMs: 5_000, what: `control follower: 5 updates; ${f.describeFrames()}` });
    assert.deepEqual(updates(f, "room").map((u) => strip(u.items)), [
      [{ connectionId: a.connectionId, userId: "alice", state: { n: "1" } }],
      [{ connectionId: a.connectionId, userId: "alice", state: { n: "2" } }],
      [{ connectionId: a.connectionId, userId: "alice" }],
      [{ connectionId: g.connectionId, userId: "gus", state: { n: "3" } }],
      [{ connectionId: g.connectionId, userId: "gus" }],
    ]);
    await ctx.flush([d, l, f]);
    await sleep(100);
    assert.equal(updates(d, "room").length, 1, `unsubscribed: no update after the first: ${JSON.stringify(updates(d))}`);
    assert.equal(updates(l, "room").length, 1, `left the group: no update after the first: ${JSON.stringify(updates(l))}`);
    assert.equal(updates(f, "room").length, 5, "the control follower got exactly five");
  }));
