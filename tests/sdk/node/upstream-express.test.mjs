// Event handlers end to end with a real express app using WebPubSubEventHandler from
// @azure/web-pubsub-express as the upstream, and the official @azure/web-pubsub-client:
// userId, groups and state from `connect`, user events echoed in text/json/binary, state
// round-trips, `invoke`, `connected`/`disconnected` (with the REST close reason), the
// CloudEvents headers of every request, and the abuse-protection handshake (accepted with
// the middleware's defaults and its `allowedEndpoints` variants; refused origins get no events).

import { test } from "node:test";
import assert from "node:assert/strict";
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import { waitFor } from "./harness.mjs";
import {
  withDataplane, RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL, upgrade, clientUrl, arrayBuffer, norm, uid, sleep,
} from "./dataplane.mjs";
import {
  startUpstream, serveEventHandler, configureHub, handlerSetting, eventHandlerProblems, waitEvent, commonHeaderProblems,
  endpointHost,
} from "./upstream.mjs";

const T = { timeout: 60_000 };

/**
 * An express app serving `hubName` with WebPubSubEventHandler:
 * - handleConnect: userId/groups from `opts`, state {counter: 0, from: "connect"};
 * - handleUserEvent: counter + 1 into the state, echo "echo#<counter>:<text>", {echo, counter}
 *   or [counter, ...bytes] in the request's data type; event "sum" answers {sum} as JSON;
 * - onConnected / onDisconnected: recorded.
 */
async function chatApp(hubName, opts = {}) {
  const seen = { connect: [], user: [], connected: [], disconnected: [] };
  const handler = new WebPubSubEventHandler(hubName, {
    ...(opts.allowedEndpoints ? { allowedEndpoints: opts.allowedEndpoints } : {}),
    handleConnect(req, res) {
      seen.connect.push(req);
      res.setState("counter", 0);
      res.setState("from", "connect");
      const answer = {};
      if (opts.userId !== undefined) answer.userId = opts.userId;
      if (opts.groups) answer.groups = opts.groups;
      res.success(answer);
    },
    handleUserEvent(req, res) {
      const before = req.context.states.counter;
      const counter = (typeof before === "number" ? before : -1000) + 1;
      seen.user.push({
        event: req.context.eventName, dataType: req.dataType, data: req.data, states: { ...req.context.states },
        userId: req.context.userId, connectionId: req.context.connectionId,
      });
      res.setState("counter", counter);
      if (req.context.eventName === "sum") {
        const xs = req.data?.xs ?? [];
        res.success(JSON.stringify({ sum: xs.reduce((a, b) => a + b, 0), counter }), "json");
      } else if (req.dataType === "text") {
        res.success(`echo#${counter}:${req.data}`, "text");
      } else if (req.dataType === "json") {
        res.success(JSON.stringify({ echo: req.data, counter }), "json");
      } else {
        const bytes = Buffer.from(req.data);
        res.success(Buffer.concat([Buffer.from([counter]), bytes]), "binary");
      }
    },
    onConnected(req) { seen.connected.push(req); },
    onDisconnected(req) { seen.disconnected.push(req); },
  });
  return serveEventHandler(handler, seen);
}

