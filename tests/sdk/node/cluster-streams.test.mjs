// Group streams, group state and reliable protobuf sessions across cluster nodes: two
// `hubbub serve --cluster` nodes on one NATS JetStream server; the publisher and a follower of
// the group's state on node A, receivers on node B; a reliable protobuf client whose session moves
// from node A to node B when it recovers there. Needs `nats-server` (scripts/test installs it).

import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { WebPubSubClient, WebPubSubJsonProtocol, WebPubSubJsonReliableProtocol } from "@azure/web-pubsub-client";
import { waitFor } from "./harness.mjs";
import { twoNodes } from "./cluster.mjs";
import { openRaw, clientUrl, JSON_SUBPROTOCOL } from "./dataplane.mjs";
import { PbClient, loadSchema, PROTOBUF_RELIABLE_SUBPROTOCOL } from "./protobuf-client.mjs";

const T = { timeout: 120_000 };
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

async function sdkOn(cluster, node, hub, userId, protocol) {
  const { url } = await cluster.service(node, hub).getClientAccessToken({ userId, roles: ROLES });
  const client = new WebPubSubClient(url, { protocol, autoReconnect: false });
  const connected = new Promise((res) => client.on("connected", res));
  await client.start();
  return { client, connectionId: (await connected).connectionId };
}

test("a stream published on node A reaches receivers on node B in order, with its end", T, async () => {
  const cluster = await twoNodes();
  const clients = [];
  try {
    const [a, b] = cluster.nodes;
    const hub = "streams";
    const publisher = await sdkOn(cluster, a, hub, "pub", WebPubSubJsonReliableProtocol());
    const json = await sdkOn(cluster, b, hub, "json", WebPubSubJsonProtocol());
    const reliable = await sdkOn(cluster, b, hub, "rel", WebPubSubJsonReliableProtocol());
    clients.push(publisher, json, reliable);
    assert.match(publisher.connectionId, /^a-/);
    assert.match(json.connectionId, /^b-/);
    for (const c of clients) await c.client.joinGroup("live");

    const received = new Map();
    for (const c of [json, reliable]) {
      const record = { chunks: [], seqs: [], done: false, error: undefined };
      received.set(c, record);
      c.client.onGroupStream(async (stream) => {
        try {
          for await (const m of stream) {
            record.chunks.push(Buffer.from(m.data));
            record.seqs.push(m.stream.streamSequenceId);
          }
        } catch (e) {
          record.error = e;
        }
        record.done = true;
      });
    }
    const payload = randomBytes(256 * 1024);
    const stream = await publisher.client.openGroupStream("live", { noEcho: true });
    for (let i = 0; i < 64; i++) {
      await stream.write(payload.buffer.slice(payload.byteOffset + i * 4096, payload.byteOffset + (i + 1) * 4096), "binary");
    }
    await stream.end();
    for (const [c, record] of received) {
      await waitFor(() => record.done, { timeoutMs: 20_000, what: `${c.connectionId}: the stream's end` });
      assert.equal(record.error, undefined);
      assert.deepEqual(record.seqs, Array.from({ length: 64 }, (_, i) => i + 1), "in order, once each");
      assert.ok(Buffer.concat(record.chunks).equals(payload), "byte for byte");
    }

    // The publisher's connection ends on node A: a stream still open ends for node B's receivers.
    const open = await publisher.client.openGroupStream("live", { streamId: "left-open" });
    await open.write("x", "text");
    const ended = new Promise((res) => json.client.onGroupStream(async (s) => {
      if (s.streamId !== "left-open") return;
      try { for await (const _ of s) { /* drain */ } res(undefined); } catch (e) { res(e); }
    }));
    publisher.client.stop();
    const error = await Promise.race([ended, new Promise((r) => setTimeout(() => r("timeout"), 10_000))]);
    assert.equal(error?.name, "Cancelled", "node B's receiver hears the stream cancelled");
  } finally {
    for (const c of clients) { try { c.client.stop(); } catch { /* stopped */ } }
    await cluster.dispose();
  }
});

