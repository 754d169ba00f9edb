// Identity-provider tokens instead of access keys: the official service SDK built with a
// TokenCredential (no connection string) against a local OpenID Connect issuer, over HTTPS as the
// SDK requires. Every send and management operation, a client token from getClientAccessToken
// used by the official client SDK, the Reader role, and every refusal the issue names.

import { test } from "node:test";
import assert from "node:assert/strict";
import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { WebPubSubClient } from "@azure/web-pubsub-client";
import { startHubbub, uniqueHub, waitFor } from "./harness.mjs";
import { upgrade } from "./dataplane.mjs";
import { AUDIENCE, OWNER, READER, credential, hmacToken, selfSignedCertificate, signingKey, startIssuer } from "./oidc.mjs";

// Hubbub's certificate is self-signed; the SDKs only send bearer tokens over HTTPS.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

const T = { timeout: 90_000 };

async function restError(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail("the call was expected to be refused");
}

async function withIdentity(fn, extraArgs = []) {
  const tls = selfSignedCertificate();
  const rsa = signingKey("RS256", "shared-kid");
  const ec = signingKey("ES256");
  const issuer = await startIssuer([rsa, ec]);
  // A second trusted issuer whose key has the same kid as the first one's.
  const impostor = signingKey("RS256", "shared-kid");
  const other = await startIssuer([impostor]);
  const hub = await startHubbub({
    extraArgs: [
      "--tls-cert", tls.cert, "--tls-key", tls.key,
      "--oidc-issuer", issuer.url, "--oidc-issuer", other.url,
      ...extraArgs,
    ],
  });
  try {
    await fn({ hub, issuer, other, rsa, ec, impostor });
  } finally {
    await hub.stop();
    await issuer.close();
    await other.close();
    tls.cleanup();
  }
}

test("a TokenCredential with the Owner role does every REST operation, and its client tokens connect", T, () =>
  withIdentity(async ({ hub, issuer, rsa, ec }) => {
    const hubName = uniqueHub("idp");
    const trace = new AbortController();
    const traced = fetch(`${hub.adminUrl}/admin/trace?category=rest`, {
      headers: { Authorization: `Bearer ${await hub.adminToken()}` }, signal: trace.signal,
    });
    const owner = credential(() => rsa.token(issuer.claims([OWNER])));
    const service = new WebPubSubServiceClient(hub.endpoint, owner, hubName);
    assert.match(hub.endpoint, /^https:/);

    // A client token minted through :generateToken, used by the official client.
    const { url } = await service.getClientAccessToken({ userId: "ann", roles: ["webpubsub.joinLeaveGroup"] });
    assert.deepEqual([...new Set(owner.asked)], [`${AUDIENCE}/.default`], "the SDK asks for Web PubSub's scope");
    const client = new WebPubSubClient(url, { autoReconnect: false });
    const received = [];
    client.on("server-message", (e) => received.push(e.message.data));
    client.on("group-message", (e) => received.push(`${e.message.group}:${e.message.data}`));
    let connectionId;
    client.on("connected", (e) => { connectionId = e.connectionId; });
    await client.start();
    await waitFor(() => connectionId, { what: "connected" });
    try {
      await service.sendToAll("to all", { contentType: "text/plain" });
      await service.sendToUser("ann", "to ann", { contentType: "text/plain" });
      await service.sendToConnection(connectionId, "to the connection", { contentType: "text/plain" });
      await service.group("room").addConnection(connectionId);
      assert.equal(await service.groupExists("room"), true);
      await service.group("room").sendToAll("to room", { contentType: "text/plain" });
      await waitFor(() => received.length >= 4, { what: `4 messages, got ${JSON.stringify(received)}` });
      assert.deepEqual(received, ["to all", "to ann", "to the connection", "room:to room"]);
      assert.equal(await service.userExists("ann"), true);
      assert.equal(await service.connectionExists(connectionId), true);
      await service.grantPermission(connectionId, "sendToGroup", { targetName: "room" });
      assert.equal(await service.hasPermission(connectionId, "sendToGroup", { targetName: "room" }), true);
      await service.revokePermission(connectionId, "sendToGroup", { targetName: "room" });
      await service.group("room").removeConnection(connectionId);
      await service.group("room").addUser("ann");
      await service.group("room").removeUser("ann");
      await service.removeUserFromAllGroups("ann");
      await service.closeConnection(connectionId, { reason: "done" });
      await waitFor(async () => !(await service.connectionExists(connectionId)), { what: "closed" });
    } finally {
      client.stop();
    }

    // The live trace names the identity of each call.
    const stream = (await traced).body.getReader();
    let text = "";
    while (!text.includes(`"caller":"oidc:app-reports@${issuer.url}"`)) {
      const { value, done } = await stream.read();
      assert.ok(!done, `the trace ended: ${text}`);
      text += new TextDecoder().decode(value);
    }
    trace.abort();

    // ES256 tokens of the same issuer work as well.
    const es = new WebPubSubServiceClient(hub.endpoint, credential(() => ec.token(issuer.claims([OWNER]))), hubName);
    await es.sendToAll("es256", { contentType: "text/plain" });

    // Identity callers are counted by issuer, and listed by issuer and subject.
    const metrics = await (await hub.admin("GET", "/metrics")).text();
    assert.match(metrics, new RegExp(`hubbub_identity_authentications_total\\{issuer="${issuer.url}",kind="rest"\\} ([2-9]|\\d\\d)`));
    const usage = await (await hub.admin("GET", "/admin/identities/usage")).json();
    assert.equal(usage.value.length, 1);
    assert.equal(usage.value[0].subject, "app-reports");
    assert.equal(usage.value[0].issuer, issuer.url);
    assert.ok(usage.value[0].restRequests >= 15, JSON.stringify(usage.value[0]));
  }));

