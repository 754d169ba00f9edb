// MQTT clients across cluster nodes: two `hubbub serve --cluster` nodes on one NATS JetStream
// server. A publish on node A reaches MQTT and JSON subscribers on node B; REST sends to an MQTT
// client id (which names no node) reach it wherever it is; a persistent MQTT session left on node A
// resumes on node B with its subscription and the QoS 1 messages sent while it was away; a clean
// start on one node ends the session kept on the other. Needs `nats-server` (scripts/test installs
// it).

import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import mqtt from "mqtt";
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";
import { waitFor } from "./harness.mjs";
import { twoNodes } from "./cluster.mjs";

const T = { timeout: 120_000 };
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

/** An mqtt.js client on `node`, its messages collected. */
async function mqttOn(cluster, node, hub, clientId, options = {}) {
  const { url } = await cluster.service(node, hub).getClientAccessToken({ clientProtocol: "mqtt", userId: clientId, roles: ROLES });
  const client = mqtt.connect(url, {
    protocolVersion: 5,
    clientId,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...options,
  });
  // Listening before the CONNACK: a resumed session's messages come right behind it.
  client.received = [];
  client.on("message", (topic, payload, packet) => client.received.push({ topic, text: payload.toString(), qos: packet.qos }));
  client.connack = await new Promise((resolve, reject) => {
    client.once("connect", resolve);
    client.once("error", reject);
  });
  return client;
}

test("MQTT publishes, REST sends to a client id and persistent sessions cross nodes", T, async () => {
  const cluster = await twoNodes();
  const [a, b] = cluster.nodes;
  const hub = `mq${randomBytes(3).toString("hex")}`;
  const clients = [];
  try {
    // A JSON client and an MQTT subscriber on node B, a publisher on node A.
    const { url } = await cluster.service(b, hub).getClientAccessToken({ userId: "json", roles: ROLES });
    const json = new WebPubSubClient(url, { protocol: WebPubSubJsonProtocol(), autoReconnect: false });
    const jsonMessages = [];
    json.on("group-message", (e) => jsonMessages.push(e.message));
    await json.start();
    await json.joinGroup("room");
    const subscriber = await mqttOn(cluster, b, hub, "subB");
    clients.push(subscriber);
    await subscriber.subscribeAsync("room", { qos: 1 });
    const publisher = await mqttOn(cluster, a, hub, "pubA");
    clients.push(publisher);
    await publisher.publishAsync("room", JSON.stringify({ n: 1 }), { qos: 1, properties: { contentType: "application/json" } });
    await waitFor(() => subscriber.received.some((m) => m.topic === "room" && m.text === '{"n":1}'), { what: "the MQTT subscriber on node B" });
    await waitFor(() => jsonMessages.some((m) => m.dataType === "json" && m.data?.n === 1), { what: "the JSON client on node B" });
    json.stop();

    // A REST send to the client id, made on the node that does not hold it.
    await cluster.service(a, hub).sendToConnection("subB", "direct", { contentType: "text/plain" });
    await waitFor(() => subscriber.received.some((m) => m.topic === "$webpubsub/server/messages" && m.text === "direct"), { what: "sendToConnection across nodes" });
    assert.equal(await cluster.service(a, hub).connectionExists("subB"), true);
    assert.equal(subscriber.received.filter((m) => m.text === "direct").length, 1, "delivered once");

    // A persistent session on node A, away, then resumed on node B.
    const away = await mqttOn(cluster, a, hub, "persist", { clean: false, properties: { sessionExpiryInterval: 60 } });
    await away.subscribeAsync("news", { qos: 1 });
    away.stream.destroy();
    await sleep(300);
    await cluster.service(b, hub).group("news").sendToAll("while away", { contentType: "text/plain" });
    const back = await mqttOn(cluster, b, hub, "persist", { clean: false, properties: { sessionExpiryInterval: 60 } });
    clients.push(back);
    assert.equal(back.connack.sessionPresent, true, "the session was kept");
    await waitFor(() => back.received.some((m) => m.topic === "news" && m.text === "while away" && m.qos === 1), { what: "the QoS 1 message kept for the session, on node B" });
    await cluster.service(a, hub).group("news").sendToAll("after", { contentType: "text/plain" });
    await waitFor(() => back.received.some((m) => m.text === "after"), { what: "the subscription moved with the session" });

    // A clean start on node A ends the session held on node B.
    const clean = await mqttOn(cluster, a, hub, "persist", { clean: true });
    clients.push(clean);
    assert.equal(clean.connack.sessionPresent, false);
    await waitFor(() => back.disconnected || !back.connected, { what: "the old connection taken over" });
    await cluster.service(b, hub).group("news").sendToAll("fresh", { contentType: "text/plain" });
    await sleep(500);
    assert.equal(clean.received.length, 0, "the new session has no subscription");
  } catch (e) {
    e.message += `\n--- node a\n${a.logs()}\n--- node b\n${b.logs()}`;
    throw e;
  } finally {
    for (const c of clients) await c.endAsync(true).catch(() => {});
    await cluster.dispose();
  }
});
