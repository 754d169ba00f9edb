// Helpers for the event-handler (upstream) tests.
//
// - `startUpstream(handler)`: an HTTP app server on 127.0.0.1 (any free port) that records every
//   request it gets (method, path, headers, body, and the status and headers it answered) before
//   `handler` (an express app or a plain (req, res) function) sees it.
// - `configureHub()` / `eventHandlerProblems()`: Hubbub's admin API for hub settings.
// - `ceSig()` / `dotnetValidate()`: the ce-signature computation and an app-server validator
//   written the way the .NET SDK validates (RequestValidator).
// - `checkCommonHeaders()`: the CloudEvents headers every POST must carry.
//
// Every wait is bounded by a deadline.

import http from "node:http";
import express from "express";
import { createHmac } from "node:crypto";
import { waitFor } from "./harness.mjs";

export const SYS_EVENTS = ["connect", "connected", "disconnected"];

/** One request the upstream got. `body` is filled when the request has been read completely. */
export class UpstreamRequest {
  constructor(req, seq) {
    this.seq = seq;
    this.at = Date.now();
    this.method = req.method;
    this.url = req.url;
    this.path = req.url.split("?")[0];
    this.headers = { ...req.headers }; // lower-cased names
    this.rawHeaders = [...req.rawHeaders];
    this.chunks = [];
    this.body = null; // Buffer, once complete
    this.status = null; // the status the app answered
    this.responseHeaders = null;
  }

  get type() { return this.headers["ce-type"]; }
  get eventName() { return this.headers["ce-eventname"]; }
  get connectionId() { return this.headers["ce-connectionid"]; }
  get text() { return this.body === null ? null : this.body.toString("utf8"); }
  get json() {
    try { return JSON.parse(this.text); } catch { return undefined; }
  }

  /** Every value of a header as it appeared on the wire (repeated lines kept apart). */
  headerLines(name) {
    const out = [];
    for (let i = 0; i < this.rawHeaders.length; i += 2) {
      if (this.rawHeaders[i].toLowerCase() === name.toLowerCase()) out.push(this.rawHeaders[i + 1]);
    }
    return out;
  }

  describe() {
    const h = this.headers;
    return `${this.method} ${this.url} type=${h["ce-type"] ?? "-"} conn=${h["ce-connectionid"] ?? "-"} -> ${this.status}`;
  }
}

/**
 * An app server on 127.0.0.1:0 that records every request, then hands it to `handler`.
 * Returns { base, port, requests, posts(), options(), events(type), close() }.
 */
