// ce-signature and key rotation, from the app server's side.
//
// The app server validates every request the way the .NET SDK does (split ce-signature on ",",
// accept if any entry equals "sha256=" + hex(HMAC-SHA256(key, connectionId)) ignoring case, the
// WebHook-Request-Origin mapped to the endpoint host) and answers 401 if that fails. Configured
// with ONLY the secondary key, it must accept every event (connect, user events, disconnected)
// while the primary key is regenerated several times with events flowing. Validators holding the
// new primary must accept events sent right after a regeneration; ones holding the old primary
// must reject them.

import { test } from "node:test";
import assert from "node:assert/strict";
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";
import { waitFor } from "./harness.mjs";
import { withDataplane, sleep, upgrade, clientUrl, JSON_SUBPROTOCOL } from "./dataplane.mjs";
import {
  startUpstream, configureHub, handlerSetting, waitEvent, ceSig, dotnetValidate, endpointHost,
} from "./upstream.mjs";

const T = { timeout: 90_000 };
const ROUNDS = 3;

test("ce-signature test vectors (wire contract) against the validator used below", () => {
  const cid = "0f9c97a2f0bf4706afe87a14e0797b11";
  const v1 = "sha256=7767effcb3946f3e1de039df4b986ef02c110b1469d02c0a06f41b3b727ab561";
  assert.equal(ceSig("7aab239577fd4f24bc919802fb629f5f", cid), v1);
  const primary = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
  const secondary = "abcdefghijklmnopqrstuvwxyz0123456789abcdefgh";
  const v2 = "sha256=8805d739a12d46f22bcb15382a8c1c2bf38ae8f04566017bd613d5ef47cafe2c,sha256=3a56e6c1afb7a7afba9a054ef8589e97442e7bef351f92ebc010953c3848a562";
  assert.equal(`${ceSig(primary, cid)},${ceSig(secondary, cid)}`, v2);
  const h = (sig) => ({ "webhook-request-origin": "localhost", "ce-connectionid": cid, "ce-signature": sig });
  const at = (key) => ({ host: "localhost", key });
  assert.equal(dotnetValidate(h(v1), at("7aab239577fd4f24bc919802fb629f5f")), true);
  assert.equal(dotnetValidate(h(v1.toUpperCase().replace("SHA256=", "sha256=")), at("7aab239577fd4f24bc919802fb629f5f")), true, "hex case ignored");
  assert.equal(dotnetValidate(h(v2), at(primary)), true);
  assert.equal(dotnetValidate(h(v2), at(secondary)), true);
  assert.equal(dotnetValidate(h(v2), at("7aab239577fd4f24bc919802fb629f5f")), false, "another key");
  assert.equal(dotnetValidate(h(v2.replace(",", ", ")), at(secondary)), false, "no trimming after the comma, like .NET");
  assert.equal(dotnetValidate({ ...h(v2), "webhook-request-origin": "localhost:8080" }, at(primary)), false, "origin must be the bare host");
});

/**
 * Express app: a .NET-style signature gate (secondary key only) in front of WebPubSubEventHandler.
 * Every POST gets `gate: true|false`; rejected ones are answered 401.
 */
async function gatedApp(hubName, host, secondaryKey) {
  const seen = { disconnected: [] };
  const handler = new WebPubSubEventHandler(hubName, {
    handleConnect: (req, res) => res.success({ userId: `user-${req.query?.n?.[0] ?? "x"}` }),
    handleUserEvent: (req, res) => res.success(`ok:${req.data}`, "text"),
    onDisconnected: (req) => seen.disconnected.push(req),
  });
  const app = express();
  const gate = [];
  app.use((req, res, next) => {
    if (req.method !== "POST") return next();
    const ok = dotnetValidate(req.headers, { host, key: secondaryKey });
    gate.push({ connectionId: req.headers["ce-connectionid"], type: req.headers["ce-type"], ok });
    if (!ok) return res.status(401).send("signature check failed");
    return next();
  });
  app.use(handler.getMiddleware());
  const up = await startUpstream(app);
  up.seen = seen;
  up.gate = gate;
  return up;
}

