// What an operator watching /metrics and the live trace sees while official-SDK clients and a
// service client work: every delivery of N sends to M clients counted, a forged token counted by
// reason, a REST close with a reason counted and traced with its code; no key, token or payload in
// either.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor, randomKey } from "./harness.mjs";
import { withDataplane, clientToken, clientUrl, upgrade, JSON_SUBPROTOCOL } from "./dataplane.mjs";

const T = { timeout: 60_000 };

/** The value of one series (0 when absent). */
async function metric(hub, series) {
  const text = await (await hub.admin("GET", "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** Reads the live trace (SSE) into `events` until `stop()`. */
async function openTrace(hub, query) {
  const controller = new AbortController();
  const response = await fetch(`${hub.adminUrl}/admin/trace${query}`, {
    headers: { Authorization: `Bearer ${await hub.adminToken()}` },
    signal: controller.signal,
  });
  assert.equal(response.status, 200);
  const trace = { events: [], raw: "", stop: () => controller.abort() };
  (async () => {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of response.body) {
        trace.raw += decoder.decode(chunk, { stream: true });
        trace.events = trace.raw.split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => JSON.parse(l.slice(5)));
      }
    } catch {
      // Aborted at the end of the test.
    }
  })();
  return trace;
}

test("N sends to M official clients count N×M deliveries; a forged token and a REST close are counted and traced", T,
  withDataplane(async (ctx) => {
    const hub = ctx.hub;
    const name = ctx.hubName;
    const trace = await openTrace(hub, `?hub=${name}`);
    const CLIENTS = 3;
    const SENDS = 5;
    const clients = [];
    for (let i = 0; i < CLIENTS; i++) {
      clients.push(await ctx.connect({ protocol: i % 2 ? "json" : "reliable", userId: `u${i}` }));
    }
    const delivered = `hubbub_messages_delivered_total{hub="${name}"}`;
    const before = await metric(hub, delivered);
    const payload = `payload-${randomKey().slice(0, 12)}`;
    for (let i = 0; i < SENDS; i++) {
      await ctx.service.sendToAll(`${payload}-${i}`, { contentType: "text/plain" });
    }
    for (const c of clients) {
      await c.waitMessages((ms) => ms.filter((m) => String(m.data).startsWith(payload)).length === SENDS, "every send");
    }
    assert.equal(await metric(hub, delivered) - before, SENDS * CLIENTS, "N×M deliveries");
    assert.equal(await metric(hub, `hubbub_messages_received_total{hub="${name}",source="rest"}`), SENDS);
    assert.equal(await metric(hub, `hubbub_rest_requests_total{operation="sendToAll",status="202"}`), SENDS);
    assert.equal(
      await metric(hub, `hubbub_connections_opened_total{hub="${name}",protocol="json.reliable.webpubsub.azure.v1"}`),
      2,
    );

    // A token signed with a key Hubbub does not have: 401, counted as a bad signature.
    const forgedReason = `hubbub_auth_failures_total{kind="connection",reason="bad_signature"}`;
    const forgedBefore = await metric(hub, forgedReason);
    const forged = clientToken(hub, name, randomKey(), { userId: "mallory" });
    const refused = await upgrade(clientUrl(hub, name, forged), { protocols: [JSON_SUBPROTOCOL] });
    assert.equal(refused.status, 401);
    assert.equal(await metric(hub, forgedReason), forgedBefore + 1);

    // A REST close with a reason: counted as rest_close, traced with the code and the reason.
    const victim = clients[1];
    await ctx.service.closeConnection(victim.connectionId, { reason: "rotating keys" });
    await waitFor(() => victim.disconnected.length > 0, { what: "the client's disconnected event" });
    await waitFor(async () => (await metric(hub, `hubbub_connections_closed_total{hub="${name}",reason="rest_close"}`)) === 1,
      { what: "the close counted" });
    await waitFor(() => trace.events.some((e) => e.event === "connectionClosed"), { what: "the close in the trace" });
    const closed = trace.events.find((e) => e.event === "connectionClosed");
    assert.equal(closed.connectionId, victim.connectionId);
    assert.equal(closed.reason, "rotating keys");
    assert.equal(closed.code, 1000);
    assert.equal(closed.by, "server");
    assert.equal(closed.cause, "rest_close");
    const opened = trace.events.filter((e) => e.event === "connectionOpened");
    assert.equal(opened.length, CLIENTS);
    assert.ok(opened.every((e) => e.keySlot === "primary"), JSON.stringify(opened));
    await waitFor(() => trace.events.some((e) => e.event === "authFailure"), { what: "the forged token in the trace" });
    assert.equal(trace.events.find((e) => e.event === "authFailure").reason, "bad_signature");
    assert.ok(trace.events.some((e) => e.event === "message" && e.deliveredHere === CLIENTS));
    trace.stop();

    // Neither the trace nor the metrics hold a key, a token or a payload.
    const metrics = await (await hub.admin("GET", "/metrics")).text();
    for (const [what, text] of [["trace", trace.raw], ["metrics", metrics]]) {
      for (const secret of [ctx.keys.primaryKey, ctx.keys.secondaryKey, forged, clients[0].url.split("access_token=")[1]]) {
        assert.ok(!text.includes(secret), `no key or token in the ${what}`);
      }
      assert.ok(!text.includes(payload), `no payload in the ${what}`);
    }
  }));
