// Helpers for the data-plane tests (JavaScript side).
//
// - `withDataplane(fn)`: a fresh Hubbub, its keys, a unique hub name and an official
//   service client, plus factories for official WebPubSubClient connections and raw
//   `ws` connections that are all closed again before the server stops.
// - `SdkConn`: an official @azure/web-pubsub-client connection that records every event.
// - `RawWs`: a raw WebSocket (npm `ws`) that records every frame it receives.
// - `upgrade()`: one WebSocket upgrade attempt, reporting the HTTP status (101 or the error).
// - `rest()`: a data-plane REST call with a hand-signed bearer JWT.
//
// Every wait is bounded by a deadline.

import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import {
  WebPubSubClient, WebPubSubJsonProtocol, WebPubSubJsonReliableProtocol,
} from "@azure/web-pubsub-client";
import { withHubbub, sdkClient, uniqueHub, waitFor, signJwt, fetchWithTimeout } from "./harness.mjs";

export const API = "api-version=2024-12-01";
export const JSON_SUBPROTOCOL = "json.webpubsub.azure.v1";
export const RELIABLE_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1";
export const PROTOCOLS = ["json", "reliable"];
export const MARKER_PREFIX = "~marker~";

export const nowSecs = () => Math.floor(Date.now() / 1000);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const uid = (prefix = "") => `${prefix}${randomBytes(4).toString("hex")}`;

/** A comparable form of a message payload: binary payloads become "b64:<base64>". */
export function norm(dataType, data) {
  if (dataType === "binary" || dataType === "protobuf") {
    if (data instanceof ArrayBuffer) return `b64:${Buffer.from(data).toString("base64")}`;
    if (ArrayBuffer.isView(data)) return `b64:${Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64")}`;
    return `b64:${String(data)}`;
  }
  return data;
}

function isMarker(m) {
  return m.dataType === "text" && typeof m.data === "string" && m.data.startsWith(MARKER_PREFIX);
}

/** An official WebPubSubClient connection that records every event it emits. */
export class SdkConn {
  constructor(client, label, protocol) {
    this.client = client;
    this.label = label;
    this.protocol = protocol;
    this.connected = [];
    this.disconnected = [];
    this.stopped = 0;
    this.rejoinFailed = [];
    this.messages = []; // group and server data messages, in arrival order
    client.on("connected", (e) => this.connected.push(e));
    client.on("disconnected", (e) => this.disconnected.push(e));
    client.on("stopped", () => { this.stopped += 1; });
    client.on("rejoin-group-failed", (e) => this.rejoinFailed.push(e));
    client.on("group-message", (e) => this.messages.push(e.message));
    client.on("server-message", (e) => this.messages.push(e.message));
  }

  /** The connection id from the first `connected` event. */
  get connectionId() {
    return this.connected[0]?.connectionId;
  }

  /** Data messages without the flush markers. */
  get data() {
    return this.messages.filter((m) => !isMarker(m));
  }

  /** Compact description of the data messages: "from[:group]:dataType:payload". */
  summary() {
    return this.data.map((m) => {
      const p = norm(m.dataType, m.data);
      return `${m.from}${m.group !== undefined ? `:${m.group}` : ""}:${m.dataType}:${typeof p === "string" ? p : JSON.stringify(p)}`;
    });
  }

  /** Wait until `pred(messages)` holds (messages exclude markers). */
  async waitMessages(pred, what, timeoutMs = 5_000) {
    return waitFor(() => pred(this.data), {
      timeoutMs, what: `${this.label}: ${what}; got ${JSON.stringify(this.summary())}`,
    });
  }

  /** Wait until `n` data messages arrived. */
  async waitCount(n, timeoutMs = 5_000) {
    await this.waitMessages((ms) => ms.length >= n, `${n} messages`, timeoutMs);
    return this.data;
  }

  stop() {
    try { this.client.stop(); } catch { /* already stopped */ }
  }
}