test("express upstream: userId, groups and state from connect; text/json/binary events echoed; invoke; disconnected reason", T,
  withDataplane(async (ctx, t) => {
    const up = await chatApp(ctx.hubName, { userId: "from-connect", groups: ["room-a", "room-b"] });
    try {
      await configureHub(ctx.hub, ctx.hubName, {
        eventHandlers: [handlerSetting(up.handlerUrl)],
        anonymousConnectPolicy: "deny",
      });
      // The token carries no userId; the connect handler assigns one.
      const c = await ctx.connect({
        protocol: "reliable", label: "express client", transformUrl: (u) => `${u}&tag=one&tag=two`,
      });
      const cid = c.connectionId;
      assert.equal(c.connected[0].userId, "from-connect", `connected event: ${JSON.stringify(c.connected[0])}`);

      // connect: what the handler got. Details are collected and asserted at the end so that
      // one wrong field does not hide the rest of the flow.
      const soft = [];
      const check = (ok, msg) => { if (!ok) soft.push(msg); };
      assert.equal(up.seen.connect.length, 1, "one connect event");
      const creq = up.seen.connect[0];
      assert.equal(creq.context.connectionId, cid);
      check(creq.context.userId === undefined, `connect carries no ce-userId when the token has none: ${creq.context.userId}`);
      check(creq.claims && typeof creq.claims === "object" && creq.claims.sub === undefined
        && Object.values(creq.claims).every(Array.isArray) && Array.isArray(creq.claims.aud),
      `connect claims: string -> string[] with aud and without sub: ${JSON.stringify(creq.claims)}`);
      check(Array.isArray(creq.queries?.access_token) && creq.queries.access_token.length === 1,
        `connect query includes access_token: ${JSON.stringify(creq.queries)}`);
      check(JSON.stringify(creq.queries?.tag) === JSON.stringify(["one", "two"]),
        `connect query keeps repeated parameters in order (tag=one&tag=two): ${JSON.stringify(creq.queries)}`);
      check(Array.isArray(creq.subprotocols) && creq.subprotocols.includes(RELIABLE_SUBPROTOCOL),
        `connect subprotocols: ${JSON.stringify(creq.subprotocols)}`);
      const hdrNames = Object.keys(creq.headers ?? {}).map((k) => k.toLowerCase());
      check(hdrNames.includes("upgrade") && hdrNames.includes("sec-websocket-protocol")
        && Object.values(creq.headers ?? {}).every(Array.isArray),
      `connect headers: string -> string[] with Upgrade and Sec-WebSocket-Protocol: ${JSON.stringify(creq.headers)}`);
      check(Array.isArray(creq.clientCertificates), `connect clientCertificates: ${JSON.stringify(creq.clientCertificates)}`);

      // connected arrives with the user id and the state set by connect.
      await waitFor(() => up.seen.connected.length === 1, { timeoutMs: 5_000, what: "onConnected" });
      assert.equal(up.seen.connected[0].context.connectionId, cid);
      assert.equal(up.seen.connected[0].context.userId, "from-connect");
      assert.deepEqual(up.seen.connected[0].context.states, { counter: 0, from: "connect" }, "state on connected");

      // Groups from connect are joined: a REST group send reaches the client; a user send too.
      assert.equal(await ctx.service.userExists("from-connect"), true, "userExists(from-connect)");
      await ctx.service.group("room-a").sendToAll("to-room-a", { contentType: "text/plain" });
      await ctx.service.group("room-b").sendToAll({ to: "room-b" });
      await ctx.service.group("room-c").sendToAll("to-room-c", { contentType: "text/plain" });
      await ctx.service.sendToUser("from-connect", "to-user", { contentType: "text/plain" });
      await ctx.flush([c]);
      assert.deepEqual(c.summary(), ["group:room-a:text:to-room-a", 'group:room-b:json:{"to":"room-b"}', "server:text:to-user"]);

      // User events in the three data types: ack succeeds, the echo arrives as a server message.
      const before = c.data.length;
      await c.client.sendEvent("echo", "hello", "text");
      await c.waitMessages((ms) => ms.length >= before + 1, "text echo");
      await c.client.sendEvent("echo", { a: 1, list: [1, "two", null] }, "json");
      await c.waitMessages((ms) => ms.length >= before + 2, "json echo");
      await c.client.sendEvent("echo", arrayBuffer([1, 2, 3, 250]), "binary");
      await c.waitMessages((ms) => ms.length >= before + 3, "binary echo");
      const echoes = c.data.slice(before);
      assert.deepEqual(echoes.map((m) => [m.from, m.dataType, norm(m.dataType, m.data)]), [
        ["server", "text", "echo#1:hello"],
        ["server", "json", { echo: { a: 1, list: [1, "two", null] }, counter: 2 }],
        ["server", "binary", `b64:${Buffer.from([3, 1, 2, 3, 250]).toString("base64")}`],
      ], `echoes: ${JSON.stringify(c.summary())}`);

      // invoke: the handler's body comes back as the invoke result.
      const inv = await c.client.invokeEvent("sum", { xs: [1, 2, 39] }, "json");
      assert.equal(inv.dataType, "json", `invoke result ${JSON.stringify(inv)}`);
      assert.deepEqual(inv.data, { sum: 42, counter: 4 }, `invoke result ${JSON.stringify(inv)}`);

      // What the app saw: data types, payloads, and the state counter carried from event to event.
      assert.deepEqual(up.seen.user.map((u) => [u.event, u.dataType, norm(u.dataType, u.data), u.states.counter, u.states.from, u.userId]), [
        ["echo", "text", "hello", 0, "connect", "from-connect"],
        ["echo", "json", { a: 1, list: [1, "two", null] }, 1, "connect", "from-connect"],
        ["echo", "binary", `b64:${Buffer.from([1, 2, 3, 250]).toString("base64")}`, 2, "connect", "from-connect"],
        ["sum", "json", { xs: [1, 2, 39] }, 3, "connect", "from-connect"],
      ]);

      // Closed through REST: disconnected reaches the app with the REST reason and the latest state.
      await ctx.service.closeConnection(cid, { reason: "closed-by-rest" });
      await waitFor(() => up.seen.disconnected.length === 1, { timeoutMs: 5_000, what: `onDisconnected; upstream got ${JSON.stringify(up.summary())}` });
      const d = up.seen.disconnected[0];
      assert.equal(d.reason, "closed-by-rest", `disconnected reason: ${JSON.stringify(d.reason)}`);
      assert.equal(d.context.connectionId, cid);
      assert.equal(d.context.userId, "from-connect");
      assert.deepEqual(d.context.states, { counter: 4, from: "connect" }, "state on disconnected");

      // Wire level: the abuse-protection OPTIONS came first, exactly once (cached), with the
      // documented headers; every POST carries the CloudEvents headers.
      const keys = ctx.keys;
      const opts = up.options();
      assert.equal(opts.length, 1, `one abuse-protection request (cached): ${JSON.stringify(up.summary())}`);
      assert.equal(opts[0].seq, 0, `OPTIONS before any POST: ${JSON.stringify(up.summary())}`);
      assert.equal(opts[0].headers["webhook-request-origin"], endpointHost(ctx.hub), "OPTIONS WebHook-Request-Origin");
      assert.equal(opts[0].headers["ce-awpsversion"], "1.0", "OPTIONS ce-awpsversion");
      assert.equal(opts[0].path, `/api/webpubsub/hubs/${ctx.hubName}/`, "OPTIONS path");
      const posts = up.posts();
      assert.deepEqual(posts.map((r) => r.eventName), ["connect", "connected", "echo", "echo", "echo", "sum", "disconnected"],
        `POSTs: ${JSON.stringify(up.summary())}`);
      const problems = [];
      let lastState;
      for (const r of posts) {
        const p = commonHeaderProblems(r, {
          hubName: ctx.hubName, kind: r.eventName, connectionId: cid,
          userId: r.eventName === "connect" ? undefined : "from-connect",
          subprotocol: RELIABLE_SUBPROTOCOL, origin: endpointHost(ctx.hub), keys,
        });
        // ce-connectionState: sent back verbatim, as last set by the app.
        if (r.eventName !== "connect" && r.headers["ce-connectionstate"] !== lastState) {
          p.push(`ce-connectionState ${JSON.stringify(r.headers["ce-connectionstate"])}, want the last one set ${JSON.stringify(lastState)}`);
        }
        if (r.responseHeaders?.["ce-connectionstate"] !== undefined) lastState = r.responseHeaders["ce-connectionstate"];
        if (p.length) problems.push(`${r.eventName}: ${p.join("; ")}`);
      }
      check(new Set(posts.map((r) => r.headers["ce-id"])).size === posts.length,
        `ce-id is unique per event: ${JSON.stringify(posts.map((r) => r.headers["ce-id"]))}`);
      const ctypes = posts.filter((r) => r.type.startsWith("azure.webpubsub.user.")).map((r) => r.headers["content-type"]);
      const wantTypes = ["text/plain; charset=utf-8", "application/json; charset=utf-8", "application/octet-stream", "application/json; charset=utf-8"];
      check(JSON.stringify(ctypes) === JSON.stringify(wantTypes), `user event Content-Types: ${JSON.stringify(ctypes)}, want ${JSON.stringify(wantTypes)}`);
      check(posts[0].headers["content-type"]?.startsWith("application/json"), `connect Content-Type: ${posts[0].headers["content-type"]}`);
      check(JSON.stringify(posts.at(-1).json) === JSON.stringify({ reason: "closed-by-rest" }), `disconnected body: ${posts.at(-1).text}`);
      assert.deepEqual([...soft, ...problems], [], "connect request fields and CloudEvents headers");
      t.diagnostic(`connect body keys: ${Object.keys(posts[0].json ?? {}).join(",")}`);
    } finally {
      await up.close();
    }
  }));