test("the Reader role reads; every bad token is refused with what failed", T, () =>
  withIdentity(async ({ hub, issuer, other, rsa, impostor }) => {
    const hubName = uniqueHub("idp");
    const as = (mint) => new WebPubSubServiceClient(hub.endpoint, credential(mint), hubName);

    const reader = as(() => rsa.token(issuer.claims([READER])));
    assert.equal(await reader.groupExists("nobody"), false);
    const forbidden = await restError(reader.sendToAll("no", { contentType: "text/plain" }));
    assert.equal(forbidden.statusCode, 403);
    assert.match(forbidden.message, /owner role/);

    const send = (client) => client.sendToAll("x", { contentType: "text/plain" });
    const noRole = await restError(send(as(() => rsa.token(issuer.claims(["Some Other Role"])))));
    assert.equal(noRole.statusCode, 403);
    assert.match(noRole.message, /none of the roles/);

    const cases = [
      // The other trusted issuer's key has the same kid: it must not vouch for this issuer.
      ["another issuer's key with the same kid", () => impostor.token(issuer.claims([OWNER])), /signature does not verify/],
      ["an issuer nobody trusts", () => rsa.token({ ...issuer.claims([OWNER]), iss: "https://login.example.org/" }), /not a trusted identity provider/],
      ["the wrong audience", () => rsa.token(issuer.claims([OWNER], { aud: "https://management.azure.com" })), /audience/],
      ["an expired token", () => rsa.token(issuer.claims([OWNER], { exp: Math.floor(Date.now() / 1000) - 3600 })), /expired/],
      ["alg none", () => rsa.token(issuer.claims([OWNER]), { alg: "none" }).split(".").slice(0, 2).join(".") + ".", /algorithm 'none'/],
      ["HS256 keyed with the issuer's public key", () => hmacToken(issuer.claims([OWNER]), JSON.stringify(rsa.jwk), rsa.kid), /./],
    ];
    for (const [what, mint, message] of cases) {
      const token = mint();
      const e = await restError(send(as(() => token)));
      assert.equal(e.statusCode, 401, `${what}: ${e.message}`);
      assert.match(e.message, message, what);
      assert.ok(!e.message.includes(token), `${what}: the token is not echoed`);
    }
    // The other issuer's own tokens are fine.
    assert.equal(await as(() => impostor.token(other.claims([OWNER]))).groupExists("g"), false);

    // The issuer rotates its keys: a token of the new key is accepted at once (the keys are
    // fetched again), one of the removed key no longer is.
    const old = rsa.token(issuer.claims([OWNER]));
    const next = signingKey("RS256");
    issuer.keys = [next];
    assert.equal(await as(() => next.token(issuer.claims([OWNER]))).groupExists("g"), false);
    const removed = await restError(send(as(() => old)));
    assert.equal(removed.statusCode, 401);
    assert.match(removed.message, /no signing key/);

    const metrics = await (await hub.admin("GET", "/metrics")).text();
    for (const reason of ["bad_signature", "issuer", "audience", "expired", "algorithm", "unknown_key", "role"]) {
      assert.match(metrics, new RegExp(`hubbub_auth_failures_total\\{kind="identity",reason="${reason}"\\} [1-9]`), reason);
    }
  }));

