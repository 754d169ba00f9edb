// Client connections: access tokens from getClientAccessToken and from the REST
// :generateToken operation, the `connected` event, groups from the token, and the
// upgrade errors (401, never 101) for missing or invalid tokens.

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomKey, decodeJwtPayload } from "./harness.mjs";
import {
  withDataplane, PROTOCOLS, JSON_SUBPROTOCOL, RELIABLE_SUBPROTOCOL, upgrade, clientUrl, clientToken,
  generateToken, rest, API, nowSecs, expectAckError, uid,
} from "./dataplane.mjs";

const T = { timeout: 60_000 };

for (const protocol of PROTOCOLS) {
  test(`${protocol}: connected event carries connectionId and userId; token groups are joined at connect`, T,
    withDataplane(async (ctx) => {
      const c = await ctx.connect({
        protocol, userId: "alice", roles: ["webpubsub.joinLeaveGroup"], groups: ["g1", "g2"],
      });
      assert.equal(c.connected.length, 1, "exactly one connected event");
      const { connectionId, userId } = c.connected[0];
      assert.equal(typeof connectionId, "string");
      assert.ok(connectionId.length > 0, "connectionId is not empty");
      assert.equal(encodeURIComponent(connectionId), connectionId, `connectionId is URL-safe: ${connectionId}`);
      assert.equal(userId, "alice");

      assert.equal(await ctx.service.connectionExists(connectionId), true, "connectionExists");
      assert.equal(await ctx.service.userExists("alice"), true, "userExists");
      assert.equal(await ctx.service.groupExists("g1"), true, "groupExists(g1) (joined through the token)");
      assert.equal(await ctx.service.groupExists("g2"), true, "groupExists(g2) (joined through the token)");

      // Group sends reach the client without any joinGroup; other groups do not.
      await ctx.service.group("g1").sendToAll("to-g1", { contentType: "text/plain" });
      await ctx.service.group("g2").sendToAll({ to: "g2" });
      await ctx.service.group("g3").sendToAll("to-g3", { contentType: "text/plain" });
      await ctx.flush([c]);
      assert.deepEqual(c.summary(), ["group:g1:text:to-g1", 'group:g2:json:{"to":"g2"}']);
      for (const m of c.data) {
        assert.equal(m.fromUserId, undefined, `REST group message has no fromUserId: ${JSON.stringify(m)}`);
        if (protocol === "reliable") {
          assert.equal(typeof m.sequenceId, "number", `reliable messages carry a sequenceId: ${JSON.stringify(m)}`);
        } else {
          assert.equal(m.sequenceId, undefined, `json-protocol messages carry no sequenceId: ${JSON.stringify(m)}`);
        }
      }
    }));
}

test("anonymous connections get userId null; every connection gets its own id", T, withDataplane(async (ctx) => {
  const a = await ctx.connect({ protocol: "json" });
  const b = await ctx.connect({ protocol: "reliable" });
  const u1 = await ctx.connect({ protocol: "json", userId: "same-user" });
  const u2 = await ctx.connect({ protocol: "reliable", userId: "same-user" });
  assert.equal(a.connected[0].userId ?? null, null, "anonymous userId");
  assert.equal(b.connected[0].userId ?? null, null, "anonymous userId");
  const ids = [a, b, u1, u2].map((c) => c.connectionId);
  assert.equal(new Set(ids).size, 4, `distinct connection ids: ${ids}`);
  // The raw connected frame says "userId": null for anonymous connections.
  const raw = await ctx.raw({ protocols: [JSON_SUBPROTOCOL] });
  const connected = await raw.connectedMessage();
  assert.ok("userId" in connected && connected.userId === null, `connected frame: ${JSON.stringify(connected)}`);
  // Both connections of the user receive a sendToUser.
  await ctx.service.sendToUser("same-user", "hi user", { contentType: "text/plain" });
  await ctx.flush([a, b, u1, u2]);
  assert.deepEqual(u1.summary(), ["server:text:hi user"]);
  assert.deepEqual(u2.summary(), ["server:text:hi user"]);
  assert.deepEqual(a.summary(), []);
  assert.deepEqual(b.summary(), []);
}));