test("group state set on node B is in a snapshot on node A, and its changes reach node A", T, async () => {
  const cluster = await twoNodes();
  const raws = [];
  try {
    const [a, b] = cluster.nodes;
    const hub = "state";
    const rawOn = async (node, userId) => {
      const { token } = await cluster.service(node, hub).getClientAccessToken({ userId, roles: ROLES });
      const raw = await openRaw(clientUrl(node, hub, token), { protocols: [JSON_SUBPROTOCOL] });
      raws.push(raw);
      raw.connectionId = (await raw.connectedMessage()).connectionId;
      return raw;
    };
    const onB = await rawOn(b, "bea");
    const follower = await rawOn(a, "ann");
    let ackId = 0;
    const request = async (raw, frame) => {
      const id = ++ackId;
      raw.send(JSON.stringify({ ...frame, ackId: id }));
      return raw.waitJson((j) => j.type === "ack" && j.ackId === id, `ack ${id}`);
    };
    assert.equal((await request(onB, { type: "joinGroup", group: "room" })).success, true);
    assert.equal((await request(follower, { type: "joinGroup", group: "room" })).success, true);
    assert.equal((await request(onB, { type: "setGroupState", group: "room", state: { mood: "busy" } })).success, true);

    assert.equal((await request(follower, { type: "subscribeGroupState", group: "room" })).success, true);
    const snapshot = await follower.waitJson((j) => j.type === "groupStateSnapshot", "the snapshot", 10_000);
    assert.equal(snapshot.group, "room");
    assert.deepEqual(snapshot.items.map((i) => [i.connectionId, i.userId, i.state]), [[onB.connectionId, "bea", { mood: "busy" }]],
      "node B's member's state, seen from node A");

    await request(onB, { type: "setGroupState", group: "room", state: { mood: "free" } });
    const update = await follower.waitJson((j) => j.type === "groupStateUpdate" && j.items[0]?.state?.mood === "free", "the update", 10_000);
    assert.equal(update.items[0].connectionId, onB.connectionId);
    onB.close();
    const cleared = await follower.waitJson((j) => j.type === "groupStateUpdate" && j.items[0]?.state === undefined, "cleared on disconnect", 10_000);
    assert.equal(cleared.items[0].connectionId, onB.connectionId);
  } finally {
    for (const r of raws) r.close();
    await cluster.dispose();
  }
});

test("a reliable protobuf session moves from node A to node B when its client recovers there: its binary frames once, in order", T, async () => {
  const cluster = await twoNodes();
  let pb;
  try {
    const [a, b] = cluster.nodes;
    const hub = "pbmove";
    const viaA = cluster.service(a, hub);
    const { url } = await viaA.getClientAccessToken({ userId: "pb", groups: ["g"] });
    const schema = await loadSchema();
    pb = new PbClient(schema, { url, protocol: PROTOBUF_RELIABLE_SUBPROTOCOL, label: "reliable protobuf client" });
    await pb.open();
    const connected = await pb.connectedMessage();
    const id = connected.connectionId;
    assert.match(id, /^a-/, "on node A");
    for (const m of ["m1", "m2", "m3"]) await viaA.group("g").sendToAll(m, { contentType: "text/plain" });
    await pb.waitData((d) => d.length >= 3, "m1..m3 on node A");
    // A ping answered: the server has the client's acks of m1..m3.
    const from = pb.frames.length;
    pb.send({ pingMessage: {} });
    await pb.waitFrame((f) => f.message === "pongMessage", "pong", 5_000, from);

    pb.terminate();
    await viaA.group("g").sendToAll("m4", { contentType: "text/plain" });
    await viaA.sendToConnection(id, Buffer.from([4, 5, 6]), { contentType: "application/octet-stream" });
    await viaA.group("g").sendToAll({ m: 6 });

    // Recover on node B: the session is handed over with its un-acknowledged binary frames.
    const token = new URL(url).searchParams.get("access_token");
    const recovery = `ws://${b.publicAddr}/client/hubs/${hub}?access_token=${token}` +
      `&awps_connection_id=${encodeURIComponent(id)}&awps_reconnection_token=${encodeURIComponent(connected.reconnectionToken)}`;
    const before = pb.frames.length;
    await pb.open(recovery);
    await pb.waitData((d) => d.length >= 6, "m4..m6 after moving to node B", 10_000);
    await cluster.service(b, hub).sendToConnection(id, "m7", { contentType: "text/plain" });
    await pb.waitData((d) => d.length >= 7, "m7 sent through node B");
    await sleep(300); // room for a late duplicate
    const resumed = pb.frames.slice(before);
    assert.equal(resumed[0].message, "systemMessage", "the resumed socket starts with a ConnectedMessage");
    assert.equal(resumed[0].systemMessage.connectedMessage.connectionId, id, "the same connection");
    const summary = pb.data.map((m) => {
      const d = m.data;
      return d.data === "binaryData" ? `bin:${[...d.binaryData].join(",")}` : d[d.data];
    });
    assert.deepEqual(summary, ["m1", "m2", "m3", "m4", "bin:4,5,6", '{"m":6}', "m7"], "every message once, in order");
    assert.deepEqual(pb.data.map((m) => m.sequenceId), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(await cluster.service(b, hub).connectionExists(id), true);
  } finally {
    pb?.terminate();
    await cluster.dispose();
  }
});
