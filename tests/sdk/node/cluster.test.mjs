// Cluster mode with the official SDKs: a NATS JetStream server (nats-server -js on a free
// loopback port, its store in a temporary directory) and three `hubbub serve --cluster` nodes.
// An app server's WebPubSubServiceClient talks to node A; WebPubSubClient connections sit on
// nodes B and C. Needs `nats-server` (scripts/test installs it).
//
// Behind a TCP load balancer: a killed node's reliable clients connect anew, and a reliable
// client whose recovery lands on another node keeps its session (handed over between nodes).

import { test } from "node:test";
import assert from "node:assert/strict";
import net, { createServer } from "node:net";
import {
  WebPubSubClient, WebPubSubJsonProtocol, WebPubSubJsonReliableProtocol,
} from "@azure/web-pubsub-client";
import { startHubbub, sdkClient, waitFor } from "./harness.mjs";
import { connectionString, startNats } from "./cluster.mjs";

const T = { timeout: 120_000 };

async function connect(url) {
  const client = new WebPubSubClient(url, { protocol: WebPubSubJsonProtocol(), autoReconnect: false });
  const received = [];
  client.on("server-message", (e) => received.push(e.message.data));
  client.on("group-message", (e) => received.push(e.message.data));
  const connected = new Promise((res) => client.on("connected", res));
  await client.start();
  const { connectionId } = await connected;
  return { client, received, connectionId };
}

test("a broadcast, a group send and a user send through node A reach SDK clients on nodes B and C", T, async () => {
  const nats = await startNats();
  const nodes = [];
  const clients = [];
  try {
    for (const id of ["a", "b", "c"]) {
      nodes.push(await startHubbub({ extraArgs: nats.args(id) }));
    }
    const [a, b, c] = nodes;
    const keys = await a.keyShow();
    for (const node of [b, c]) {
      assert.equal((await node.keyShow()).primaryKey, keys.primaryKey, "one key set in the cluster");
    }
    const hub = "clusterchat";
    const viaA = sdkClient(connectionString(a, keys.primaryKey), hub);
    const tokenOn = async (node, opts) =>
      (await sdkClient(connectionString(node, keys.primaryKey), hub).getClientAccessToken(opts)).url;

    const onB = await connect(await tokenOn(b, { userId: "alice", groups: ["room"] }));
    const onC = await connect(await tokenOn(c, { userId: "bob", groups: ["room"], roles: ["webpubsub.sendToGroup"] }));
    const other = await connect(await tokenOn(c, { userId: "carol" }));
    clients.push(onB, onC, other);
    assert.match(onB.connectionId, /^b-/, "the connection id names its node");
    assert.match(onC.connectionId, /^c-/);

    await viaA.sendToAll("hello everyone", { contentType: "text/plain" });
    await viaA.group("room").sendToAll("hello room", { contentType: "text/plain" });
    await viaA.sendToUser("carol", "hello carol", { contentType: "text/plain" });
    await viaA.sendToConnection(onB.connectionId, "hello alice's connection", { contentType: "text/plain" });
    await viaA.sendToAll("last", { contentType: "text/plain" });

    // Each target (all, a group, a user, a connection) is its own NATS subject: order holds
    // within a target; between targets it may differ on another node, as documented.
    const expected = new Map([
      [onB, ["hello everyone", "hello room", "hello alice's connection", "last"]],
      [onC, ["hello everyone", "hello room", "last"]],
      [other, ["hello everyone", "hello carol", "last"]],
    ]);
    const complete = () => [...expected].every(([x, want]) => want.every((m) => x.received.includes(m)));
    await waitFor(complete, { timeoutMs: 10_000, what: "every client got its messages" });
    await new Promise((r) => setTimeout(r, 300));
    for (const [x, want] of expected) {
      assert.deepEqual([...x.received].sort(), [...want].sort(), "each message once, nothing else");
      assert.ok(x.received.indexOf("hello everyone") < x.received.indexOf("last"), "order within a target");
    }

    // A client's own group message on C reaches the member on B.
    await onC.client.sendToGroup("room", "from bob", "text");
    await waitFor(() => onB.received.includes("from bob"), { timeoutMs: 10_000, what: "bob's group message on B" });
  } finally {
    for (const x of clients) {
      try { x.client.stop(); } catch { /* stopped */ }
    }
    for (const node of nodes) await node.dispose();
    await nats.dispose();
  }
});