test("rotation: a validator with only the secondary key accepts every event while the primary is regenerated; new primary accepted, old one rejected right after", T,
  withDataplane(async (ctx, t) => {
    const host = endpointHost(ctx.hub);
    const keys0 = ctx.keys;
    const up = await gatedApp(ctx.hubName, host, keys0.secondaryKey);
    // Tokens and REST calls use the secondary key, which is not rotated here.
    const svc = ctx.serviceFor(keys0.secondaryConnectionString);
    try {
      await configureHub(ctx.hub, ctx.hubName, {
        eventHandlers: [handlerSetting(`${up.base}/api/webpubsub/hubs/{hub}/`)],
      });
      const long = await ctx.connect({ protocol: "reliable", service: svc, label: "long-lived", transformUrl: (u) => `${u}&n=long` });
      assert.equal(long.connected[0].userId, "user-long", "connect went through the gated app");

      // The live signature is exactly sig(primary),sig(secondary) of the keys `key show` printed.
      const firstConnect = await waitEvent(up, "connect", long.connectionId);
      assert.equal(firstConnect.headerLines("ce-signature").length, 1, "one ce-signature line");
      assert.equal(firstConnect.headers["ce-signature"],
        `${ceSig(keys0.primaryKey, long.connectionId)},${ceSig(keys0.secondaryKey, long.connectionId)}`,
        "ce-signature = sig(primary),sig(secondary)");

      // Events flowing all the time: the long-lived client sends a stream of acked user events.
      const ticks = { sent: [], failed: [], stop: false };
      const ticker = (async () => {
        for (let n = 0; !ticks.stop && n < 5_000; n++) {
          const startedAt = Date.now();
          try {
            await long.client.sendEvent("tick", `${n}@${startedAt}`, "text");
            ticks.sent.push({ n, startedAt });
          } catch (e) {
            ticks.failed.push(`tick ${n}: ${e.name} ${JSON.stringify(e.errorDetail ?? e.message)}`);
            if (ticks.failed.length > 10) return;
          }
          await sleep(10);
        }
      })();

      const rounds = [];
      let primary = keys0.primaryKey;
      for (let round = 1; round <= ROUNDS; round++) {
        const ticksBefore = ticks.sent.length;
        await waitFor(() => ticks.sent.length >= ticksBefore + 3 || ticks.failed.length > 0, {
          timeoutMs: 5_000, what: `round ${round}: events flowing before the regeneration`,
        });
        const regenStarted = Date.now();
        const next = await ctx.hub.keyRegenerate("primary");
        const regenDone = Date.now();
        assert.notEqual(next.primaryKey, primary, `round ${round}: a new primary`);
        assert.equal(next.secondaryKey, keys0.secondaryKey, `round ${round}: secondary unchanged`);
        const r = { round, oldPrimary: primary, newPrimary: next.primaryKey, regenStarted, regenDone };
        primary = next.primaryKey;

        // Right after the regeneration: a new connection, a user event and a REST close.
        const c = await ctx.connect({ protocol: "json", service: svc, label: `after-round-${round}`, transformUrl: (u) => `${u}&n=r${round}` });
        r.connectionId = c.connectionId;
        assert.equal(c.connected[0].userId, `user-r${round}`, `round ${round}: connect accepted by the gated app`);
        await c.client.sendEvent("after", `round-${round}`, "text");
        await c.waitMessages((ms) => ms.some((m) => m.data === `ok:round-${round}`), `round ${round}: user event answered`);
        await svc.closeConnection(c.connectionId, { reason: `round-${round}` });
        await waitFor(() => up.seen.disconnected.some((d) => d.context.connectionId === c.connectionId), {
          timeoutMs: 5_000, what: `round ${round}: disconnected accepted by the gated app; upstream got ${JSON.stringify(up.summary().slice(-10))}`,
        });
        const ticksAfter = ticks.sent.length;
        await waitFor(() => ticks.sent.length >= ticksAfter + 3 || ticks.failed.length > 0, {
          timeoutMs: 5_000, what: `round ${round}: events flowing after the regeneration`,
        });
        rounds.push(r);
      }
      ticks.stop = true;
      await ticker;
      await svc.closeConnection(long.connectionId, { reason: "done" });
      await waitFor(() => up.seen.disconnected.some((d) => d.context.connectionId === long.connectionId), {
        timeoutMs: 5_000, what: "the long-lived connection's disconnected accepted by the gated app",
      });

      // Every event passed the secondary-only validator, and nothing failed on the client side.
      assert.deepEqual(ticks.failed, [], "no user event failed during the rotations");
      const rejected = up.gate.filter((g) => !g.ok);
      assert.deepEqual(rejected, [], "the secondary-only validator accepted every event");
      const kinds = new Set(up.gate.map((g) => g.type));
      for (const k of ["connect", "connected", "disconnected"]) assert.ok(kinds.has(`azure.webpubsub.sys.${k}`), `${k} events were validated`);
      assert.ok(kinds.has("azure.webpubsub.user.tick") && kinds.has("azure.webpubsub.user.after"), "user events were validated");

      // Right after each regeneration: new primary accepted, old primary rejected.
      const problems = [];
      for (const r of rounds) {
        const next = rounds.find((x) => x.round === r.round + 1);
        const fresh = up.posts().filter((p) => {
          if (p.connectionId === r.connectionId) return true;
          // Ticks whose send started after this regeneration returned, before the next one started.
          if (p.eventName !== "tick") return false;
          const startedAt = Number((p.text ?? "").split("@")[1]);
          return startedAt > r.regenDone && (!next || startedAt < next.regenStarted) && p.at < (next?.regenStarted ?? Infinity);
        });
        const kindsFresh = new Set(fresh.map((p) => p.eventName));
        for (const k of ["connect", "connected", "after", "disconnected", "tick"]) {
          if (!kindsFresh.has(k)) problems.push(`round ${r.round}: no ${k} event after the regeneration to check`);
        }
        for (const p of fresh) {
          const what = `round ${r.round} ${p.eventName} (${p.connectionId})`;
          if (!dotnetValidate(p.headers, { host, key: r.newPrimary })) problems.push(`${what}: rejected by a validator with the NEW primary; ce-signature ${p.headers["ce-signature"]}`);
          if (dotnetValidate(p.headers, { host, key: r.oldPrimary })) problems.push(`${what}: still accepted by a validator with the OLD primary`);
          const want = `${ceSig(r.newPrimary, p.connectionId)},${ceSig(keys0.secondaryKey, p.connectionId)}`;
          if (p.headers["ce-signature"] !== want) problems.push(`${what}: ce-signature ${p.headers["ce-signature"]}, want ${want}`);
        }
        t.diagnostic(`round ${r.round}: ${fresh.length} events checked after the regeneration`);
      }
      assert.deepEqual(problems, []);
      t.diagnostic(`${up.gate.length} events validated with the secondary key, ${ticks.sent.length} ticks`);
    } finally {
      await up.close();
    }
  }));