/** A raw WebSocket connection (npm `ws`) that records every frame. */
export class RawWs {
  constructor(ws, response) {
    this.ws = ws;
    this.response = response; // the 101 response (headers)
    this.frames = []; // { isBinary, data: Buffer, text?: string, json?: any }
    this.closed = null; // { code, reason, hadCloseFrame }
    this.errors = [];
    this.pings = []; // arrival times of WebSocket ping frames
    ws.on("ping", () => this.pings.push(Date.now()));
    ws.on("message", (data, isBinary) => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
      const f = { isBinary, data: buf };
      if (!isBinary) {
        f.text = buf.toString("utf8");
        try { f.json = JSON.parse(f.text); } catch { /* not JSON */ }
      }
      this.frames.push(f);
    });
    ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString("utf8") };
    });
    ws.on("error", (e) => this.errors.push(e.message));
  }

  /** Parsed JSON frames. */
  get json() {
    return this.frames.filter((f) => f.json !== undefined).map((f) => f.json);
  }

  /** JSON data messages (`type: "message"`) without flush markers. */
  get dataMessages() {
    return this.json.filter((j) => j.type === "message" && !isMarker(j));
  }

  send(frame) {
    const payload = typeof frame === "string" || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame);
    this.ws.send(payload);
  }

  async waitFrame(pred, what, timeoutMs = 5_000) {
    return waitFor(() => this.frames.find(pred), {
      timeoutMs, what: `${what}; frames so far: ${this.describeFrames()}; closed: ${JSON.stringify(this.closed)}`,
    });
  }

  async waitJson(pred, what, timeoutMs = 5_000) {
    return (await this.waitFrame((f) => f.json !== undefined && pred(f.json), what, timeoutMs)).json;
  }

  async waitAck(ackId, timeoutMs = 5_000) {
    return this.waitJson((j) => j.type === "ack" && j.ackId === ackId, `ack ${ackId}`, timeoutMs);
  }

  async waitClosed(timeoutMs = 5_000, what = "the server to close the connection") {
    return waitFor(() => this.closed, { timeoutMs, what: `${what}; frames: ${this.describeFrames()}` });
  }

  /** The `connected` system message (waits for it). */
  async connectedMessage(timeoutMs = 5_000) {
    return this.waitJson((j) => j.type === "system" && j.event === "connected", "connected system message", timeoutMs);
  }

  describeFrames(max = 20) {
    const shown = this.frames.slice(-max).map((f) => (f.isBinary ? `<binary ${f.data.toString("base64")}>` : f.text.slice(0, 300)));
    return JSON.stringify(shown);
  }

  close() {
    try {
      if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    } catch { /* gone */ }
  }
}

/**
 * One WebSocket upgrade attempt. Resolves with
 *   { status: 101, raw: RawWs, protocol }   on success (connection left open), or
 *   { status, body, headers }               when the server answered with anything else.
 * Rejects only on network errors or timeout.
 */