test("a regeneration on node B is enforced by node A and node C for the SDK's REST calls", T, async () => {
  const nats = await startNats();
  const nodes = [];
  try {
    for (const id of ["a", "b", "c"]) {
      nodes.push(await startHubbub({ extraArgs: nats.args(id) }));
    }
    const [a, b, c] = nodes;
    const old = (await a.keyShow()).primaryKey;
    const hub = "rotation";
    await sdkClient(connectionString(a, old), hub).sendToAll("ok", { contentType: "text/plain" });
    const regenerated = await b.keyRegenerate("primary");
    assert.notEqual(regenerated.primaryKey, old);
    for (const node of [a, c]) {
      const stale = sdkClient(connectionString(node, old), hub);
      await waitFor(async () => {
        try {
          await stale.sendToAll("stale", { contentType: "text/plain" });
          return false;
        } catch (e) {
          return e.statusCode === 401;
        }
      }, { timeoutMs: 1_000, intervalMs: 10, what: "the old key refused within 1 s" });
      await sdkClient(connectionString(node, regenerated.primaryKey), hub)
        .sendToAll("fresh", { contentType: "text/plain" });
    }
  } finally {
    for (const node of nodes) await node.dispose();
    await nats.dispose();
  }
});

/**
 * A TCP load balancer on 127.0.0.1: each new connection goes to the next backend port in turn,
 * skipping backends that refuse (a killed node), like a load balancer with health checks.
 */
async function startBalancer() {
  const backends = [];
  const live = new Set();
  let next = 0;
  const server = createServer((client) => {
    client.on("error", () => {});
    live.add(client);
    client.on("close", () => live.delete(client));
    const attempt = (tries) => {
      if (tries >= backends.length) { client.destroy(); return; }
      const port = backends[next++ % backends.length];
      const upstream = net.connect(port, "127.0.0.1");
      let connected = false;
      upstream.once("connect", () => {
        connected = true;
        client.pipe(upstream);
        upstream.pipe(client);
        client.on("close", () => upstream.destroy());
        upstream.on("close", () => client.destroy());
      });
      upstream.on("error", () => {
        if (!connected) attempt(tries + 1);
        else client.destroy();
      });
    };
    attempt(0);
  });
  await new Promise((res) => server.listen(0, "127.0.0.1", res));
  return {
    port: server.address().port,
    backends,
    /** Cuts every connection through the balancer (no WebSocket close frame). */
    cut() {
      for (const c of live) c.destroy();
    },
    async close() {
      for (const c of live) c.destroy();
      await new Promise((res) => server.close(() => res()));
    },
  };
}

test("behind a load balancer, a killed node's reliable clients reconnect to another node; the others are not affected", T, async () => {
  const nats = await startNats();
  const lb = await startBalancer();
  const nodes = [];
  const clients = [];
  try {
    const endpoint = `http://localhost:${lb.port}`;
    for (const id of ["a", "b", "c"]) {
      const node = await startHubbub({
        extraArgs: [...nats.args(id), "--public-endpoint", endpoint],
      });
      nodes.push(node);
      lb.backends.push(node.publicPort);
    }
    const [, b] = nodes;
    const keys = await nodes[0].keyShow();
    assert.equal(keys.primaryConnectionString.split(";")[0], `Endpoint=${endpoint}`);
    const service = sdkClient(keys.primaryConnectionString, "lb");

    // Reliable clients until every node has one.
    const byNode = new Map();
    for (let i = 0; i < 9 && byNode.size < 3; i++) {
      const { url } = await service.getClientAccessToken({ userId: `user${i}` });
      const client = new WebPubSubClient(url, { protocol: WebPubSubJsonReliableProtocol() });
      const record = { client, received: [], connected: [], disconnected: 0 };
      client.on("connected", (e) => record.connected.push(e.connectionId));
      client.on("disconnected", () => { record.disconnected += 1; });
      client.on("server-message", (e) => record.received.push(e.message.data));
      await client.start();
      await waitFor(() => record.connected.length === 1, { what: "connected" });
      clients.push(record);
      const node = record.connected[0].split("-")[0];
      if (!byNode.has(node)) byNode.set(node, record);
    }
    assert.equal(byNode.size, 3, "the balancer spread the clients over the three nodes");

    await b.stop("SIGKILL");
    const moved = byNode.get("b");
    // Its recovery lands on another node, which closes it with 1008 (no session there); the
    // client then connects anew through the balancer, to a live node.
    await waitFor(() => moved.connected.length >= 2, { timeoutMs: 30_000, what: "b's client reconnected" });
    assert.match(moved.connected.at(-1), /^[ac]-/, "reconnected to a live node");

    await waitFor(async () => {
      await service.sendToAll("after", { contentType: "text/plain" });
      return clients.every((c) => c.received.includes("after"));
    }, { timeoutMs: 10_000, intervalMs: 300, what: "every client, moved or not, receives" });
    for (const [node, record] of byNode) {
      if (node !== "b") {
        assert.equal(record.disconnected, 0, `node ${node}'s client was not disturbed`);
        assert.equal(record.connected.length, 1);
      }
    }
  } finally {
    for (const c of clients) {
      try { c.client.stop(); } catch { /* stopped */ }
    }
    for (const node of nodes) await node.dispose();
    await lb.close();
    await nats.dispose();
  }
});