test("the old primary stops working for app servers at once: a validator holding it rejects the next connect (its 401 reaches the client)", T,
  withDataplane(async (ctx) => {
    // A .NET-style app holding the PRIMARY key only: after a primary regeneration it must refuse
    // (its key is no longer listed in ce-signature), and the 401 reaches the connecting client.
    const host = endpointHost(ctx.hub);
    const up = await gatedApp(ctx.hubName, host, ctx.keys.primaryKey);
    const svc = ctx.serviceFor(ctx.keys.secondaryConnectionString);
    try {
      await configureHub(ctx.hub, ctx.hubName, { eventHandlers: [handlerSetting(`${up.base}/api/webpubsub/hubs/{hub}/`)] });
      const before = await ctx.connect({ protocol: "json", service: svc, transformUrl: (u) => `${u}&n=before` });
      assert.equal(before.connected[0].userId, "user-before");
      await ctx.hub.keyRegenerate("primary");
      const { token } = await svc.getClientAccessToken({ userId: "after" });
      const r = await upgrade(clientUrl(ctx.hub, ctx.hubName, token, "&n=after"), { protocols: [JSON_SUBPROTOCOL] });
      if (r.raw) r.raw.close();
      const connects = up.gate.filter((g) => g.type === "azure.webpubsub.sys.connect");
      assert.equal(connects.length, 2, `two connect events: ${JSON.stringify(up.gate)}`);
      assert.equal(connects[1].ok, false, "the old-primary validator rejected the connect after the regeneration");
      assert.equal(r.status, 401, `the app's 401 is the client's upgrade status (body ${JSON.stringify(r.body)})`);
    } finally {
      await up.close();
    }
  }));
