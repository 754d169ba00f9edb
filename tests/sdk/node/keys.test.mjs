// Keys and connection strings as the official JS service SDK (@azure/web-pubsub 1.2.0) uses them.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  withHubbub, sdkClient, fetchWithTimeout, parseConnectionString, KEY_RE, decodeJwtPayload, uniqueHub,
} from "./harness.mjs";
import { createHmac } from "node:crypto";

const TIMEOUT = { timeout: 60_000 };

test("server prints consistent listener addresses and a localhost public endpoint", TIMEOUT, withHubbub(async (hub) => {
  assert.match(hub.publicAddr, /^127\.0\.0\.1:\d+$/);
  assert.match(hub.adminAddr, /^127\.0\.0\.1:\d+$/);
  assert.notEqual(hub.publicPort, 0);
  assert.notEqual(hub.adminPort, 0);
  assert.notEqual(hub.publicPort, hub.adminPort);
  assert.equal(hub.endpoint, `http://localhost:${hub.publicPort}`);
}));

test("key show prints exactly the four WebPubSubKeys fields with well-formed keys", TIMEOUT, withHubbub(async (hub) => {
  const keys = await hub.keyShow();
  assert.deepEqual(
    Object.keys(keys).sort(),
    ["primaryConnectionString", "primaryKey", "secondaryConnectionString", "secondaryKey"],
  );
  assert.match(keys.primaryKey, KEY_RE);
  assert.match(keys.secondaryKey, KEY_RE);
  assert.notEqual(keys.primaryKey, keys.secondaryKey);
  for (const [csName, key] of [["primaryConnectionString", keys.primaryKey], ["secondaryConnectionString", keys.secondaryKey]]) {
    const cs = keys[csName];
    assert.equal(cs, `Endpoint=${hub.endpoint};AccessKey=${key};Version=1.0;`, csName);
    const parsed = parseConnectionString(cs);
    assert.equal(parsed.endpoint, hub.endpoint);
    assert.equal(parsed.accesskey, key);
    assert.equal(parsed.version, "1.0");
  }
  // Two fresh servers never share keys.
  const again = await hub.keyShow();
  assert.deepEqual(again, keys, "key show is stable while nothing is regenerated");
}));

test("two fresh data dirs get different keys", TIMEOUT, withHubbub(async (hubA) => {
  await withHubbub(async (hubB) => {
    const a = await hubA.keyShow();
    const b = await hubB.keyShow();
    assert.notEqual(a.primaryKey, b.primaryKey);
    assert.notEqual(a.secondaryKey, b.secondaryKey);
    assert.notEqual(a.primaryKey, b.secondaryKey);
  })();
}));

test("health endpoint answers HEAD and GET without auth", TIMEOUT, withHubbub(async (hub) => {
  for (const base of [hub.publicUrl, hub.endpoint]) {
    const head = await fetchWithTimeout(`${base}/api/health`, { method: "HEAD" });
    assert.equal(head.status, 200, `HEAD ${base}/api/health`);
    const get = await fetchWithTimeout(`${base}/api/health`);
    assert.equal(get.status, 200, `GET ${base}/api/health`);
    await get.arrayBuffer();
  }
}));

test("both connection strings from key show work with the JS service SDK", TIMEOUT, withHubbub(async (hub) => {
  const keys = await hub.keyShow();
  for (const csName of ["primaryConnectionString", "secondaryConnectionString"]) {
    const hubName = uniqueHub("keys");
    const client = sdkClient(keys[csName], hubName);
    // Each of these throws unless the service answers 202.
    await client.sendToAll({ hello: "world", via: csName });
    await client.sendToAll("plain text", { contentType: "text/plain" });
    await client.sendToAll(new Uint8Array([1, 2, 3]).buffer, { contentType: "application/octet-stream" });
    await client.group("group1").sendToAll({ to: "group" });
    await client.sendToUser("user1", { to: "user" });
    await client.sendToConnection("conn1", { to: "connection" });
  }
}));

test("JS SDK client access token points at ws://localhost:PORT/client/hubs/<hub>", TIMEOUT, withHubbub(async (hub) => {
  const keys = await hub.keyShow();
  for (const [csName, key] of [["primaryConnectionString", keys.primaryKey], ["secondaryConnectionString", keys.secondaryKey]]) {
    const client = sdkClient(keys[csName], "Chat_Hub1");
    const tok = await client.getClientAccessToken({ userId: "user1", roles: ["webpubsub.sendToGroup"] });
    assert.equal(tok.baseUrl, `ws://localhost:${hub.publicPort}/client/hubs/Chat_Hub1`, csName);
    assert.equal(tok.url, `${tok.baseUrl}?access_token=${tok.token}`);
    const claims = decodeJwtPayload(tok.token);
    assert.equal(claims.aud, `http://localhost:${hub.publicPort}/client/hubs/Chat_Hub1`);
    assert.equal(claims.sub, "user1");
    // The SDK signs with the key string's UTF-8 bytes; the key we were given is the one used.
    const [h, p, s] = tok.token.split(".");
    assert.equal(createHmac("sha256", Buffer.from(key, "utf8")).update(`${h}.${p}`).digest("base64url"), s);
  }
}));

test("a connection string with an unknown key is rejected with 401 and an error code", TIMEOUT, withHubbub(async (hub) => {
  const keys = await hub.keyShow();
  const bogus = `Endpoint=${hub.endpoint};AccessKey=${Buffer.alloc(32, 7).toString("base64")};Version=1.0;`;
  const client = sdkClient(bogus, uniqueHub("bad"));
  const err = await client.sendToAll({ hello: "nobody" }).then(
    () => assert.fail("sendToAll with an unknown key must be rejected"),
    (e) => e,
  );
  assert.equal(err.name, "RestError", String(err));
  assert.equal(err.statusCode, 401);
  const body = JSON.parse(err.response.bodyAsText);
  assert.equal(body.code, "Unauthorized");
  assert.equal(typeof body.message, "string");
  assert.ok(body.message.length > 0);
  assert.ok(err.response.headers.get("x-ms-error-code"), "401 carries x-ms-error-code");
  const sentAuth = err.request.headers.get("authorization") ?? "";
  const sentToken = sentAuth.replace(/^Bearer\s+/i, "");
  assert.ok(sentToken.length > 20, "the SDK sent a bearer token");
  assert.ok(!err.response.bodyAsText.includes(sentToken), "error body must not echo the token");
  assert.ok(!err.response.bodyAsText.includes(sentToken.split(".")[2]), "error body must not echo the signature");
  // And the real keys still work on the same server.
  await sdkClient(keys.primaryConnectionString, uniqueHub("ok")).sendToAll({ still: "fine" });
}));