export function upgrade(url, { protocols, headers, timeoutMs = 5_000, wsOptions = {} } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols ?? [], {
      headers, perMessageDeflate: false, handshakeTimeout: timeoutMs, ...wsOptions,
    });
    let done = false;
    let response;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      ws.terminate();
      reject(new Error(`upgrade of ${url} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const finish = (fn) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      fn();
    };
    ws.on("upgrade", (res) => { response = res; });
    const raw = new RawWs(ws, null);
    ws.on("open", () => finish(() => {
      raw.response = response;
      resolve({ status: 101, raw, protocol: ws.protocol, headers: response?.headers ?? {} });
    }));
    ws.on("unexpected-response", (req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => { body += d; });
      const end = () => finish(() => {
        req.destroy();
        resolve({ status: res.statusCode, body, headers: res.headers });
      });
      res.on("end", end);
      res.on("error", end);
      setTimeout(end, 1_000).unref();
    });
    ws.on("error", (e) => finish(() => reject(new Error(`upgrade of ${url} failed: ${e.message}`))));
  });
}

/** Open a raw WebSocket or fail with the upgrade status. */
export async function openRaw(url, opts = {}) {
  const r = await upgrade(url, opts);
  if (r.status !== 101) {
    throw new Error(`upgrade of ${url} answered ${r.status} instead of 101: ${r.body}`);
  }
  return r.raw;
}

/** Client URL on the loopback address for a token (path form). */
export function clientUrl(hub, hubName, token, extraQuery = "") {
  return `ws://${hub.publicAddr}/client/hubs/${hubName}?access_token=${token}${extraQuery}`;
}

/** Loopback client URL with a token minted locally by a service client (getClientAccessToken). */
export async function sdkTokenUrl(svc, hub, hubName, opts = {}) {
  const { token } = await svc.getClientAccessToken(opts);
  return clientUrl(hub, hubName, token);
}

/** A client access token signed by hand (HS256 with the key as UTF-8 text, like the SDKs). */
export function clientToken(hub, hubName, key, { userId, roles, groups, exp, aud, iat, extra } = {}) {
  const t = nowSecs();
  const claims = { iat: iat === undefined ? t : iat, exp: exp ?? t + 3600, aud: aud ?? `${hub.endpoint}/client/hubs/${hubName}` };
  if (iat === null) delete claims.iat;
  if (userId !== undefined) claims.sub = userId;
  if (roles) claims.role = roles;
  if (groups) claims["webpubsub.group"] = groups;
  Object.assign(claims, extra ?? {});
  return signJwt(claims, key);
}

/**
 * A data-plane REST call with a bearer JWT signed by `key` (aud = full request URL on the
 * public endpoint, like the SDKs). Resolves with { status, text, json, headers }.
 */
export async function rest(hub, key, method, pathAndQuery, { body, contentType } = {}) {
  const aud = `${hub.endpoint}${pathAndQuery}`;
  const t = nowSecs();
  const token = signJwt({ iat: t, exp: t + 300, aud }, key);
  const headers = { authorization: `Bearer ${token}` };
  if (contentType) headers["content-type"] = contentType;
  const res = await fetchWithTimeout(`${hub.publicUrl}${pathAndQuery}`, { method, headers, body });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, text, json, headers: res.headers };
}

/** The REST `:generateToken` call; returns the token string (asserting 200 + JSON). */
export async function generateToken(hub, key, hubName, { userId, roles = [], groups = [], minutesToExpire } = {}) {
  const q = [API];
  if (userId !== undefined) q.push(`userId=${encodeURIComponent(userId)}`);
  for (const r of roles) q.push(`role=${encodeURIComponent(r)}`);
  if (minutesToExpire !== undefined) q.push(`minutesToExpire=${minutesToExpire}`);
  for (const g of groups) q.push(`group=${encodeURIComponent(g)}`);
  const r = await rest(hub, key, "POST", `/api/hubs/${hubName}/:generateToken?${q.join("&")}`);
  if (r.status !== 200 || typeof r.json?.token !== "string") {
    throw new Error(`:generateToken answered ${r.status} ${r.text}`);
  }
  return r.json.token;
}

/** The client package used by default: @azure/web-pubsub-client as pinned in package.json. */
export const DEFAULT_CLIENT_SDK = { WebPubSubClient, WebPubSubJsonProtocol, WebPubSubJsonReliableProtocol };

/** A protocol object of `sdk` (a module exporting the client's protocol factories). */
export function protocolFor(name, sdk = DEFAULT_CLIENT_SDK) {
  if (name === "json") return sdk.WebPubSubJsonProtocol();
  if (name === "reliable") return sdk.WebPubSubJsonReliableProtocol();
  throw new Error(`unknown protocol ${name}`);
}

/**
 * Per-test context: server, keys, hub name, service client, and factories for
 * connections that are closed again at the end of the test.
 */
export class DataplaneContext {
  constructor(hub, keys, hubName) {
    this.hub = hub;
    this.keys = keys;
    this.hubName = hubName;
    this.service = sdkClient(keys.primaryConnectionString, hubName);
    this.conns = [];
    this.raws = [];
  }