test("behind a load balancer, a reliable client whose recovery lands on another node keeps its session", T, async () => {
  const nats = await startNats();
  const lb = await startBalancer();
  const nodes = new Map();
  let client;
  try {
    const endpoint = `http://localhost:${lb.port}`;
    for (const id of ["a", "b", "c"]) {
      const node = await startHubbub({
        extraArgs: [...nats.args(id), "--public-endpoint", endpoint],
      });
      nodes.set(id, node);
      lb.backends.push(node.publicPort);
    }
    const keys = await nodes.get("a").keyShow();
    const service = sdkClient(keys.primaryConnectionString, "lb");
    const { url } = await service.getClientAccessToken({
      userId: "mover",
      roles: ["webpubsub.joinLeaveGroup.moving", "webpubsub.sendToGroup.moving"],
    });
    client = new WebPubSubClient(url, { protocol: WebPubSubJsonReliableProtocol() });
    const record = { received: [], connected: [], disconnected: 0 };
    client.on("connected", (e) => record.connected.push(e.connectionId));
    client.on("disconnected", () => { record.disconnected += 1; });
    client.on("group-message", (e) => record.received.push(e.message.data));
    client.on("server-message", (e) => record.received.push(e.message.data));
    await client.start();
    await waitFor(() => record.connected.length === 1, { what: "connected" });
    const id = record.connected[0];
    await client.joinGroup("moving");
    const group = service.group("moving");
    for (const m of ["m1", "m2"]) await group.sendToAll(m, { contentType: "text/plain" });
    await waitFor(() => record.received.length === 2, { what: "m1 and m2" });

    // The client's node leaves the balancer (it keeps running, and holds the session), and the
    // client's TCP connection is cut: its recovery can only land on another node.
    const home = nodes.get(id.split("-")[0]);
    lb.backends.splice(lb.backends.indexOf(home.publicPort), 1);
    lb.cut();
    // Let the SDK's HTTP agent see its kept-alive REST sockets closed too.
    await new Promise((res) => setTimeout(res, 200));
    for (const m of ["m3", "m4", "m5"]) await group.sendToAll(m, { contentType: "text/plain" });
    await service.sendToConnection(id, "m6", { contentType: "text/plain" });
    await waitFor(() => record.received.length >= 6, {
      timeoutMs: 20_000, what: "the messages sent while cut, after recovery on another node",
    });
    await group.sendToAll("m7", { contentType: "text/plain" });
    await service.sendToConnection(id, "m8", { contentType: "text/plain" });
    await waitFor(() => record.received.length >= 8, { timeoutMs: 5_000, what: "messages after the move" });
    await new Promise((res) => setTimeout(res, 300)); // room for a late duplicate
    // Sends through different nodes may interleave differently (operations.md); each arrives once.
    assert.deepEqual(record.received.slice(0, 2), ["m1", "m2"]);
    assert.deepEqual([...record.received].sort(), ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"],
      "every message exactly once");
    assert.deepEqual(record.received.slice(6).sort(), ["m7", "m8"], "the later ones last");
    assert.equal(record.connected.length, 1, "no second connected event: the same connection");
    assert.equal(record.disconnected, 0, "no disconnected event");
    assert.equal(await service.connectionExists(id), true);
    // Still a working connection of the group, on its new node: it publishes with an ack.
    const res = await client.sendToGroup("moving", "from the client", "text");
    assert.equal(res.isDuplicated, false);
    await waitFor(() => record.received.includes("from the client"), { what: "own group message" });
  } finally {
    try { client?.stop(); } catch { /* stopped */ }
    for (const node of nodes.values()) await node.dispose();
    await lb.close();
    await nats.dispose();
  }
});
