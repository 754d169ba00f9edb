// Rotation under load: 200 connected clients (both json subprotocols) in 10 groups while a
// publisher sends group messages continuously through REST and the primary, the secondary
// (after switching the publisher to the new primary) and the salt are regenerated.
// At the end: no `disconnected` event anywhere and every message reached every member exactly once.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";
import { withDataplane, GroupPublisher, deliveryProblems } from "./dataplane.mjs";

const CLIENTS = 200;
const GROUP_COUNT = 10;
const BATCH = 20;

test(`${CLIENTS} clients in ${GROUP_COUNT} groups: key rotation under continuous publishing loses, duplicates and disconnects nothing`,
  { timeout: 150_000 },
  withDataplane(async (ctx, t) => {
    const { hub } = ctx;
    const keys0 = ctx.keys;
    const groups = Array.from({ length: GROUP_COUNT }, (_, i) => `load${i}`);
    const specs = Array.from({ length: CLIENTS }, (_, i) => ({
      i,
      group: groups[i % GROUP_COUNT],
      protocol: i % 2 ? "json" : "reliable",
      viaToken: Math.floor(i / GROUP_COUNT) % 2 === 0, // half join through the token, half with joinGroup
    }));

    const started = Date.now();
    for (let b = 0; b < specs.length; b += BATCH) {
      await Promise.all(specs.slice(b, b + BATCH).map(async (s) => {
        s.conn = await ctx.connect({
          protocol: s.protocol,
          userId: `load-user-${s.i}`,
          groups: s.viaToken ? [s.group] : undefined,
          roles: s.viaToken ? undefined : [`webpubsub.joinLeaveGroup.${s.group}`],
          label: `client ${s.i}`,
        });
        if (!s.viaToken) await s.conn.client.joinGroup(s.group);
      }));
    }
    t.diagnostic(`connected ${CLIENTS} clients in ${Date.now() - started} ms`);

    // Every group has exactly its 20 members.
    for (const g of groups) {
      const ids = [];
      for await (const m of await ctx.service.group(g).listConnections({ maxPageSize: 7 })) ids.push(m.connectionId);
      const want = specs.filter((s) => s.group === g).map((s) => s.conn.connectionId).sort();
      assert.deepEqual(ids.sort(), want, `members of ${g}`);
    }

    const pub = new GroupPublisher(ctx.serviceFor(keys0.secondaryConnectionString), groups, { workers: 4, pauseMs: 10 });
    try {
      await pub.more(80, "with the secondary key, before rotating");
      const keys1 = await hub.keyRegenerate("primary");
      await pub.more(80, "after the primary rotation");
      await pub.switchTo(ctx.serviceFor(keys1.primaryConnectionString), "switching the publisher to the new primary");
      await pub.more(40, "with the new primary");
      await hub.keyRegenerate("secondary");
      await pub.more(80, "after the secondary rotation");
      await hub.keyRegenerate("salt");
      await pub.more(80, "after the salt rotation");
    } finally {
      await pub.stop();
    }
    assert.deepEqual(pub.failures, [], "every publish succeeded");

    const expectedPerGroup = new Map(groups.map((g) => [g, pub.sent.filter((s) => s.group === g).length]));
    const count = (s) => s.conn.messages.filter((m) => m.data && typeof m.data === "object" && m.data.group === s.group).length;
    await waitFor(() => specs.every((s) => count(s) >= expectedPerGroup.get(s.group)), {
      timeoutMs: 30_000,
      intervalMs: 250,
      what: `all deliveries (${specs.filter((s) => count(s) < expectedPerGroup.get(s.group)).length} clients still missing messages)`,
    });

    const problems = [];
    for (const s of specs) {
      for (const p of deliveryProblems(s.conn, [s.group], pub.sent)) problems.push(`${s.conn.label} (${s.protocol}): ${p}`);
      if (s.conn.disconnected.length) problems.push(`${s.conn.label} (${s.protocol}): ${s.conn.disconnected.length} disconnected event(s) ${JSON.stringify(s.conn.disconnected)}`);
      if (s.conn.connected.length !== 1) problems.push(`${s.conn.label}: ${s.conn.connected.length} connected events`);
    }
    const deliveries = specs.reduce((a, s) => a + s.conn.data.length, 0);
    t.diagnostic(`${pub.sent.length} group messages published, ${deliveries} deliveries checked`);
    assert.deepEqual(problems.slice(0, 40), [], `${problems.length} problem(s)`);
  }));