test("express upstream: a json-protocol client's own close reaches onDisconnected; mixed-case hub names are sent lower-case", T,
  withDataplane(async (ctx) => {
    const hubName = `Mixed${uid()}`;
    const up = await chatApp(hubName, { userId: "mixed-user" });
    try {
      await configureHub(ctx.hub, hubName, { eventHandlers: [handlerSetting(up.handlerUrl)] });
      const svc = ctx.serviceFor(ctx.keys.primaryConnectionString, hubName);
      const c = await ctx.connect({ protocol: "json", service: svc, label: "mixed-case hub client" });
      assert.equal(c.connected[0].userId, "mixed-user");
      await c.client.sendEvent("echo", "x", "text");
      await c.waitMessages((ms) => ms.some((m) => m.data === "echo#1:x"), "echo");
      c.stop();
      const d = await waitEvent(up, "disconnected", c.connectionId);
      assert.equal(d.headers["ce-hub"], hubName.toLowerCase(), "ce-hub is lower-case");
      assert.equal(typeof d.json?.reason, "string", `disconnected body ${d.text}`);
      await waitFor(() => up.seen.disconnected.length === 1, { timeoutMs: 5_000, what: "onDisconnected" });
      for (const r of up.posts()) assert.equal(r.headers["ce-hub"], hubName.toLowerCase(), `${r.eventName}: ce-hub`);
      const connected = up.events("connected", c.connectionId);
      assert.equal(connected.length, 1, `one connected event: ${JSON.stringify(up.summary())}`);
      assert.equal(connected[0].headers["ce-subprotocol"], JSON_SUBPROTOCOL, "ce-subprotocol on connected");
    } finally {
      await up.close();
    }
  }));

