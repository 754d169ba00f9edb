// Recovery after the TCP connection is cut (through a small proxy the test controls):
// the reliable client recovers the same connection (same connectionId, no second
// `connected` event) and gets the messages sent while it was cut exactly once and in
// order, also when the primary key was regenerated during the cut. With the plain json
// protocol a cut means a new connection.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";
import { withDataplane, sleep } from "./dataplane.mjs";
import { startProxy } from "./proxy.mjs";

const T = { timeout: 90_000 };

async function withProxy(ctx, fn) {
  const proxy = await startProxy(ctx.hub.publicPort);
  try {
    return await fn(proxy);
  } finally {
    await ctx.cleanup();
    await proxy.close();
  }
}

/** Wait until the proxy has seen the client try (and fail) to reconnect at least `n` times. */
async function waitRefused(proxy, n, what) {
  await waitFor(() => proxy.refused >= n, { timeoutMs: 10_000, what: `${what}: ${n} refused reconnect attempt(s)` });
}

async function reliableCutAndRecover(ctx, { rotatePrimary }) {
  await withProxy(ctx, async (proxy) => {
    const svc = ctx.service;
    const c = await ctx.connect({
      protocol: "reliable", userId: "rec-user", groups: ["rg"], roles: ["webpubsub.sendToGroup"],
      transformUrl: (u) => proxy.url(u), label: "reliable client via proxy",
    });
    const id = c.connectionId;
    for (let i = 1; i <= 3; i++) await svc.group("rg").sendToAll(`m${i}`, { contentType: "text/plain" });
    await c.waitCount(3);

    proxy.refuse(true);
    proxy.cut();
    await waitRefused(proxy, 1, "reliable client");
    // While cut: the server keeps the session and queues what is sent to it.
    let sender = svc;
    if (rotatePrimary) {
      await ctx.hub.keyRegenerate("primary");
      sender = ctx.serviceFor(ctx.keys.secondaryConnectionString);
    }
    for (let i = 4; i <= 8; i++) {
      if (i % 2) await sender.group("rg").sendToAll(`m${i}`, { contentType: "text/plain" });
      else await sender.sendToConnection(id, `m${i}`, { contentType: "text/plain" });
    }
    proxy.refuse(false);

    await c.waitMessages((ms) => ms.length >= 8, "messages sent during the cut", 15_000);
    await sender.sendToConnection(id, "m9", { contentType: "text/plain" });
    await c.waitMessages((ms) => ms.length >= 9, "a message after recovery", 5_000);
    await sleep(300); // room for a late duplicate
    assert.deepEqual(c.data.map((m) => m.data), ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"],
      "every message exactly once, in order");
    assert.equal(c.connected.length, 1, "no second connected event");
    assert.equal(c.disconnected.length, 0, "no disconnected event");
    assert.ok(proxy.requestLines.some((l) => l.includes("awps_connection_id=") && l.includes("awps_reconnection_token=")),
      `the client used the recovery URL: ${JSON.stringify(proxy.requestLines)}`);
    // Still the same, working connection: it can publish with an ack.
    const res = await c.client.sendToGroup("rg", "after recovery", "text");
    assert.equal(res.isDuplicated, false);
    await c.waitMessages((ms) => ms.some((m) => m.data === "after recovery"), "own group message after recovery");
    assert.equal(await sender.connectionExists(id), true);
  });
}

test("reliable client: TCP cut, messages sent meanwhile arrive once and in order after recovery (same connection)", T,
  withDataplane(async (ctx) => {
    await reliableCutAndRecover(ctx, { rotatePrimary: false });
  }));

test("reliable client: recovery still works when the primary key was regenerated during the cut", T,
  withDataplane(async (ctx) => {
    await reliableCutAndRecover(ctx, { rotatePrimary: true });
  }));

test("reliable client: two cuts in a row, messages across both arrive once and in order", T,
  withDataplane(async (ctx) => {
    await withProxy(ctx, async (proxy) => {
      const c = await ctx.connect({ protocol: "reliable", userId: "twice", transformUrl: (u) => proxy.url(u) });
      const id = c.connectionId;
      let n = 0;
      const send = async (k) => { for (let i = 0; i < k; i++) await ctx.service.sendToConnection(id, `n${++n}`, { contentType: "text/plain" }); };
      await send(2);
      for (let round = 1; round <= 2; round++) {
        proxy.refuse(true);
        const refusedBefore = proxy.refused;
        proxy.cut();
        await waitRefused(proxy, refusedBefore + 1, `round ${round}`);
        await send(3);
        proxy.refuse(false);
        await c.waitMessages((ms) => ms.length >= n, `round ${round}: ${n} messages`, 15_000);
      }
      await sleep(300);
      assert.deepEqual(c.data.map((m) => m.data), Array.from({ length: n }, (_, i) => `n${i + 1}`));
      assert.equal(c.connected.length, 1);
      assert.equal(c.disconnected.length, 0);
    });
  }));

test("json protocol: a TCP cut gives a new connection with a new connectionId", T, withDataplane(async (ctx) => {
  await withProxy(ctx, async (proxy) => {
    const c = await ctx.connect({
      protocol: "json", userId: "plain", groups: ["pg"], autoReconnect: true, transformUrl: (u) => proxy.url(u),
    });
    const first = c.connectionId;
    proxy.refuse(true);
    proxy.cut();
    await waitFor(() => c.disconnected.length > 0, { timeoutMs: 5_000, what: "disconnected event after the cut" });
    await waitFor(async () => !(await ctx.service.connectionExists(first)), {
      timeoutMs: 10_000, what: "the old json-protocol connection to be gone",
    });
    proxy.refuse(false);
    await waitFor(() => c.connected.length >= 2, { timeoutMs: 10_000, what: "a second connected event" });
    const second = c.connected[1].connectionId;
    assert.notEqual(second, first, "a new connection id");
    assert.equal(c.connected[1].userId, "plain");
    assert.ok(!proxy.requestLines.some((l) => l.includes("awps_connection_id")), "no recovery attempt on the json protocol");
    // The new connection works and is in the token's group again.
    await ctx.service.group("pg").sendToAll("after reconnect", { contentType: "text/plain" });
    await c.waitMessages((ms) => ms.some((m) => m.data === "after reconnect"), "group message on the new connection");
  });
}));
