// Key rotation while clients are connected and receiving: regenerating the primary, the
// secondary and the salt disconnects nobody and delivery continues; afterwards tokens
// signed by a replaced key are refused on upgrade (401) and tokens of the current keys connect.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";
import {
  withDataplane, GroupPublisher, deliveryProblems, receivedCount, upgrade, RELIABLE_SUBPROTOCOL, sdkTokenUrl,
} from "./dataplane.mjs";

const T = { timeout: 90_000 };
const GROUPS = ["rot-a", "rot-b"];

/** Upgrade status of a fresh connection with `url` (the connection is closed again). */
async function upgradeStatus(url) {
  const r = await upgrade(url, { protocols: [RELIABLE_SUBPROTOCOL] });
  if (r.status === 101) r.raw.close();
  return r.status;
}

test("regenerating primary, secondary and salt disconnects no client; delivery continues exactly once", T,
  withDataplane(async (ctx) => {
    const { hub, hubName } = ctx;
    const keys0 = ctx.keys;
    const clients = [];
    for (let i = 0; i < 8; i++) {
      const group = GROUPS[i % 2];
      clients.push({
        group,
        conn: await ctx.connect({
          protocol: i % 4 < 2 ? "reliable" : "json", userId: `rot${i}`, groups: [group], label: `client ${i}`,
        }),
      });
    }
    const pub = new GroupPublisher(ctx.serviceFor(keys0.secondaryConnectionString), GROUPS, { workers: 3, pauseMs: 5 });
    let keys1;
    let keys2;
    try {
      await pub.more(30, "before any rotation (secondary key)");
      keys1 = await hub.keyRegenerate("primary");
      await pub.more(30, "after the primary rotation");

      // Right after the primary rotation: old-primary tokens are refused, secondary tokens connect.
      const svcOldPrimary = ctx.serviceFor(keys0.primaryConnectionString);
      const svcSecondary = ctx.serviceFor(keys0.secondaryConnectionString);
      assert.equal(await upgradeStatus(await sdkTokenUrl(svcOldPrimary, hub, hubName)), 401, "token signed by the old primary");
      assert.equal(await upgradeStatus(await sdkTokenUrl(svcSecondary, hub, hubName)), 101, "token signed by the secondary");

      await pub.switchTo(ctx.serviceFor(keys1.primaryConnectionString), "switching the publisher to the new primary");
      await pub.more(20, "publishing with the new primary");
      keys2 = await hub.keyRegenerate("secondary");
      await pub.more(30, "after the secondary rotation");
      await hub.keyRegenerate("salt");
      await pub.more(30, "after the salt rotation");
    } finally {
      await pub.stop();
    }
    assert.deepEqual(pub.failures, [], "every publish with a valid key succeeded");
    assert.equal(keys2.primaryKey, keys1.primaryKey);

    await waitFor(() => clients.every(({ conn, group }) => {
      const { got, want } = receivedCount(conn, [group], pub.sent);
      return got >= want;
    }), {
      timeoutMs: 15_000,
      what: `every client to receive its messages: ${JSON.stringify(clients.map(({ conn, group }) => receivedCount(conn, [group], pub.sent)))}`,
    });
    for (const { conn, group } of clients) {
      assert.deepEqual(deliveryProblems(conn, [group], pub.sent), [], `${conn.label} (${conn.protocol}, ${group})`);
      assert.equal(conn.disconnected.length, 0, `${conn.label}: no disconnected event`);
      assert.equal(conn.connected.length, 1, `${conn.label}: connected exactly once`);
      assert.equal(await ctx.serviceFor(keys2.primaryConnectionString).connectionExists(conn.connectionId), true, `${conn.label}: exists`);
    }

    // Afterwards: tokens of replaced keys are refused, tokens of the current keys connect.
    const cases = {
      "original primary": [keys0.primaryConnectionString, 401],
      "original secondary": [keys0.secondaryConnectionString, 401],
      "current primary": [keys2.primaryConnectionString, 101],
      "current secondary": [keys2.secondaryConnectionString, 101],
    };
    for (const [name, [cs, want]] of Object.entries(cases)) {
      assert.equal(await upgradeStatus(await sdkTokenUrl(ctx.serviceFor(cs), hub, hubName)), want, `token signed by the ${name} key`);
    }
    // Existing connections keep receiving after everything.
    const last = ctx.serviceFor(keys2.secondaryConnectionString);
    await last.group(GROUPS[0]).sendToAll("final", { contentType: "text/plain" });
    for (const { conn, group } of clients.filter((c) => c.group === GROUPS[0])) {
      await conn.waitMessages((ms) => ms.some((m) => m.data === "final"), `final message in ${group}`);
    }
  }));