  /** A service client for another key / hub. */
  serviceFor(connectionString, hubName = this.hubName) {
    return sdkClient(connectionString, hubName);
  }

  /**
   * Connect an official WebPubSubClient and wait for its `connected` event.
   * opts: userId, roles, groups, protocol ("reliable" | "json" | "default": no protocol option, the
   *       client's own default), service, url, transformUrl, autoReconnect (default false),
   *       messageRetries (default 0), label, waitConnected (default true), sdk (another version of
   *       the client package, e.g. the module of an npm alias; default DEFAULT_CLIENT_SDK).
   */
  async connect(opts = {}) {
    const protocol = opts.protocol ?? "reliable";
    let url = opts.url;
    if (!url) {
      const svc = opts.service ?? this.service;
      const tokenOpts = {};
      if (opts.userId !== undefined) tokenOpts.userId = opts.userId;
      if (opts.roles) tokenOpts.roles = opts.roles;
      if (opts.groups) tokenOpts.groups = opts.groups;
      url = (await svc.getClientAccessToken(tokenOpts)).url;
    }
    if (opts.transformUrl) url = opts.transformUrl(url);
    const sdk = opts.sdk ?? DEFAULT_CLIENT_SDK;
    const client = new sdk.WebPubSubClient(url, {
      ...(protocol === "default" ? {} : { protocol: protocolFor(protocol, sdk) }),
      autoReconnect: opts.autoReconnect ?? false,
      autoRejoinGroups: opts.autoRejoinGroups ?? true,
      messageRetryOptions: { maxRetries: opts.messageRetries ?? 0 },
      reconnectRetryOptions: { maxRetries: opts.reconnectRetries ?? 30, retryDelayInMs: 500, mode: "Fixed" },
      ...(opts.clientOptions ?? {}),
    });
    const conn = new SdkConn(client, opts.label ?? `${protocol} client${opts.userId ? ` (${opts.userId})` : ""}`, protocol);
    conn.url = url;
    this.conns.push(conn);
    await withTimeout(client.start(), 10_000, `${conn.label}: start()`);
    if (opts.waitConnected !== false) {
      await waitFor(() => conn.connected.length > 0, { timeoutMs: 5_000, what: `${conn.label}: connected event` });
    }
    return conn;
  }

  /** Open a raw WebSocket with a token minted by the SDK service client. */
  async raw(opts = {}) {
    const tokenOpts = {};
    if (opts.userId !== undefined) tokenOpts.userId = opts.userId;
    if (opts.roles) tokenOpts.roles = opts.roles;
    if (opts.groups) tokenOpts.groups = opts.groups;
    const svc = opts.service ?? this.service;
    const { token } = await svc.getClientAccessToken(tokenOpts);
    const url = clientUrl(this.hub, opts.hubName ?? this.hubName, token, opts.query ?? "");
    const r = await openRaw(url, { protocols: opts.protocols, wsOptions: opts.wsOptions });
    this.raws.push(r);
    r.userId = opts.userId;
    const protocols = [].concat(opts.protocols ?? []);
    if (protocols.includes(JSON_SUBPROTOCOL) || protocols.includes(RELIABLE_SUBPROTOCOL)) {
      r.connectionId = (await r.connectedMessage()).connectionId;
    }
    return r;
  }

  /** Track a RawWs opened elsewhere so that it is closed at the end. */
  track(raw) {
    this.raws.push(raw);
    return raw;
  }

  /**
   * Send a unique text marker to each connection by sendToConnection and wait until each got it.
   * Because a connection receives messages in the order they were sent, everything sent to it
   * before the marker has arrived by then (used for "did not receive" checks).
   */
  async flush(conns, timeoutMs = 5_000) {
    await Promise.all(conns.map(async (c) => {
      const marker = `${MARKER_PREFIX}${uid()}`;
      if (c instanceof RawWs) {
        if (c.connectionId) {
          await this.service.sendToConnection(c.connectionId, marker, { contentType: "text/plain" });
        } else if (c.userId) {
          await this.service.sendToUser(c.userId, marker, { contentType: "text/plain" });
        } else {
          throw new Error("flush: raw connection without a known connectionId or userId");
        }
        await c.waitFrame((f) => !f.isBinary && (f.text === marker || f.json?.data === marker), `marker ${marker}`, timeoutMs);
      } else {
        await this.service.sendToConnection(c.connectionId, marker, { contentType: "text/plain" });
        await waitFor(() => c.messages.some((m) => m.data === marker), {
          timeoutMs, what: `${c.label}: flush marker; got ${JSON.stringify(c.summary())}`,
        });
      }
    }));
  }

