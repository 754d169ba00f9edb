// REST authentication on the data plane: bearer JWTs (HS256, access key as UTF-8 bytes)
// shaped exactly like the ones the official SDKs mint, and what happens when they are wrong.

import { test } from "node:test";
import assert from "node:assert/strict";
import { withHubbub, fetchWithTimeout, signJwt, uniqueHub } from "./harness.mjs";

const TIMEOUT = { timeout: 60_000 };
const API = "api-version=2024-12-01";
const now = () => Math.floor(Date.now() / 1000);

/** POST a small JSON message to `path` on the public listener with the given Authorization header. */
async function post(hub, path, authorization) {
  const headers = { "content-type": "application/json" };
  if (authorization !== undefined) headers.authorization = authorization;
  const res = await fetchWithTimeout(`${hub.publicUrl}${path}`, {
    method: "POST", headers, body: JSON.stringify({ hello: "world" }),
  });
  const text = await res.text();
  return { status: res.status, text, headers: res.headers };
}

/** The request must be rejected with the documented 401 error; returns the message. */
function assertUnauthorized(r, token, what) {
  assert.equal(r.status, 401, `${what}: status (body: ${r.text})`);
  let body;
  try {
    body = JSON.parse(r.text);
  } catch {
    assert.fail(`${what}: 401 body is not JSON: ${r.text}`);
  }
  assert.equal(body.code, "Unauthorized", `${what}: code`);
  assert.equal(typeof body.message, "string", `${what}: message`);
  assert.ok(body.message.length > 0, `${what}: empty message`);
  assert.ok(r.headers.get("x-ms-error-code"), `${what}: x-ms-error-code header`);
  if (token) {
    assert.ok(!r.text.includes(token), `${what}: body echoes the token`);
    const sig = token.split(".")[2];
    if (sig) assert.ok(!r.text.includes(sig), `${what}: body echoes the signature`);
  }
  return body.message;
}

async function setup(hub) {
  const keys = await hub.keyShow();
  const hubName = uniqueHub("Auth");
  const path = `/api/hubs/${hubName}/:send?${API}`;
  return { keys, hubName, path, aud: `${hub.endpoint}${path}` };
}

test("SDK-shaped tokens (JS, Python, .NET claim sets) signed with either key are accepted", TIMEOUT, withHubbub(async (hub) => {
  const { keys, path, aud } = await setup(hub);
  const t = now();
  const shapes = {
    js: { iat: t, exp: t + 3600, aud },
    python: { aud, exp: t + 60 },
    dotnet: { nbf: t, exp: t + 300, iat: t, aud },
    audienceWithLoopbackIp: { iat: t, exp: t + 3600, aud: `${hub.publicUrl}${path}` },
  };
  for (const [slot, key] of [["primary", keys.primaryKey], ["secondary", keys.secondaryKey]]) {
    for (const [shape, claims] of Object.entries(shapes)) {
      const r = await post(hub, path, `Bearer ${signJwt(claims, key)}`);
      assert.equal(r.status, 202, `${slot} key, ${shape} token: ${r.status} ${r.text}`);
    }
  }
}));

test("audience matching ignores the query string and accepts every send route", TIMEOUT, withHubbub(async (hub) => {
  const { keys, hubName } = await setup(hub);
  const t = now();
  const routes = [
    `/api/hubs/${hubName}/:send`,
    `/api/hubs/${hubName}/groups/group%201/:send`,
    `/api/hubs/${hubName}/users/user%2F1/:send`,
    `/api/hubs/${hubName}/connections/conn1/:send`,
  ];
  for (const route of routes) {
    const path = `${route}?${API}&excluded=c1&excluded=c2`;
    // Full URL incl. query (what the SDKs send) and the documented form without the query.
    for (const aud of [`${hub.endpoint}${path}`, `${hub.endpoint}${route}`]) {
      const r = await post(hub, path, `Bearer ${signJwt({ iat: t, exp: t + 3600, aud }, keys.primaryKey)}`);
      assert.equal(r.status, 202, `${route} with aud ${aud}: ${r.status} ${r.text}`);
    }
  }
}));

test("missing or malformed Authorization is 401 Unauthorized", TIMEOUT, withHubbub(async (hub) => {
  const { keys, path } = await setup(hub);
  assertUnauthorized(await post(hub, path, undefined), null, "no Authorization header");
  assertUnauthorized(await post(hub, path, "Bearer"), null, "empty bearer");
  assertUnauthorized(await post(hub, path, "Bearer not-a-jwt"), "not-a-jwt", "garbage bearer");
  assertUnauthorized(await post(hub, path, `Basic ${Buffer.from(`x:${keys.primaryKey}`).toString("base64")}`), null, "Basic auth");
  assertUnauthorized(await post(hub, path, keys.primaryKey), keys.primaryKey, "raw key as header");
}));

