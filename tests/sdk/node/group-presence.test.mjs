// Group presence events with @azure/web-pubsub-express 1.1.0 (onGroupJoined / onGroupLeft): a
// handler taking the `joined` and `left` system events hears every join and leave of a group,
// whether by the client (joinGroup / leaveGroup), by the token's groups at connect, or through
// REST (connection and user add/remove); nothing when a connection simply ends, and nothing for
// a hub whose handler does not take them.

import { test } from "node:test";
import assert from "node:assert/strict";
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import { waitFor } from "./harness.mjs";
import { withDataplane, sleep } from "./dataplane.mjs";
import { startUpstream, configureHub, handlerSetting } from "./upstream.mjs";

const T = { timeout: 60_000 };
const ROLES = ["webpubsub.joinLeaveGroup"];

async function presenceApp(hubName) {
  const seen = [];
  const handler = new WebPubSubEventHandler(hubName, {
    onGroupJoined(req) { seen.push(["joined", req.group, req.context.connectionId, req.context.userId]); },
    onGroupLeft(req) { seen.push(["left", req.group, req.context.connectionId, req.context.userId]); },
    onDisconnected(req) { seen.push(["disconnected", undefined, req.context.connectionId, req.context.userId]); },
  });
  const app = express();
  app.use(handler.getMiddleware());
  app.use((req, res) => res.status(404).end());
  const up = await startUpstream(app);
  up.presence = seen;
  up.handlerUrl = `${up.base}/api/webpubsub/hubs/{hub}/`;
  return up;
}

test("express 1.1.0 onGroupJoined / onGroupLeft hear joins and leaves by the client, the token and REST", T,
  withDataplane(async (ctx) => {
    const up = await presenceApp(ctx.hubName);
    try {
      await configureHub(ctx.hub, ctx.hubName, {
        eventHandlers: [handlerSetting(up.handlerUrl, { userEventPattern: "none", systemEvents: ["joined", "left", "disconnected"] })],
      });
      const ann = await ctx.connect({ protocol: "json", userId: "ann", roles: ROLES, groups: ["lobby"] });
      const id = ann.connectionId;
      const seen = up.presence;
      const has = (entry) => seen.some((s) => JSON.stringify(s) === JSON.stringify(entry));
      const wait = (entry) => waitFor(() => has(entry), { timeoutMs: 5_000, what: `${JSON.stringify(entry)} in ${JSON.stringify(seen)}` });

      await wait(["joined", "lobby", id, "ann"]);            // the token's group
      await ann.client.joinGroup("room");
      await wait(["joined", "room", id, "ann"]);
      await ann.client.joinGroup("room");                     // already a member: no second event
      await ann.client.leaveGroup("room");
      await wait(["left", "room", id, "ann"]);
      await ann.client.leaveGroup("room");                    // not a member: no event
      await ctx.service.group("rest").addConnection(id);
      await wait(["joined", "rest", id, "ann"]);
      await ctx.service.group("rest").removeUser("ann");
      await wait(["left", "rest", id, "ann"]);
      await sleep(300);
      assert.deepEqual(seen.filter(([kind]) => kind !== "disconnected"), [
        ["joined", "lobby", id, "ann"],
        ["joined", "room", id, "ann"],
        ["left", "room", id, "ann"],
        ["joined", "rest", id, "ann"],
        ["left", "rest", id, "ann"],
      ], "each join and leave once, in order");

      ann.stop();
      await wait(["disconnected", undefined, id, "ann"]);
      await sleep(300);
      assert.equal(seen.filter(([kind, group]) => kind === "left" && group === "lobby").length, 0,
        "a connection's groups end with it without left events");
    } finally {
      await up.close();
    }
  }));

test("a handler that does not take joined / left gets no presence events", T,
  withDataplane(async (ctx) => {
    const up = await presenceApp(ctx.hubName);
    try {
      await configureHub(ctx.hub, ctx.hubName, {
        eventHandlers: [handlerSetting(up.handlerUrl, { userEventPattern: "none", systemEvents: ["disconnected"] })],
      });
      const bob = await ctx.connect({ protocol: "json", userId: "bob", roles: ROLES });
      await bob.client.joinGroup("room");
      await bob.client.leaveGroup("room");
      bob.stop();
      await waitFor(() => up.presence.some(([kind]) => kind === "disconnected"), { timeoutMs: 5_000, what: "disconnected" });
      assert.deepEqual(up.presence.map(([kind]) => kind), ["disconnected"]);
    } finally {
      await up.close();
    }
  }));
