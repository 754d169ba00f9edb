// The admin HTTP API behind `hubbub key ...` and the ARM-shaped listKeys / regenerateKey.

import { test } from "node:test";
import assert from "node:assert/strict";
import { withHubbub, fetchWithTimeout, sdkClient, uniqueHub, KEY_RE } from "./harness.mjs";

const TIMEOUT = { timeout: 60_000 };
const KEY_FIELDS = ["primaryConnectionString", "primaryKey", "secondaryConnectionString", "secondaryKey"];
const ARM = "/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.SignalRService/webPubSub/hubbub1";
const ARM_API = "api-version=2024-03-01";
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function pick(obj, fields) {
  return Object.fromEntries(fields.map((f) => [f, obj[f]]));
}

function assertAdminKeysShape(body) {
  for (const f of KEY_FIELDS) assert.equal(typeof body[f], "string", f);
  assert.match(body.primaryKey, KEY_RE);
  assert.match(body.secondaryKey, KEY_RE);
  for (const slot of ["primary", "secondary", "salt"]) {
    const s = body[slot];
    assert.equal(typeof s, "object", slot);
    assert.ok(Number.isInteger(s.version), `${slot}.version is an integer`);
    assert.match(s.createdAt, RFC3339, `${slot}.createdAt is RFC 3339`);
    assert.ok(!Number.isNaN(Date.parse(s.createdAt)), `${slot}.createdAt parses`);
    assert.ok(Math.abs(Date.parse(s.createdAt) - Date.now()) < 24 * 3600 * 1000, `${slot}.createdAt is recent`);
  }
  for (const slot of ["primary", "secondary"]) {
    assert.ok(Number.isInteger(body[slot].authenticatedRequests), `${slot}.authenticatedRequests is an integer`);
    assert.ok(body[slot].authenticatedRequests >= 0);
  }
  // The salt is never handed out.
  assert.equal(JSON.stringify(body.salt).includes(body.primaryKey), false);
}

async function json(res, what) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    assert.fail(`${what}: body is not JSON (${res.status}): ${text}`);
  }
}

test("admin API requires the admin bearer token", TIMEOUT, withHubbub(async (hub) => {
  const keys = await hub.keyShow();
  const cases = {
    "no token": null,
    "wrong token": "wrong-admin-token",
    "access key as token": keys.primaryKey,
  };
  for (const [what, token] of Object.entries(cases)) {
    const get = await hub.admin("GET", "/admin/keys", { token });
    assert.equal(get.status, 401, `GET /admin/keys, ${what}`);
    const getText = await get.text();
    assert.ok(!getText.includes(keys.primaryKey), "no key leaks in the 401");
    const regen = await hub.admin("POST", "/admin/keys/regenerate", { token, body: { keyType: "Primary" } });
    assert.equal(regen.status, 401, `POST /admin/keys/regenerate, ${what}`);
    await regen.arrayBuffer();
    const list = await hub.admin("POST", `${ARM}/listKeys?${ARM_API}`, { token });
    assert.equal(list.status, 401, `ARM listKeys, ${what}`);
    const err = await json(list, "ARM listKeys 401");
    assert.equal(typeof err.error?.code, "string", "ARM error shape {error:{code,message}}");
    assert.equal(typeof err.error?.message, "string", "ARM error shape {error:{code,message}}");
  }
  assert.deepEqual(await hub.keyShow(), keys, "nothing changed");
}));