test("a token signed with an unknown key is rejected and the message names the signature", TIMEOUT, withHubbub(async (hub) => {
  const { aud, path } = await setup(hub);
  const t = now();
  const token = signJwt({ iat: t, exp: t + 3600, aud }, Buffer.alloc(32, 9).toString("base64"));
  const msg = assertUnauthorized(await post(hub, path, `Bearer ${token}`), token, "unknown key");
  assert.match(msg, /signature/i);
}));

test("the access key is used as UTF-8 text, not base64-decoded", TIMEOUT, withHubbub(async (hub) => {
  const { keys, aud, path } = await setup(hub);
  const t = now();
  const decoded = Buffer.from(keys.primaryKey, "base64");
  const token = signJwt({ iat: t, exp: t + 3600, aud }, decoded);
  assertUnauthorized(await post(hub, path, `Bearer ${token}`), token, "key bytes base64-decoded");
  const good = signJwt({ iat: t, exp: t + 3600, aud }, keys.primaryKey);
  assert.equal((await post(hub, path, `Bearer ${good}`)).status, 202);
}));

test("a tampered payload is rejected", TIMEOUT, withHubbub(async (hub) => {
  const { keys, aud, path } = await setup(hub);
  const t = now();
  const token = signJwt({ iat: t, exp: t + 60, aud }, keys.primaryKey);
  const [h, , s] = token.split(".");
  const forged = Buffer.from(JSON.stringify({ iat: t, exp: t + 86400 * 365, aud })).toString("base64url");
  const tampered = `${h}.${forged}.${s}`;
  const msg = assertUnauthorized(await post(hub, path, `Bearer ${tampered}`), tampered, "tampered payload");
  assert.match(msg, /signature/i);
}));

test("alg none and non-HS256 headers are rejected", TIMEOUT, withHubbub(async (hub) => {
  const { keys, aud, path } = await setup(hub);
  const t = now();
  const payload = Buffer.from(JSON.stringify({ iat: t, exp: t + 3600, aud })).toString("base64url");
  const none = `${Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url")}.${payload}.`;
  assertUnauthorized(await post(hub, path, `Bearer ${none}`), none, "alg none");
  // A header claiming RS256 but HMAC-signed with the key must not be accepted either.
  const rs = signJwt({ iat: t, exp: t + 3600, aud }, keys.primaryKey, { alg: "RS256", typ: "JWT" });
  assertUnauthorized(await post(hub, path, `Bearer ${rs}`), rs, "alg RS256");
}));

test("an expired token is rejected and the message says it expired", TIMEOUT, withHubbub(async (hub) => {
  const { keys, aud, path } = await setup(hub);
  const t = now();
  const token = signJwt({ iat: t - 7200, exp: t - 3600, aud }, keys.primaryKey);
  const msg = assertUnauthorized(await post(hub, path, `Bearer ${token}`), token, "expired");
  assert.match(msg, /expire/i);
}));

test("a token without exp, or not yet valid (nbf in the future), is rejected", TIMEOUT, withHubbub(async (hub) => {
  const { keys, aud, path } = await setup(hub);
  const t = now();
  const noExp = signJwt({ iat: t, aud }, keys.primaryKey);
  assertUnauthorized(await post(hub, path, `Bearer ${noExp}`), noExp, "no exp");
  const future = signJwt({ iat: t, nbf: t + 3600, exp: t + 7200, aud }, keys.primaryKey);
  assertUnauthorized(await post(hub, path, `Bearer ${future}`), future, "nbf in the future");
}));

test("a token for another host, hub or route is rejected and the message names the audience", TIMEOUT, withHubbub(async (hub) => {
  const { keys, hubName, path } = await setup(hub);
  const t = now();
  const wrong = {
    "other host": `http://other.example:${hub.publicPort}${path}`,
    "other port": `http://localhost:${hub.adminPort}${path}`,
    "other hub": `${hub.endpoint}/api/hubs/${hubName}x/:send?${API}`,
    "other route": `${hub.endpoint}/api/hubs/${hubName}/users/u1/:send?${API}`,
    "client audience": `${hub.endpoint}/client/hubs/${hubName}`,
  };
  for (const [what, aud] of Object.entries(wrong)) {
    const token = signJwt({ iat: t, exp: t + 3600, aud }, keys.primaryKey);
    const msg = assertUnauthorized(await post(hub, path, `Bearer ${token}`), token, what);
    assert.match(msg, /audience/i, `${what}: message`);
  }
  const noAud = signJwt({ iat: t, exp: t + 3600 }, keys.primaryKey);
  assertUnauthorized(await post(hub, path, `Bearer ${noAud}`), noAud, "no aud");
}));
