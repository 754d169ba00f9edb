// Bad answers from the event handler. A plain HTTP app answers `connect` according to the
// client's `mode` query parameter (it reads the body first) and user events by event name:
//   ok        200 {"userId": "ok-user"}
//   nonjson   200, Content-Type application/json, body that is not JSON      -> client gets 500
//   unknown   200 JSON with unknown fields next to userId/groups             -> accepted, fields ignored
//   badsub    200 {"subprotocol": <one the client did not offer>}            -> 500
//   huge      200 JSON body over 1 MB                                        -> 500
//   hang      never answers (Hubbub runs with --event-handler-timeout-secs 2) -> 500 after the timeout
//   redirect  302 to another path on the app                                 -> 500, redirect not followed
//   reject403 403                                                            -> 403
// User event "fail500" (or a simple client's frame "fail500") is answered 500: the json client's
// ack fails with InvocationFailed and the connection stays usable; a simple client is closed.
// A refused connection must not be left half-open.

import { test } from "node:test";
import assert from "node:assert/strict";
import { WebPubSubClient } from "@azure/web-pubsub-client";
import { waitFor } from "./harness.mjs";
import {
  withDataplane, JSON_SUBPROTOCOL, upgrade, clientUrl, expectAckError, withTimeout, sleep, protocolFor,
} from "./dataplane.mjs";
import { startUpstream, configureHub, handlerSetting, waitEvent } from "./upstream.mjs";

const TIMEOUT_SECS = 2;
const EXTRA = { extraArgs: ["--event-handler-timeout-secs", String(TIMEOUT_SECS)], hubPrefix: "bad" };
const T = { timeout: 60_000 };

/** The app. `pending` holds responses of `hang` requests (ended when the app closes). */
async function badApp() {
  const pending = [];
  let up;
  up = await startUpstream((req, res) => {
    if (req.method === "OPTIONS") {
      res.writeHead(200, { "WebHook-Allowed-Origin": "*" });
      res.end();
      return;
    }
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      if (!req.url.startsWith("/upstream/")) {
        // The redirect target: must never be requested.
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"userId":"redirected"}');
        return;
      }
      const type = req.headers["ce-type"] ?? "";
      const json = (status, obj, headers = {}) => {
        res.writeHead(status, { "content-type": "application/json; charset=utf-8", ...headers });
        res.end(typeof obj === "string" ? obj : JSON.stringify(obj));
      };
      if (type === "azure.webpubsub.sys.connect") {
        let mode = "ok";
        try { mode = JSON.parse(body.toString("utf8")).query?.mode?.[0] ?? "ok"; } catch { /* ok */ }
        switch (mode) {
          case "ok": return json(200, { userId: "ok-user" });
          case "nonjson": return json(200, "<html>this is not JSON</html>");
          case "unknown": return json(200, {
            userId: "unknown-user", groups: ["g-unknown"], futureField: { nested: [1, 2] }, "x-extra": "y", roles: [],
          });
          case "badsub": return json(200, { userId: "badsub-user", subprotocol: "not.offered.v1" });
          case "simplebadsub": return json(200, { userId: "simplebadsub-user", subprotocol: JSON_SUBPROTOCOL });
          case "huge": return json(200, { userId: "huge-user", pad: "x".repeat(1_200_000) });
          case "hang": pending.push(res); return undefined;
          case "redirect":
            res.writeHead(302, { location: `${up.base}/redirected-target/connect` });
            res.end();
            return undefined;
          case "reject403":
            res.writeHead(403, { "content-type": "text/plain" });
            res.end("not you");
            return undefined;
          default: return json(400, { error: `unknown mode ${mode}` });
        }
      }
      if (type.startsWith("azure.webpubsub.user.")) {
        const text = body.toString("utf8");
        if (req.headers["ce-eventname"] === "fail500" || text === "fail500") {
          res.writeHead(500, { "content-type": "text/plain" });
          res.end("upstream exploded");
          return undefined;
        }
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
        res.end(`echo:${text}`);
        return undefined;
      }
      res.writeHead(200);
      res.end();
      return undefined;
    });
  });
  const close = up.close;
  up.close = async () => {
    for (const r of pending) { try { r.destroy(); } catch { /* gone */ } }
    await close();
  };
  /** The connect POST of the attempt with `mode` (waits until it arrived). */
  up.connectFor = (mode) => waitFor(() => up.events("connect").find((r) => r.body !== null && r.json?.query?.mode?.[0] === mode), {
    timeoutMs: 5_000, what: `a connect event with mode=${mode}; upstream got ${JSON.stringify(up.summary())}`,
  });
  return up;
}