test("the admin API is not served on the public listener", TIMEOUT, withHubbub(async (hub) => {
  const token = await hub.adminToken();
  const res = await fetchWithTimeout(`${hub.publicUrl}/admin/keys`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  assert.notEqual(res.status, 200, `GET /admin/keys on the public listener answered 200: ${text}`);
  const keys = await hub.keyShow();
  assert.ok(!text.includes(keys.primaryKey));
}));

test("GET /admin/keys has the documented shape and agrees with key show", TIMEOUT, withHubbub(async (hub) => {
  const res = await hub.admin("GET", "/admin/keys");
  assert.equal(res.status, 200);
  const body = await json(res, "GET /admin/keys");
  assertAdminKeysShape(body);
  assert.deepEqual(pick(body, KEY_FIELDS), await hub.keyShow());
}));

test("authenticatedRequests counts REST requests per verifying key", TIMEOUT, withHubbub(async (hub) => {
  const keys = await hub.keyShow();
  const read = async () => json(await hub.admin("GET", "/admin/keys"), "GET /admin/keys");
  const base = await read();
  const primary = sdkClient(keys.primaryConnectionString, uniqueHub("count"));
  for (let i = 0; i < 3; i++) await primary.sendToAll({ i });
  const afterPrimary = await read();
  assert.equal(afterPrimary.primary.authenticatedRequests - base.primary.authenticatedRequests, 3);
  assert.equal(afterPrimary.secondary.authenticatedRequests, base.secondary.authenticatedRequests);
  const secondary = sdkClient(keys.secondaryConnectionString, uniqueHub("count"));
  for (let i = 0; i < 2; i++) await secondary.sendToAll({ i });
  // Rejected requests count for nobody.
  await sdkClient(`Endpoint=${hub.endpoint};AccessKey=${Buffer.alloc(32, 1).toString("base64")};Version=1.0;`, "h")
    .sendToAll({}).then(() => assert.fail("unknown key accepted"), () => {});
  const afterSecondary = await read();
  assert.equal(afterSecondary.primary.authenticatedRequests, afterPrimary.primary.authenticatedRequests);
  assert.equal(afterSecondary.secondary.authenticatedRequests - afterPrimary.secondary.authenticatedRequests, 2);
}));

test("POST /admin/keys/regenerate rotates one slot; key type is case-insensitive", TIMEOUT, withHubbub(async (hub) => {
  let current = await json(await hub.admin("GET", "/admin/keys"), "GET /admin/keys");
  for (const [keyType, slot, other] of [["Primary", "primary", "secondary"], ["secondary", "secondary", "primary"], ["PRIMARY", "primary", "secondary"]]) {
    const res = await hub.admin("POST", "/admin/keys/regenerate", { body: { keyType } });
    assert.equal(res.status, 200, `regenerate ${keyType}`);
    const next = await json(res, `regenerate ${keyType}`);
    assertAdminKeysShape(next);
    assert.notEqual(next[`${slot}Key`], current[`${slot}Key`], `${keyType}: ${slot} key changed`);
    assert.equal(next[`${other}Key`], current[`${other}Key`], `${keyType}: ${other} key unchanged`);
    assert.ok(next[slot].version > current[slot].version, `${keyType}: ${slot}.version increases`);
    assert.equal(next[other].version, current[other].version, `${keyType}: ${other}.version unchanged`);
    assert.equal(next.salt.version, current.salt.version, `${keyType}: salt.version unchanged`);
    assert.deepEqual(pick(next, KEY_FIELDS), await hub.keyShow(), `${keyType}: key show agrees`);
    current = next;
  }
  const salt = await hub.admin("POST", "/admin/keys/regenerate", { body: { keyType: "salt" } });
  assert.equal(salt.status, 200);
  const afterSalt = await json(salt, "regenerate salt");
  assert.deepEqual(pick(afterSalt, KEY_FIELDS), pick(current, KEY_FIELDS), "salt leaves the access keys alone");
  assert.ok(afterSalt.salt.version > current.salt.version, "salt.version increases");
}));

test("POST /admin/keys/regenerate with an unknown key type is 400 and changes nothing", TIMEOUT, withHubbub(async (hub) => {
  const before = await hub.keyShow();
  for (const body of [{ keyType: "Tertiary" }, { keyType: "" }]) {
    const res = await hub.admin("POST", "/admin/keys/regenerate", { body });
    assert.equal(res.status, 400, `body ${JSON.stringify(body)}`);
    const err = await json(res, "regenerate 400");
    assert.equal(typeof err.code, "string", "error code");
    assert.ok(err.code.length > 0);
    assert.equal(typeof err.message, "string", "error message");
  }
  assert.deepEqual(await hub.keyShow(), before);
}));

test("ARM listKeys and regenerateKey answer synchronously with WebPubSubKeys", TIMEOUT, withHubbub(async (hub) => {
  const keys = await hub.keyShow();
  const list = await hub.admin("POST", `${ARM}/listKeys?${ARM_API}`);
  assert.equal(list.status, 200);
  const listed = await json(list, "listKeys");
  assert.deepEqual(Object.keys(listed).sort(), KEY_FIELDS, "exactly the WebPubSubKeys fields");
  assert.deepEqual(listed, keys);
  // Any subscription / resource group / name works.
  const other = await hub.admin("POST", `/subscriptions/x/resourceGroups/y/providers/Microsoft.SignalRService/webPubSub/z/listKeys?${ARM_API}`);
  assert.equal(other.status, 200);
  assert.deepEqual(await json(other, "listKeys (other names)"), keys);

  const regen = await hub.admin("POST", `${ARM}/regenerateKey?${ARM_API}`, { body: { keyType: "Secondary" } });
  assert.equal(regen.status, 200, "regenerateKey is synchronous (200, not 202)");
  const regenerated = await json(regen, "regenerateKey");
  assert.deepEqual(Object.keys(regenerated).sort(), KEY_FIELDS);
  assert.equal(regenerated.primaryKey, keys.primaryKey);
  assert.notEqual(regenerated.secondaryKey, keys.secondaryKey);
  assert.deepEqual(regenerated, await hub.keyShow());

  const bad = await hub.admin("POST", `${ARM}/regenerateKey?${ARM_API}`, { body: { keyType: "Tertiary" } });
  assert.equal(bad.status, 400, "unknown keyType");
  const err = await json(bad, "regenerateKey 400");
  assert.equal(typeof err.error?.code, "string", "ARM error shape");
  assert.equal(typeof err.error?.message, "string", "ARM error shape");
  assert.deepEqual(await hub.keyShow(), regenerated, "a rejected regenerateKey changes nothing");
}));