export async function startUpstream(handler) {
  const requests = [];
  const sockets = new Set();
  let seq = 0;
  const server = http.createServer((req, res) => {
    const entry = new UpstreamRequest(req, seq++);
    requests.push(entry);
    // Observe the body without adding a 'data' listener (that would start the stream flowing
    // before the app's own body reader is attached, and the app could miss chunks).
    const emit = req.emit;
    req.emit = function observed(event, ...args) {
      if (event === "data") entry.chunks.push(Buffer.from(args[0]));
      else if (event === "end") entry.body = Buffer.concat(entry.chunks);
      return emit.call(this, event, ...args);
    };
    res.on("finish", () => {
      entry.status = res.statusCode;
      entry.responseHeaders = res.getHeaders();
      if (entry.body === null) entry.body = Buffer.concat(entry.chunks); // the app did not read it all
    });
    res.on("error", () => {});
    handler(req, res);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("clientError", (_e, s) => s.destroy());
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const port = server.address().port;
  return {
    server,
    port,
    base: `http://127.0.0.1:${port}`,
    requests,
    posts: () => requests.filter((r) => r.method === "POST"),
    options: () => requests.filter((r) => r.method === "OPTIONS"),
    /** POSTs with ce-type azure.webpubsub.sys.<name> or azure.webpubsub.user.<name> ("user.*" for any). */
    events(kind, connectionId) {
      return requests.filter((r) => r.method === "POST" && matchesKind(r.type, kind)
        && (connectionId === undefined || r.connectionId === connectionId));
    },
    summary() { return requests.map((r) => r.describe()); },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function matchesKind(type, kind) {
  if (!type) return false;
  if (kind === "user.*") return type.startsWith("azure.webpubsub.user.");
  if (SYS_EVENTS.includes(kind)) return type === `azure.webpubsub.sys.${kind}`;
  return type === `azure.webpubsub.user.${kind}`;
}

/** Wait (bounded) until the upstream got a completely read POST of `kind` for `connectionId`. */
export async function waitEvent(up, kind, connectionId, timeoutMs = 5_000) {
  return waitFor(() => up.events(kind, connectionId).find((r) => r.body !== null), {
    timeoutMs,
    what: `upstream event ${kind} for ${connectionId ?? "any connection"}; upstream got ${JSON.stringify(up.summary())}`,
  });
}

/** An event handler setting. */
export function handlerSetting(urlTemplate, { userEventPattern = "*", systemEvents = SYS_EVENTS } = {}) {
  return { urlTemplate, userEventPattern, systemEvents };
}

/** `PUT /admin/hubs/{hub}`; asserts 200 and returns the parsed answer. */
export async function configureHub(hub, hubName, properties) {
  const res = await hub.admin("PUT", `/admin/hubs/${encodeURIComponent(hubName)}`, { body: properties });
  const text = await res.text();
  if (res.status !== 200) {
    throw new Error(`PUT /admin/hubs/${hubName} answered ${res.status}: ${text}\nbody sent: ${JSON.stringify(properties)}`);
  }
  try { return JSON.parse(text); } catch { return text; }
}

/** `GET /admin/event-handlers`: the current handler problems `[{url, reason, at}]`. */
export async function eventHandlerProblems(hub) {
  const res = await hub.admin("GET", "/admin/event-handlers");
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET /admin/event-handlers answered ${res.status}: ${text}`);
  const json = JSON.parse(text);
  if (!Array.isArray(json)) throw new Error(`GET /admin/event-handlers is not a JSON array: ${text}`);
  return json;
}

/** "sha256=" + lower-case hex HMAC-SHA256(key as UTF-8, connectionId as UTF-8). */
export function ceSig(key, connectionId) {
  return `sha256=${createHmac("sha256", Buffer.from(key, "utf8")).update(Buffer.from(connectionId, "utf8")).digest("hex")}`;
}

/**
 * The .NET SDK's check (Microsoft.Azure.WebPubSub.AspNetCore RequestValidator): the request's
 * WebHook-Request-Origin must be the configured endpoint host (no port), then `ce-signature`
 * is split on "," (no trimming) and accepted if any entry equals sig(key) ignoring case.
 */
export function dotnetValidate(headers, { host, key }) {
  const origin = headers["webhook-request-origin"];
  if (typeof origin !== "string" || origin.toLowerCase() !== host.toLowerCase()) return false;
  const connectionId = headers["ce-connectionid"];
  const signature = headers["ce-signature"];
  if (typeof connectionId !== "string" || typeof signature !== "string") return false;
  const expected = ceSig(key, connectionId).toLowerCase();
  return signature.split(",").some((s) => s.toLowerCase() === expected);
}

/** Host of the public endpoint (what Hubbub must send as WebHook-Request-Origin). */
export function endpointHost(hub) {
  return new URL(hub.endpoint).hostname;
}

/**
 * Check the CloudEvents headers of one recorded POST. Returns a list of problems.
 * expect: { hubName, kind ("connect" | "connected" | "disconnected" | user event name), connectionId,
 *           userId (undefined = must be absent), subprotocol, origin, keys ({primaryKey, secondaryKey} or null) }
 */
export function commonHeaderProblems(r, expect) {
  const h = r.headers;
  const p = [];
  const eq = (name, want) => {
    if (h[name] !== want) p.push(`${name}: got ${JSON.stringify(h[name])}, want ${JSON.stringify(want)}`);
  };
  const isSys = SYS_EVENTS.includes(expect.kind);
  eq("ce-specversion", "1.0");
  eq("ce-awpsversion", "1.0");
  eq("ce-type", isSys ? `azure.webpubsub.sys.${expect.kind}` : `azure.webpubsub.user.${expect.kind}`);
  eq("ce-eventname", expect.kind);
  eq("ce-connectionid", expect.connectionId);
  eq("ce-hub", expect.hubName.toLowerCase());
  eq("ce-source", `/hubs/${expect.hubName.toLowerCase()}/client/${expect.connectionId}`);
  eq("webhook-request-origin", expect.origin);
  if (typeof h["ce-id"] !== "string" || h["ce-id"].length === 0) p.push(`ce-id missing: ${JSON.stringify(h["ce-id"])}`);
  const t = Date.parse(h["ce-time"] ?? "");
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(h["ce-time"] ?? "") || Number.isNaN(t)) {
    p.push(`ce-time is not RFC 3339: ${JSON.stringify(h["ce-time"])}`);
  } else if (Math.abs(t - r.at) > 60_000) {
    p.push(`ce-time ${h["ce-time"]} is far from the arrival time ${new Date(r.at).toISOString()}`);
  }
  if (expect.userId === undefined) {
    if ("ce-userid" in h) p.push(`ce-userId must be absent, got ${JSON.stringify(h["ce-userid"])}`);
  } else {
    eq("ce-userid", expect.userId);
  }
  if (expect.kind === "connect") {
    if ("ce-subprotocol" in h) p.push(`ce-subprotocol must be absent on connect, got ${JSON.stringify(h["ce-subprotocol"])}`);
  } else if (expect.subprotocol !== undefined) {
    eq("ce-subprotocol", expect.subprotocol);
  }
  if (expect.keys) {
    const lines = r.headerLines("ce-signature");
    const want = `${ceSig(expect.keys.primaryKey, expect.connectionId)},${ceSig(expect.keys.secondaryKey, expect.connectionId)}`;
    if (lines.length !== 1) p.push(`ce-signature must be one header line, got ${JSON.stringify(lines)}`);
    else if (lines[0] !== want) p.push(`ce-signature: got ${JSON.stringify(lines[0])}, want ${JSON.stringify(want)}`);
  }
  return p;
}

/** Close a WebPubSubClient-like connection list quietly (used in finally blocks). */
export async function closeQuietly(...things) {
  for (const t of things) {
    try { await t?.close?.(); } catch { /* best effort */ }
  }
}

/**
 * An express app serving an official `WebPubSubEventHandler` (404 for anything else), started
 * with `startUpstream`; `seen` is what the handler's callbacks record, and `handlerUrl` the URL
 * template to configure on the hub.
 */
export async function serveEventHandler(handler, seen) {
  const app = express();
  app.use(handler.getMiddleware());
  app.use((req, res) => res.status(404).end());
  const up = await startUpstream(app);
  up.seen = seen;
  up.handlerUrl = `${up.base}/api/webpubsub/hubs/{hub}/`;
  return up;
}