async function setup(ctx) {
  const up = await badApp();
  await configureHub(ctx.hub, ctx.hubName, { eventHandlers: [handlerSetting(`${up.base}/upstream/{hub}/{event}`)] });
  return up;
}

/** One upgrade attempt with a fresh token and `mode`. */
async function attempt(ctx, mode, { protocols = [JSON_SUBPROTOCOL], timeoutMs = 5_000 } = {}) {
  const { token } = await ctx.service.getClientAccessToken();
  const started = Date.now();
  const r = await upgrade(clientUrl(ctx.hub, ctx.hubName, token, `&mode=${mode}`), { protocols, timeoutMs });
  r.elapsedMs = Date.now() - started;
  if (r.raw) ctx.track(r.raw);
  return r;
}

/**
 * After refused attempts: none of their connections exists, and none got a `connected` event.
 * A good connection that is opened and closed afterwards serves as the "everything sent" marker.
 */
async function assertNothingLeft(ctx, up, connectionIds) {
  for (const id of connectionIds) {
    assert.equal(await ctx.service.connectionExists(id), false, `connection ${id} does not exist`);
  }
  const probe = await attempt(ctx, "ok");
  assert.equal(probe.status, 101, "a good connection still works");
  const probeId = (await probe.raw.connectedMessage()).connectionId;
  probe.raw.close();
  await waitEvent(up, "disconnected", probeId);
  await sleep(200);
  const late = up.posts().filter((r) => connectionIds.includes(r.connectionId) && r.type !== "azure.webpubsub.sys.connect");
  assert.deepEqual(late.map((r) => r.describe()), [], "no event besides connect for a refused connection");
}

test("connect answered with a non-JSON 200, a subprotocol the client did not offer, or a body over 1 MB: the client gets 500", T,
  withDataplane(async (ctx, t) => {
    const up = await setup(ctx);
    try {
      const ids = [];
      const results = [];
      for (const [mode, protocols] of [
        ["nonjson", [JSON_SUBPROTOCOL]],
        ["badsub", [JSON_SUBPROTOCOL]],
        ["simplebadsub", []], // a simple client offered nothing, the handler picks json.webpubsub.azure.v1
        ["huge", [JSON_SUBPROTOCOL]],
      ]) {
        const r = await attempt(ctx, mode, { protocols, timeoutMs: 10_000 });
        const ev = await up.connectFor(mode);
        ids.push(ev.connectionId);
        results.push(`${mode}: ${r.status}`);
        t.diagnostic(`${mode}: upgrade ${r.status} ${JSON.stringify(r.body ?? "")}${r.status === 101 ? ` protocol ${JSON.stringify(r.protocol)}` : ""}`);
      }
      assert.deepEqual(results, ["nonjson: 500", "badsub: 500", "simplebadsub: 500", "huge: 500"]);

      // The official client sees a failed start.
      const { url } = await ctx.service.getClientAccessToken();
      const client = new WebPubSubClient(`${url}&mode=nonjson`, {
        protocol: protocolFor("json"), autoReconnect: false, reconnectRetryOptions: { maxRetries: 0 },
      });
      try {
        const err = await withTimeout(client.start().then(() => null, (e) => e), 10_000, "WebPubSubClient.start() with a non-JSON connect answer");
        assert.ok(err, "start() rejects");
        t.diagnostic(`official client start(): ${err.message}`);
      } finally {
        try { client.stop(); } catch { /* stopped */ }
      }
      await assertNothingLeft(ctx, up, ids);
    } finally {
      await up.close();
    }
  }, EXTRA));