test("with local auth disabled, connection strings fail clearly while credentials and generated client tokens work", T, () =>
  withIdentity(async ({ hub, issuer, rsa }) => {
    const hubName = uniqueHub("nolocal");
    const keys = await hub.keyShow();
    const withKey = new WebPubSubServiceClient(keys.primaryConnectionString, hubName);
    const refused = await restError(withKey.sendToAll("no", { contentType: "text/plain" }));
    assert.equal(refused.statusCode, 401);
    assert.match(refused.message, /local auth is disabled/);
    // A client token the SDK signs itself with the key: refused at the upgrade.
    const { url: keyUrl } = await withKey.getClientAccessToken({ userId: "k" });
    const upgraded = await upgrade(keyUrl);
    assert.equal(upgraded.status, 401);
    assert.match(upgraded.body, /local auth is disabled/);

    // A credential works, and the client token Hubbub mints for it connects.
    const service = new WebPubSubServiceClient(hub.endpoint, credential(() => rsa.token(issuer.claims([OWNER]))), hubName);
    const { url } = await service.getClientAccessToken({ userId: "idp-user" });
    const client = new WebPubSubClient(url, { autoReconnect: false });
    const got = [];
    client.on("server-message", (e) => got.push(e.message.data));
    await client.start();
    try {
      await service.sendToAll("still served", { contentType: "text/plain" });
      await waitFor(() => got.length === 1, { what: "the message" });
      assert.deepEqual(got, ["still served"]);
    } finally {
      client.stop();
    }

    // Administrators still see the keys, and may turn local auth back on (audited both ways):
    // here an identity with the admin role, no admin token file needed.
    assert.deepEqual(await (await hub.admin("GET", "/admin/local-auth")).json(), { disabled: true });
    const asAdmin = rsa.token(issuer.claims(["Hubbub Administrator"]));
    const notAdmin = rsa.token(issuer.claims([OWNER]));
    assert.equal((await hub.admin("GET", "/admin/keys", { token: notAdmin })).status, 403, "the owner role is not an admin");
    assert.equal((await hub.admin("GET", "/admin/keys", { token: asAdmin })).status, 200);
    const enabled = await hub.admin("PUT", "/admin/local-auth", { body: { disabled: false }, token: asAdmin });
    assert.equal(enabled.status, 200);
    await withKey.sendToAll("keys again", { contentType: "text/plain" });
    const audit = await (await hub.admin("GET", "/admin/audit")).json();
    const switches = audit.value.filter((e) => e.event.startsWith("local_auth_")).map((e) => [e.event, e.actor]);
    assert.deepEqual(switches, [["local_auth_disabled", "config"], ["local_auth_enabled", `oidc:app-reports@${issuer.url}`]]);
  }, ["--disable-local-auth"]));