// The middleware's abuse-protection answers: "*" by default; with allowedEndpoints one
// WebHook-Allowed-Origin line per endpoint host (host:port for non-default ports).
const ALLOWED_VARIANTS = [
  { name: "default (*)", allowed: () => undefined, want: () => "*" },
  { name: "allowedEndpoints = the connection-string endpoint", allowed: (hub) => [hub.endpoint], want: (hub) => new URL(hub.endpoint).host },
  { name: "allowedEndpoints = another service + this one", allowed: (hub) => ["https://elsewhere.example.net", hub.endpoint], want: (hub) => ["elsewhere.example.net", new URL(hub.endpoint).host] },
  { name: "allowedEndpoints = http://localhost (no port)", allowed: () => ["http://localhost"], want: () => "localhost" },
];

test("abuse protection passes with the middleware's defaults and its allowedEndpoints variants", T,
  withDataplane(async (ctx, t) => {
    for (const v of ALLOWED_VARIANTS) {
      const hubName = `ap${uid()}`;
      const userId = `u-${uid()}`;
      const up = await chatApp(hubName, { userId, allowedEndpoints: v.allowed(ctx.hub) });
      try {
        await configureHub(ctx.hub, hubName, { eventHandlers: [handlerSetting(up.handlerUrl)] });
        const svc = ctx.serviceFor(ctx.keys.primaryConnectionString, hubName);
        const c = await ctx.connect({ protocol: "json", service: svc, label: `client (${v.name})` });
        assert.equal(c.connected[0].userId, userId, `${v.name}: userId from connect`);
        await c.client.sendEvent("echo", "ping", "text");
        await c.waitMessages((ms) => ms.some((m) => m.data === "echo#1:ping"), `${v.name}: echo`);
        const opts = up.options();
        assert.equal(opts.length, 1, `${v.name}: one OPTIONS: ${JSON.stringify(up.summary())}`);
        assert.equal(opts[0].status, 200, `${v.name}: the middleware answered 200`);
        assert.deepEqual([].concat(opts[0].responseHeaders["webhook-allowed-origin"]), [].concat(v.want(ctx.hub)),
          `${v.name}: the middleware's WebHook-Allowed-Origin`);
        t.diagnostic(`${v.name}: WebHook-Allowed-Origin ${JSON.stringify(opts[0].responseHeaders["webhook-allowed-origin"])} accepted`);
        c.stop();
        await waitEvent(up, "disconnected", c.connectionId);
      } finally {
        await up.close();
      }
    }
  }));