test("the /client?hub=<hub> query form and the Authorization header connect like the path form", T,
  withDataplane(async (ctx) => {
    const { hub, hubName, keys } = ctx;
    const token = clientToken(hub, hubName, keys.primaryKey, { userId: "q-user", groups: ["qg"] });
    const forms = {
      "path form": `ws://${hub.publicAddr}/client/hubs/${hubName}?access_token=${token}`,
      "query form /client?hub=": `ws://${hub.publicAddr}/client?hub=${hubName}&access_token=${token}`,
      "query form /client/?hub=": `ws://${hub.publicAddr}/client/?hub=${hubName}&access_token=${token}`,
    };
    for (const [form, url] of Object.entries(forms)) {
      const r = await upgrade(url, { protocols: [RELIABLE_SUBPROTOCOL] });
      assert.equal(r.status, 101, `${form}: ${r.status} ${r.body ?? ""}`);
      ctx.track(r.raw);
      assert.equal(r.protocol, RELIABLE_SUBPROTOCOL, `${form}: subprotocol echoed`);
      const connected = await r.raw.connectedMessage();
      assert.equal(connected.userId, "q-user", `${form}: connected ${JSON.stringify(connected)}`);
      assert.equal(typeof connected.reconnectionToken, "string", `${form}: reliable connected carries reconnectionToken`);
      r.raw.connectionId = connected.connectionId;
      // The connection is in the token's group of this hub.
      await ctx.service.group("qg").sendToAll(`hello ${form}`, { contentType: "text/plain" });
      const m = await r.raw.waitJson((j) => j.type === "message" && j.data === `hello ${form}`, `${form}: group message`);
      assert.equal(m.group, "qg");
      r.raw.close();
    }
    // Token in the Authorization header instead of the query.
    const r = await upgrade(`ws://${hub.publicAddr}/client/hubs/${hubName}`, {
      protocols: [JSON_SUBPROTOCOL], headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(r.status, 101, `Authorization header: ${r.status} ${r.body ?? ""}`);
    ctx.track(r.raw);
    assert.equal((await r.raw.connectedMessage()).userId, "q-user");
  }));

test("upgrade errors: missing, malformed, badly signed, expired, not-yet-valid, wrong hub/host token -> 401", T,
  withDataplane(async (ctx) => {
    const { hub, hubName, keys } = ctx;
    const base = `ws://${hub.publicAddr}/client/hubs/${hubName}`;
    const t = nowSecs();
    const port = hub.publicPort;
    const tok = (opts) => clientToken(hub, hubName, keys.primaryKey, opts);
    const cases = {
      "no access_token": base,
      "empty access_token": `${base}?access_token=`,
      "not a JWT": `${base}?access_token=not-a-jwt`,
      "signed with an unknown key": `${base}?access_token=${clientToken(hub, hubName, randomKey(), { userId: "u" })}`,
      "signature of another token": `${base}?access_token=${tok({ userId: "u" }).split(".").slice(0, 2).join(".")}.${tok({ userId: "v" }).split(".")[2]}`,
      "expired an hour ago": `${base}?access_token=${tok({ iat: t - 7200, exp: t - 3600 })}`,
      "not valid before an hour from now": `${base}?access_token=${tok({ exp: t + 7200, extra: { nbf: t + 3600 } })}`,
      "without exp": `${base}?access_token=${tok({ extra: { exp: undefined } })}`,
      "aud for another hub": `${base}?access_token=${tok({ aud: `${hub.endpoint}/client/hubs/otherhub${uid()}` })}`,
      "aud for another host": `${base}?access_token=${tok({ aud: `http://other.example:${port}/client/hubs/${hubName}` })}`,
      "aud with a malformed path": `${base}?access_token=${tok({ aud: `${hub.endpoint}client/hubs/${hubName}` })}`,
      "aud for the REST API": `${base}?access_token=${tok({ aud: `${hub.endpoint}/api/hubs/${hubName}/:send?${API}` })}`,
      "token of hub A used on hub B": `ws://${hub.publicAddr}/client/hubs/b${uid()}?access_token=${tok({})}`,
      "query form with a token of another hub": `ws://${hub.publicAddr}/client?hub=${hubName}&access_token=${tok({ aud: `${hub.endpoint}/client/hubs/x${uid()}` })}`,
    };
    for (const [name, url] of Object.entries(cases)) {
      for (const protocols of [[RELIABLE_SUBPROTOCOL], []]) {
        const r = await upgrade(url, { protocols });
        if (r.status === 101) r.raw.close();
        assert.equal(r.status, 401, `${name} (${protocols[0] ?? "simple client"}): expected 401, got ${r.status} ${r.body ?? ""}`);
      }
    }
    // Controls: the same URL shapes with valid tokens connect (scheme of aud is ignored; both keys work).
    const valid = {
      "primary key": tok({ userId: "ok" }),
      "secondary key": clientToken(hub, hubName, keys.secondaryKey, { userId: "ok" }),
      "ws:// audience": tok({ aud: `ws://localhost:${port}/client/hubs/${hubName}` }),
      "https:// audience": tok({ aud: `https://localhost:${port}/client/hubs/${hubName}` }),
      "loopback-IP audience": tok({ aud: `http://127.0.0.1:${port}/client/hubs/${hubName}` }),
      "no iat": clientToken(hub, hubName, keys.primaryKey, { iat: null }),
    };
    for (const [name, token] of Object.entries(valid)) {
      const r = await upgrade(`${base}?access_token=${token}`, { protocols: [JSON_SUBPROTOCOL] });
      assert.equal(r.status, 101, `${name}: expected 101, got ${r.status} ${r.body ?? ""}`);
      ctx.track(r.raw);
      await r.raw.connectedMessage();
      r.raw.close();
    }
  }));

test("hub names are case-insensitive: a client of 'Mixed…' receives REST sends to the lower-case name", T,
  withDataplane(async (ctx) => {
    const mixed = `Mixed${uid()}`;
    const upperSvc = ctx.serviceFor(ctx.keys.primaryConnectionString, mixed);
    const lowerSvc = ctx.serviceFor(ctx.keys.primaryConnectionString, mixed.toLowerCase());
    const c = await ctx.connect({ service: upperSvc, protocol: "json", userId: "case-user" });
    await lowerSvc.sendToAll("lower", { contentType: "text/plain" });
    await upperSvc.sendToAll("upper", { contentType: "text/plain" });
    await c.waitMessages((ms) => ms.length >= 2, "both sends");
    assert.deepEqual(c.summary(), ["server:text:lower", "server:text:upper"]);
    assert.equal(await lowerSvc.connectionExists(c.connectionId), true);
  }));

test("REST :generateToken issues a client token whose userId, roles and groups work", T,
  withDataplane(async (ctx) => {
    const { hub, hubName, keys } = ctx;
    const unauth = await (async () => {
      const r = await fetch(`${hub.publicUrl}/api/hubs/${hubName}/:generateToken?${API}&userId=x`, {
        method: "POST", signal: AbortSignal.timeout(10_000),
      });
      return r.status;
    })();
    assert.equal(unauth, 401, ":generateToken without a bearer token");

    const token = await generateToken(hub, keys.primaryKey, hubName, {
      userId: "gen-user",
      roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.tg2"],
      groups: ["tg1"],
      minutesToExpire: 5,
    });
    const payload = decodeJwtPayload(token);
    assert.equal(payload.sub, "gen-user", `sub claim: ${JSON.stringify(payload)}`);
    const t = nowSecs();
    assert.ok(payload.exp > t + 60 && payload.exp <= t + 5 * 60 + 5, `exp about 5 minutes ahead: ${JSON.stringify(payload)}`);

    const c = await ctx.connect({ url: clientUrl(hub, hubName, token), protocol: "json", label: "generated-token client" });
    assert.equal(c.connected[0].userId, "gen-user");
    const other = await ctx.connect({ protocol: "json", groups: ["tg2"], label: "tg2 member" });

    // group from the token: joined at connect.
    await ctx.service.group("tg1").sendToAll("tg1 hello", { contentType: "text/plain" });
    await c.waitMessages((ms) => ms.some((m) => m.data === "tg1 hello"), "tg1 group message");
    // role webpubsub.joinLeaveGroup: any group.
    await c.client.joinGroup(`any${uid()}`);
    // role webpubsub.sendToGroup.tg2: exactly tg2.
    await c.client.sendToGroup("tg2", "from generated token", "text");
    await other.waitMessages((ms) => ms.some((m) => m.data === "from generated token"), "message published to tg2");
    assert.equal(other.data.find((m) => m.data === "from generated token").fromUserId, "gen-user");
    await expectAckError(assert, c.client.sendToGroup("tg1", "not allowed", "text"), "Forbidden", "sendToGroup tg1 without role");

    // The secondary key can call :generateToken too, and its tokens connect.
    const token2 = await generateToken(hub, keys.secondaryKey, hubName, { userId: "gen-2" });
    const c2 = await ctx.connect({ url: clientUrl(hub, hubName, token2), protocol: "reliable" });
    assert.equal(c2.connected[0].userId, "gen-2");
  }));

test("after salt regeneration, :generateToken tokens issued before are refused (401); SDK tokens still connect", T,
  withDataplane(async (ctx) => {
    const { hub, hubName, keys } = ctx;
    const before = await generateToken(hub, keys.primaryKey, hubName, { userId: "pre-salt" });
    const liveToken = await generateToken(hub, keys.primaryKey, hubName, { userId: "live" });
    const sdkToken = (await ctx.service.getClientAccessToken({ userId: "sdk" })).token;

    const probe = async (token, what) => {
      const r = await upgrade(clientUrl(hub, hubName, token), { protocols: [RELIABLE_SUBPROTOCOL] });
      if (r.status === 101) r.raw.close();
      return { what, status: r.status, body: r.body };
    };
    assert.equal((await probe(before, "generated token before rotation")).status, 101, "generated token works before");
    const live = await ctx.connect({ url: clientUrl(hub, hubName, liveToken), protocol: "reliable", label: "live" });

    await hub.keyRegenerate("salt");

    const refused = await probe(before, "generated token after salt regeneration");
    assert.equal(refused.status, 401, `token from :generateToken before the salt rotation: ${JSON.stringify(refused)}`);
    assert.equal((await probe(sdkToken, "SDK token")).status, 101, "SDK-minted token (access key) still connects");
    const after = await generateToken(hub, keys.primaryKey, hubName, { userId: "post-salt" });
    assert.equal((await probe(after, "new generated token")).status, 101, "a token generated after the rotation connects");

    // The connection made with the old generated token stays up.
    await ctx.service.sendToConnection(live.connectionId, "still here", { contentType: "text/plain" });
    await live.waitMessages((ms) => ms.some((m) => m.data === "still here"), "message after salt rotation");
    assert.equal(live.disconnected.length, 0, "no disconnected event");
  }));