  async cleanup() {
    for (const r of this.raws) r.close();
    for (const c of this.conns) c.stop();
    // Give clients that were connected a moment to report `stopped` (bounded).
    const deadline = Date.now() + 3_000;
    while (Date.now() < deadline && this.conns.some((c) => c.client._state !== "Stopped")) {
      await sleep(50);
    }
  }
}

export async function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`${what} did not finish within ${ms} ms`)), ms); });
  try {
    return await Promise.race([promise, t]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Wrap a test body: start a server, build a DataplaneContext, run `fn(ctx, t)`, and
 * close every client before the server stops.
 */
export function withDataplane(fn, { hubPrefix = "dp", extraArgs = [] } = {}) {
  return withHubbub(async (hub, t) => {
    const keys = await hub.keyShow();
    const ctx = new DataplaneContext(hub, keys, uniqueHub(hubPrefix));
    try {
      await fn(ctx, t);
    } finally {
      await ctx.cleanup();
    }
  }, { extraArgs });
}

/** Resolve with the error of `promise`, failing if it resolves. */
export async function expectReject(promise, what) {
  let result;
  try {
    result = await promise;
  } catch (e) {
    return e;
  }
  throw new Error(`${what}: expected a rejection but it resolved with ${JSON.stringify(result)}`);
}

/** Assert that an SDK call failed with an ack error named `name` (SendMessageError.errorDetail.name). */
export async function expectAckError(assert, promise, name, what) {
  const e = await expectReject(promise, what);
  assert.equal(e?.name, "SendMessageError", `${what}: ${e?.stack ?? e}`);
  assert.equal(e.errorDetail?.name, name, `${what}: errorDetail ${JSON.stringify(e.errorDetail)} (${e.message})`);
  return e;
}

/** Bytes as an ArrayBuffer (what the client SDK wants for binary payloads). */
export function arrayBuffer(bytes) {
  const b = Buffer.from(bytes);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

/**
 * Publishes JSON messages `{ id, w, n, group }` to groups through REST, round-robin, from
 * `workers` concurrent loops, until stopped. The service client can be switched (key rotation).
 * `sent` lists every message whose send returned 202; `failures` every send that threw.
 */
export class GroupPublisher {
  constructor(service, groups, { workers = 3, pauseMs = 5, maxMs = 60_000 } = {}) {
    this.service = service;
    this.groups = groups;
    this.workers = workers;
    this.pauseMs = pauseMs;
    this.gen = 0;
    this.completedGen = Array(workers).fill(-1);
    this.sent = [];
    this.failures = [];
    this.stopped = false;
    const hardDeadline = Date.now() + maxMs;
    const loop = async (w) => {
      for (let n = 0; !this.stopped && Date.now() < hardDeadline; n++) {
        const gen = this.gen;
        const svc = this.service;
        const group = groups[(w + n * workers) % groups.length];
        const id = `${w}:${n}`;
        try {
          await svc.group(group).sendToAll({ id, w, n, group });
          this.sent.push({ id, w, n, group });
          this.completedGen[w] = gen;
        } catch (e) {
          this.failures.push(`gen ${gen} ${id}: ${e.statusCode ?? ""} ${e.message} ${e.response?.bodyAsText ?? ""}`.trim());
          if (this.failures.length > 20) return;
        }
        if (this.pauseMs) await sleep(this.pauseMs);
      }
    };
    this.done = Promise.all(Array.from({ length: workers }, (_, w) => loop(w)));
  }

  /** Wait until `count` more messages were sent successfully (or something failed). */
  async more(count, what = "publishing") {
    const target = this.sent.length + count;
    await waitFor(() => this.sent.length >= target || this.failures.length > 0, {
      timeoutMs: 20_000, what: `${what}: ${count} more sends`,
    });
    if (this.failures.length) throw new Error(`${what}: publishing failed: ${this.failures.join("\n")}`);
  }

  /** Switch to another service client; resolves once every worker completed a send with it. */
  async switchTo(service, what = "switching the publisher") {
    this.service = service;
    this.gen += 1;
    const gen = this.gen;
    await waitFor(() => this.completedGen.every((g) => g >= gen) || this.failures.length > 0, {
      timeoutMs: 20_000, what: `${what}: every worker to use the new key`,
    });
    if (this.failures.length) throw new Error(`${what}: publishing failed: ${this.failures.join("\n")}`);
  }

  async stop() {
    this.stopped = true;
    await withTimeout(this.done, 20_000, "publisher stop");
  }
}

/**
 * Check that `conn` received every message of `sent` for its groups exactly once, nothing else,
 * and each worker's messages in the order they were sent. Returns a list of problems.
 */
export function deliveryProblems(conn, groups, sent) {
  const groupSet = new Set(groups);
  const expected = new Set(sent.filter((s) => groupSet.has(s.group)).map((s) => s.id));
  const got = conn.data.filter((m) => m.data && typeof m.data === "object" && typeof m.data.id === "string");
  const seen = new Map();
  const problems = [];
  const lastN = new Map();
  for (const m of got) {
    const { id, w, n, group } = m.data;
    seen.set(id, (seen.get(id) ?? 0) + 1);
    if (!expected.has(id)) problems.push(`unexpected ${id} (group ${group}, message group ${m.group})`);
    if (m.group !== group) problems.push(`${id}: delivered with group ${m.group}, sent to ${group}`);
    const key = `${w}@${group}`;
    if (lastN.has(key) && lastN.get(key) >= n) problems.push(`${id}: out of order after ${w}:${lastN.get(key)} in ${group}`);
    lastN.set(key, n);
  }
  for (const [id, k] of seen) if (k > 1) problems.push(`${id} delivered ${k} times`);
  const missing = [...expected].filter((id) => !seen.has(id));
  if (missing.length) problems.push(`${missing.length} missing, e.g. ${missing.slice(0, 5).join(", ")}`);
  return problems;
}

/** Number of expected messages for `groups` in `sent` that `conn` has received so far. */
export function receivedCount(conn, groups, sent) {
  const groupSet = new Set(groups);
  const expected = new Set(sent.filter((s) => groupSet.has(s.group)).map((s) => s.id));
  let k = 0;
  const seen = new Set();
  for (const m of conn.messages) {
    const id = m.data?.id;
    if (typeof id === "string" && expected.has(id) && !seen.has(id)) {
      seen.add(id);
      k += 1;
    }
  }
  return { got: k, want: expected.size };
}

let nextRawAckId = 1;

/** Send `frame` on a raw JSON connection with a fresh ackId and wait for its ack. */
export async function rawCall(raw, frame) {
  const ackId = nextRawAckId++;
  raw.send({ ...frame, ackId });
  return raw.waitAck(ackId);
}

/** rawCall, failing unless the ack is a plain success. */
export async function rawOk(raw, frame) {
  const ack = await rawCall(raw, frame);
  if (ack.success !== true || "error" in ack) {
    throw new Error(`${JSON.stringify(frame).slice(0, 300)} answered ${JSON.stringify(ack)}`);
  }
  return ack;
}

/** A raw JSON client of `userId` (roles to join and send) that joined `groups`. */
export async function rawMember(ctx, userId, groups = [], roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]) {
  const r = await ctx.raw({ protocols: [JSON_SUBPROTOCOL], userId, roles });
  for (const g of groups) await rawOk(r, { type: "joinGroup", group: g });
  return r;
}