// Upstreams whose abuse-protection answer does not allow this service.
const REFUSING = [
  {
    name: "200 without WebHook-Allowed-Origin",
    app: (hubName) => {
      const app = express();
      app.options(/.*/, (req, res) => res.status(200).end());
      app.use(new WebPubSubEventHandler(hubName, { handleConnect: (q, r) => r.success({ userId: "should-not-happen" }) }).getMiddleware());
      return app;
    },
  },
  {
    name: "allowedEndpoints of another service",
    app: (hubName) => {
      const app = express();
      app.use(new WebPubSubEventHandler(hubName, {
        allowedEndpoints: ["https://elsewhere.example.net"],
        handleConnect: (q, r) => r.success({ userId: "should-not-happen" }),
      }).getMiddleware());
      return app;
    },
  },
  {
    name: "401 with WebHook-Allowed-Origin: *",
    app: (hubName) => {
      const app = express();
      app.options(/.*/, (req, res) => res.status(401).set("WebHook-Allowed-Origin", "*").end());
      app.use(new WebPubSubEventHandler(hubName, { handleConnect: (q, r) => r.success({ userId: "should-not-happen" }) }).getMiddleware());
      return app;
    },
  },
];

test("an upstream that refuses the origin gets no events; connecting fails with 500; /admin/event-handlers reports it", T,
  withDataplane(async (ctx, t) => {
    for (const v of REFUSING) {
      const hubName = `ref${uid()}`;
      const up = await startUpstream(v.app(hubName));
      try {
        const url = `${up.base}/api/webpubsub/hubs/{hub}/`;
        await configureHub(ctx.hub, hubName, { eventHandlers: [handlerSetting(url)] });
        const svc = ctx.serviceFor(ctx.keys.primaryConnectionString, hubName);
        for (let attempt = 1; attempt <= 2; attempt++) {
          const { token } = await svc.getClientAccessToken({ userId: "refused" });
          const r = await upgrade(clientUrl(ctx.hub, hubName, token), { protocols: [JSON_SUBPROTOCOL], timeoutMs: 10_000 });
          if (r.raw) r.raw.close();
          assert.equal(r.status, 500, `${v.name}, attempt ${attempt}: upgrade status (body ${JSON.stringify(r.body)})`);
        }
        assert.ok(up.options().length >= 1, `${v.name}: abuse-protection OPTIONS was sent: ${JSON.stringify(up.summary())}`);
        for (const o of up.options()) {
          assert.equal(o.headers["webhook-request-origin"], endpointHost(ctx.hub), `${v.name}: OPTIONS origin`);
          assert.equal(o.headers["ce-awpsversion"], "1.0", `${v.name}: OPTIONS ce-awpsversion`);
        }
        const problems = await waitFor(async () => {
          const all = await eventHandlerProblems(ctx.hub);
          const mine = all.filter((p) => typeof p.url === "string" && p.url.startsWith(up.base));
          return mine.length ? mine : null;
        }, { timeoutMs: 5_000, what: `${v.name}: a problem for ${up.base} in GET /admin/event-handlers` });
        for (const p of problems) {
          assert.equal(typeof p.reason, "string", `${v.name}: reason in ${JSON.stringify(p)}`);
          assert.equal(typeof p.at, "string", `${v.name}: at in ${JSON.stringify(p)}`);
        }
        assert.ok(problems.some((p) => /abuse|allowed.?origin/i.test(p.reason)),
          `${v.name}: the reason mentions abuse protection / allowed origin: ${JSON.stringify(problems)}`);
        t.diagnostic(`${v.name}: ${JSON.stringify(problems[0])}`);
        await sleep(300); // a late event would show up here
        assert.deepEqual(up.posts().map((r) => r.describe()), [], `${v.name}: no POST reached the refusing upstream`);
      } finally {
        await up.close();
      }
    }
  }));