test("connect answered with unknown JSON fields: accepted, userId and groups applied", T,
  withDataplane(async (ctx) => {
    const up = await setup(ctx);
    try {
      const r = await attempt(ctx, "unknown");
      assert.equal(r.status, 101, `upgrade status (body ${JSON.stringify(r.body)})`);
      const connected = await r.raw.connectedMessage();
      assert.equal(connected.userId, "unknown-user");
      await ctx.service.group("g-unknown").sendToAll("to-group", { contentType: "text/plain" });
      const m = await r.raw.waitJson((j) => j.type === "message", "group message");
      assert.deepEqual({ from: m.from, group: m.group, data: m.data }, { from: "group", group: "g-unknown", data: "to-group" });
    } finally {
      await up.close();
    }
  }, EXTRA));

test("connect that never answers: 500 after --event-handler-timeout-secs; a 302 is not followed: 500; a 403 is passed on", T,
  withDataplane(async (ctx, t) => {
    const up = await setup(ctx);
    try {
      const hang = await attempt(ctx, "hang", { timeoutMs: TIMEOUT_SECS * 1000 + 8_000 });
      t.diagnostic(`hang: ${hang.status} after ${hang.elapsedMs} ms`);
      assert.equal(hang.status, 500, `never-answering handler: upgrade status (body ${JSON.stringify(hang.body)})`);
      assert.ok(hang.elapsedMs >= TIMEOUT_SECS * 1000 - 300, `answered after the timeout, not before (${hang.elapsedMs} ms)`);
      assert.ok(hang.elapsedMs <= TIMEOUT_SECS * 1000 + 5_000, `answered soon after the timeout (${hang.elapsedMs} ms)`);
      const hangId = (await up.connectFor("hang")).connectionId;

      const redirect = await attempt(ctx, "redirect");
      assert.equal(redirect.status, 500, `302: upgrade status (body ${JSON.stringify(redirect.body)})`);
      const redirectId = (await up.connectFor("redirect")).connectionId;
      await sleep(200);
      const followed = up.requests.filter((r) => r.path.startsWith("/redirected-target"));
      assert.deepEqual(followed.map((r) => r.describe()), [], "the redirect was not followed");

      const rejected = await attempt(ctx, "reject403");
      assert.equal(rejected.status, 403, `403 from the handler: upgrade status (body ${JSON.stringify(rejected.body)})`);
      const rejectedId = (await up.connectFor("reject403")).connectionId;

      await assertNothingLeft(ctx, up, [hangId, redirectId, rejectedId]);
    } finally {
      await up.close();
    }
  }, EXTRA));

test("a user event answered 500: InvocationFailed ack, the connection stays usable; a simple client is closed", T,
  withDataplane(async (ctx, t) => {
    const up = await setup(ctx);
    try {
      const c = await ctx.connect({ protocol: "reliable", label: "json client", transformUrl: (u) => `${u}&mode=ok` });
      assert.equal(c.connected[0].userId, "ok-user");
      await expectAckError(assert, c.client.sendEvent("fail500", "boom", "text"), "InvocationFailed", "event answered 500");
      await c.client.sendEvent("echo", "still here", "text");
      await c.waitMessages((ms) => ms.some((m) => m.from === "server" && m.data === "echo:still here"), "echo after the failure");
      assert.equal(c.disconnected.length, 0, "no disconnected event");
      assert.equal(await ctx.service.connectionExists(c.connectionId), true, "connection still exists");
      assert.deepEqual(up.events("disconnected", c.connectionId).map((r) => r.describe()), [], "no disconnected event upstream");

      // Simple client in sendEvent mode: every frame is a `message` event; a 500 closes it.
      const simple = await attempt(ctx, "ok", { protocols: [] });
      assert.equal(simple.status, 101);
      const connect = up.events("connect").at(-1); // answered before the 101
      simple.raw.send("hello");
      await simple.raw.waitFrame((f) => f.text === "echo:hello", "echo frame");
      simple.raw.send("fail500");
      const closed = await simple.raw.waitClosed(5_000, "the simple client to be closed after a 500");
      t.diagnostic(`simple client closed after a 500: ${JSON.stringify(closed)}`);
      await waitFor(async () => !(await ctx.service.connectionExists(connect.connectionId)), {
        timeoutMs: 5_000, what: "the closed simple client to be gone",
      });
      const d = await waitEvent(up, "disconnected", connect.connectionId);
      assert.equal(typeof d.json?.reason, "string", `disconnected body ${d.text}`);
    } finally {
      await up.close();
    }
  }, EXTRA));
