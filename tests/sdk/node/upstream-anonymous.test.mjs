// anonymousConnectPolicy: with "allow", a raw WebSocket connects to /client/hubs/{hub} without any
// access token; with "deny" (the default, also for hubs that were never configured) it gets 401.
// An anonymous connection still goes through the connect handler, which can give it a user id.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  withDataplane, JSON_SUBPROTOCOL, upgrade, uid,
} from "./dataplane.mjs";
import { startUpstream, configureHub, handlerSetting, waitEvent } from "./upstream.mjs";

const T = { timeout: 60_000 };

const noTokenUrl = (ctx, hubName = ctx.hubName) => `ws://${ctx.hub.publicAddr}/client/hubs/${hubName}`;

test("anonymousConnectPolicy allow: raw sockets connect without a token and receive messages", T,
  withDataplane(async (ctx) => {
    await configureHub(ctx.hub, ctx.hubName, { anonymousConnectPolicy: "allow" });
    const got = await ctx.hub.admin("GET", `/admin/hubs/${ctx.hubName}`);
    assert.equal(got.status, 200);
    assert.equal((await got.json()).properties?.anonymousConnectPolicy, "allow", "GET /admin/hubs/{hub} shows the policy");

    const json = await upgrade(noTokenUrl(ctx), { protocols: [JSON_SUBPROTOCOL] });
    assert.equal(json.status, 101, `json subprotocol without a token: ${json.status} ${json.body ?? ""}`);
    ctx.track(json.raw);
    const connected = await json.raw.connectedMessage();
    assert.equal(connected.userId ?? null, null, `anonymous userId: ${JSON.stringify(connected)}`);
    assert.equal(await ctx.service.connectionExists(connected.connectionId), true);

    const simple = await upgrade(noTokenUrl(ctx), {});
    assert.equal(simple.status, 101, `simple client without a token: ${simple.status} ${simple.body ?? ""}`);
    ctx.track(simple.raw);

    await ctx.service.sendToAll("hello anonymous", { contentType: "text/plain" });
    const m = await json.raw.waitJson((j) => j.type === "message", "message on the json socket");
    assert.equal(m.data, "hello anonymous");
    await simple.raw.waitFrame((f) => f.text === "hello anonymous", "message on the simple socket");

    // A token still works on the same hub, and the /client?hub= form accepts no-token clients too.
    const withToken = await ctx.connect({ protocol: "json", userId: "has-token" });
    assert.equal(withToken.connected[0].userId, "has-token");
    const query = await upgrade(`ws://${ctx.hub.publicAddr}/client?hub=${ctx.hubName}`, { protocols: [JSON_SUBPROTOCOL] });
    assert.equal(query.status, 101, `/client?hub= without a token: ${query.status} ${query.body ?? ""}`);
    ctx.track(query.raw);
  }));

test("anonymousConnectPolicy deny (default): no token means 401; switching allow -> deny needs no restart", T,
  withDataplane(async (ctx) => {
    // Never configured.
    const never = await upgrade(noTokenUrl(ctx, `never${uid()}`), { protocols: [JSON_SUBPROTOCOL] });
    if (never.raw) never.raw.close();
    assert.equal(never.status, 401, "unconfigured hub");

    // Configured without the property (default deny), and with an explicit deny.
    const implicit = `implicit${uid()}`;
    await configureHub(ctx.hub, implicit, { eventHandlers: [] });
    const r1 = await upgrade(noTokenUrl(ctx, implicit), { protocols: [JSON_SUBPROTOCOL] });
    if (r1.raw) r1.raw.close();
    assert.equal(r1.status, 401, "hub configured without anonymousConnectPolicy");

    await configureHub(ctx.hub, ctx.hubName, { anonymousConnectPolicy: "allow" });
    const before = await upgrade(noTokenUrl(ctx), {});
    assert.equal(before.status, 101, "allowed before the switch");
    ctx.track(before.raw);
    await configureHub(ctx.hub, ctx.hubName, { anonymousConnectPolicy: "deny" });
    const after = await upgrade(noTokenUrl(ctx), {});
    if (after.raw) after.raw.close();
    assert.equal(after.status, 401, "denied right after the switch to deny");
    // A bad token is still refused on an "allow" hub (anonymous means no token, not any token).
    await configureHub(ctx.hub, ctx.hubName, { anonymousConnectPolicy: "allow" });
    const bad = await upgrade(`${noTokenUrl(ctx)}?access_token=not.a.token`, {});
    if (bad.raw) bad.raw.close();
    assert.equal(bad.status, 401, "a malformed token on an allow hub");
  }));

test("anonymous connections go through the connect handler, which can assign a user id", T,
  withDataplane(async (ctx) => {
    const up = await startUpstream((req, res) => {
      if (req.method === "OPTIONS") {
        res.writeHead(200, { "WebHook-Allowed-Origin": "*" });
        res.end();
        return;
      }
      req.resume();
      req.on("end", () => {
        if (req.headers["ce-type"] === "azure.webpubsub.sys.connect") {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify({ userId: "named-by-app" }));
        } else {
          res.writeHead(204);
          res.end();
        }
      });
    });
    try {
      await configureHub(ctx.hub, ctx.hubName, {
        anonymousConnectPolicy: "allow",
        eventHandlers: [handlerSetting(`${up.base}/events/{event}`, { systemEvents: ["connect", "connected"] })],
      });
      const r = await upgrade(noTokenUrl(ctx), { protocols: [JSON_SUBPROTOCOL] });
      assert.equal(r.status, 101, `${r.status} ${r.body ?? ""}`);
      ctx.track(r.raw);
      const connected = await r.raw.connectedMessage();
      assert.equal(connected.userId, "named-by-app");
      const connect = await waitEvent(up, "connect", connected.connectionId);
      assert.equal("ce-userid" in connect.headers, false, "no ce-userId on an anonymous connect");
      assert.deepEqual(connect.json?.claims ?? {}, {}, `no claims without a token: ${connect.text}`);
      const conn = await waitEvent(up, "connected", connected.connectionId);
      assert.equal(conn.headers["ce-userid"], "named-by-app", "ce-userId on connected");
    } finally {
      await up.close();
    }
  }));
