// A small client of the Web PubSub protobuf subprotocols (protobuf.webpubsub.azure.v1 and
// protobuf.reliable.webpubsub.azure.v1), built with protobufjs from Azure's published schema as
// checked in at crates/hubbub-proto/proto/webpubsub.v1.proto (loaded at run time).
//
// - `loadSchema()`: the schema's types (UpstreamMessage, DownstreamMessage, MessageData, Any).
// - `connectProtobuf(ctx, opts)`: a token from the REST SDK, a WebSocket (npm `ws`) offering the
//   subprotocol, and a `PbClient` that decodes every binary frame into a DownstreamMessage.
// - `PbClient`: records every frame, sends UpstreamMessages, waits for frames matching a
//   predicate, and on the reliable protocol acks the largest data sequence id it has seen.
//
// Decoded messages are plain objects (protobufjs `toObject` with camelCase names, uint64 as
// Number, bytes as Buffer, every oneof's case name under the oneof's own name). So a data message
// looks like { message: "dataMessage", dataMessage: { from, group, data: { data: "textData",
// textData }, sequenceId, metadata } }. Every wait is bounded by a deadline.

import { join } from "node:path";
import protobuf from "protobufjs";
import WebSocket from "ws";
import { repoRoot, waitFor } from "./harness.mjs";

export const PROTOBUF_SUBPROTOCOL = "protobuf.webpubsub.azure.v1";
export const PROTOBUF_RELIABLE_SUBPROTOCOL = "protobuf.reliable.webpubsub.azure.v1";
export const PROTO_PATH = join(repoRoot, "crates", "hubbub-proto", "proto", "webpubsub.v1.proto");

let schemaPromise;

/** The schema's types, loaded once from PROTO_PATH (google/protobuf/any.proto is bundled with protobufjs). */
export function loadSchema() {
  schemaPromise ??= protobuf.load(PROTO_PATH).then((root) => ({
    root,
    Upstream: root.lookupType("azure.webpubsub.UpstreamMessage"),
    Downstream: root.lookupType("azure.webpubsub.DownstreamMessage"),
    MessageData: root.lookupType("azure.webpubsub.MessageData"),
    Any: root.lookupType("google.protobuf.Any"),
  }));
  return schemaPromise;
}

const TO_OBJECT = { longs: Number, bytes: Buffer, defaults: true, oneofs: true };

/** Encode an UpstreamMessage given as a plain object (camelCase names); throws if it does not fit the schema. */
export function encodeUpstream(schema, object) {
  const problem = schema.Upstream.verify(object);
  if (problem) throw new Error(`not a valid UpstreamMessage (${problem}): ${JSON.stringify(object)}`);
  return Buffer.from(schema.Upstream.encode(schema.Upstream.fromObject(object)).finish());
}

/** Decode a DownstreamMessage into a plain object. */
export function decodeDownstream(schema, bytes) {
  return schema.Downstream.toObject(schema.Downstream.decode(bytes), TO_OBJECT);
}

/** MessageData payloads. */
export const pbData = {
  text: (s) => ({ textData: s }),
  json: (s) => ({ jsonData: typeof s === "string" ? s : JSON.stringify(s) }),
  binary: (bytes) => ({ binaryData: Buffer.from(bytes) }),
  any: (typeUrl, value) => ({ protobufData: { type_url: typeUrl, value: Buffer.from(value) } }),
};

/** A MessageData (as decoded) as "kind:payload" — text and json as is, bytes as base64. */
export function dataSummary(d) {
  if (!d || !d.data) return `<no data: ${JSON.stringify(d)}>`;
  const v = d[d.data];
  if (d.data === "binaryData") return `binaryData:${Buffer.from(v).toString("base64")}`;
  if (d.data === "protobufData") return `protobufData:${v.type_url ?? v.typeUrl}:${Buffer.from(v.value).toString("base64")}`;
  return `${d.data}:${v}`;
}

/** A short description of a decoded DownstreamMessage for failure messages. */
export function describe(m) {
  if (!m) return String(m);
  if (m.decodeError) return `<undecodable ${m.raw.toString("base64")}: ${m.decodeError}>`;
  if (m.text !== undefined) return `<text frame ${m.text.slice(0, 200)}>`;
  const body = m[m.message];
  if (m.message === "dataMessage") {
    return `data(from=${body.from}${body.group !== undefined ? ` group=${body.group}` : ""}${body.sequenceId !== undefined ? ` seq=${body.sequenceId}` : ""} ${dataSummary(body.data)}${Object.keys(body.metadata ?? {}).length ? ` meta=${JSON.stringify(body.metadata)}` : ""}${body.stream ? ` stream=${JSON.stringify(body.stream)}` : ""})`;
  }
  if (m.message === "systemMessage") return `system.${body.message}(${JSON.stringify(body[body.message])})`;
  return `${m.message}(${JSON.stringify(body)})`;
}

/** A recorded frame: the decoded message plus `binary`, `raw` and `socket` (which socket it came on: 0, 1, ...). */
function record(schema, data, isBinary, socket) {
  const raw = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
  if (!isBinary) return { binary: false, raw, socket, text: raw.toString("utf8") };
  try {
    return { ...decodeDownstream(schema, raw), binary: true, raw, socket };
  } catch (e) {
    return { binary: true, raw, socket, decodeError: e.message };
  }
}

/**
 * Open one WebSocket to `url` offering `protocols`. Resolves with { ws, protocol, frames } once
 * open (frames received from the very start are kept), or rejects with the HTTP status and body.
 */
function openSocket(url, protocols, onFrame, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { perMessageDeflate: false, handshakeTimeout: timeoutMs });
    ws.binaryType = "nodebuffer";
    ws.on("message", (data, isBinary) => onFrame(ws, data, isBinary));
    let done = false;
    const finish = (fn) => { if (!done) { done = true; fn(); } };
    ws.on("open", () => finish(() => resolve(ws)));
    ws.on("unexpected-response", (req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => { body += d; });
      const end = () => finish(() => {
        req.destroy();
        const e = new Error(`upgrade of ${url} answered ${res.statusCode} instead of 101: ${body}`);
        e.status = res.statusCode;
        e.body = body;
        reject(e);
      });
      res.on("end", end);
      res.on("error", end);
    });
    ws.on("error", (e) => finish(() => reject(new Error(`upgrade of ${url} failed: ${e.message}`))));
  });
}

/** A protobuf client connection (one or more sockets over time, for reliable recovery). */
export class PbClient {
  constructor(schema, { url, protocol, autoAck = true, label = "protobuf client" }) {
    this.schema = schema;
    this.url = url;
    this.protocol = protocol;
    this.reliable = protocol === PROTOBUF_RELIABLE_SUBPROTOCOL;
    this.autoAck = autoAck && this.reliable;
    this.label = label;
    this.frames = []; // every received frame, decoded (see record())
    this.sockets = []; // { ws, protocol, closed: { code, reason } | null, errors }
    this.maxSequenceId = 0;
    this.sentAcks = []; // sequence ids acked, in order
  }

  /** Open a socket to `url` (default: the original URL) and make it the current one. */
  async open(url = this.url) {
    const index = this.sockets.length;
    const entry = { ws: null, protocol: null, closed: null, errors: [] };
    this.sockets.push(entry);
    try {
      entry.ws = await openSocket(url, [this.protocol], (ws, data, isBinary) => this.onFrame(index, ws, data, isBinary));
    } catch (e) {
      this.sockets.pop();
      throw e;
    }
    entry.protocol = entry.ws.protocol;
    entry.ws.on("close", (code, reason) => { entry.closed = { code, reason: reason.toString("utf8") }; });
    entry.ws.on("error", (e) => entry.errors.push(e.message));
    return entry;
  }

  onFrame(index, ws, data, isBinary) {
    const f = record(this.schema, data, isBinary, index);
    this.frames.push(f);
    const seq = f.message === "dataMessage" ? f.dataMessage.sequenceId : undefined;
    if (typeof seq === "number" && seq > this.maxSequenceId) {
      this.maxSequenceId = seq;
      if (this.autoAck && ws.readyState === WebSocket.OPEN) {
        this.sentAcks.push(seq);
        ws.send(encodeUpstream(this.schema, { sequenceAckMessage: { sequenceId: seq } }));
      }
    }
  }

  get current() {
    return this.sockets[this.sockets.length - 1];
  }

  /** The subprotocol the server chose for the current socket. */
  get selectedProtocol() {
    return this.current?.protocol;
  }

  get closed() {
    return this.current?.closed ?? null;
  }

  /** Decoded data messages (DataMessage bodies with their socket index), in arrival order. */
  get data() {
    return this.frames.filter((f) => f.message === "dataMessage").map((f) => ({ ...f.dataMessage, socket: f.socket }));
  }

  /** The ConnectedMessage bodies received, in order. */
  get connectedMessages() {
    return this.frames
      .filter((f) => f.message === "systemMessage" && f.systemMessage.message === "connectedMessage")
      .map((f) => ({ ...f.systemMessage.connectedMessage, socket: f.socket }));
  }

  describeFrames(max = 30) {
    return JSON.stringify(this.frames.slice(-max).map(describe));
  }

  /** Send an UpstreamMessage (plain object) or raw bytes on the current socket. */
  send(message) {
    const ws = this.current.ws;
    ws.send(Buffer.isBuffer(message) || message instanceof Uint8Array ? message : encodeUpstream(this.schema, message));
  }

  /** Send a text frame (not part of the protocol). */
  sendText(text) {
    this.current.ws.send(text);
  }

  joinGroup(group, ackId) {
    this.send({ joinGroupMessage: { group, ...(ackId !== undefined ? { ackId } : {}) } });
  }

  leaveGroup(group, ackId) {
    this.send({ leaveGroupMessage: { group, ...(ackId !== undefined ? { ackId } : {}) } });
  }

  /** sendToGroup with `data` a MessageData (see pbData); opts: ackId, noEcho, metadata, ttlSeconds. */
  sendToGroup(group, data, { ackId, noEcho, metadata, ttlSeconds } = {}) {
    const m = { group, data };
    if (ackId !== undefined) m.ackId = ackId;
    if (noEcho !== undefined) m.noEcho = noEcho;
    if (metadata !== undefined) m.metadata = metadata;
    if (ttlSeconds !== undefined) m.ttlSeconds = ttlSeconds;
    this.send({ sendToGroupMessage: m });
  }

  /** Wait for a recorded frame (decoded) with `pred(frame)`; `from` skips the frames before that index. */
  async waitFrame(pred, what, timeoutMs = 5_000, from = 0) {
    return waitFor(() => this.frames.slice(from).find((f) => pred(f)), {
      timeoutMs, what: `${this.label}: ${what}; frames: ${this.describeFrames()}; closed: ${JSON.stringify(this.closed)}`,
    });
  }

  /** Wait for a DownstreamMessage of oneof case `kind` ("ackMessage", ...) whose body satisfies `pred`. */
  async waitMessage(kind, pred = () => true, what = kind, timeoutMs = 5_000) {
    const f = await this.waitFrame((f) => f.message === kind && pred(f[kind]), what, timeoutMs);
    return f[kind];
  }

  async waitAck(ackId, timeoutMs = 5_000) {
    return this.waitMessage("ackMessage", (a) => a.ackId === ackId, `ack ${ackId}`, timeoutMs);
  }

  /** Wait until `pred(data)` holds for the data messages. */
  async waitData(pred, what, timeoutMs = 5_000) {
    return waitFor(() => pred(this.data), {
      timeoutMs, what: `${this.label}: ${what}; frames: ${this.describeFrames()}; closed: ${JSON.stringify(this.closed)}`,
    });
  }

  /** The first ConnectedMessage (waits for it). */
  async connectedMessage(timeoutMs = 5_000) {
    return (await this.waitFrame((f) => f.message === "systemMessage" && f.systemMessage.message === "connectedMessage",
      "connected system message", timeoutMs)).systemMessage.connectedMessage;
  }

  async waitClosed(timeoutMs = 5_000, what = "the server to close the connection") {
    return waitFor(() => this.closed, { timeoutMs, what: `${this.label}: ${what}; frames: ${this.describeFrames()}` });
  }

  /** Drop the current socket at once (no close frame). */
  terminate() {
    for (const s of this.sockets) {
      try {
        if (s.ws && (s.ws.readyState === WebSocket.OPEN || s.ws.readyState === WebSocket.CONNECTING)) s.ws.terminate();
      } catch { /* gone */ }
    }
  }

  /** The URL that resumes this reliable connection: the original URL with the recovery parameters. */
  recoveryUrl(connectionId, reconnectionToken) {
    return `${this.url}&awps_connection_id=${encodeURIComponent(connectionId)}&awps_reconnection_token=${encodeURIComponent(reconnectionToken)}`;
  }
}

/**
 * Connect a protobuf client with a token from the REST SDK (ctx.service.getClientAccessToken).
 * opts: userId, roles, groups, reliable (default false), protocol (overrides), transformUrl,
 *       autoAck (reliable only, default true), label, waitConnected (default true).
 * The client is terminated by ctx.cleanup().
 */
export async function connectProtobuf(ctx, opts = {}) {
  const schema = await loadSchema();
  const tokenOpts = {};
  if (opts.userId !== undefined) tokenOpts.userId = opts.userId;
  if (opts.roles) tokenOpts.roles = opts.roles;
  if (opts.groups) tokenOpts.groups = opts.groups;
  let { url } = await (opts.service ?? ctx.service).getClientAccessToken(tokenOpts);
  if (opts.transformUrl) url = opts.transformUrl(url);
  const protocol = opts.protocol ?? (opts.reliable ? PROTOBUF_RELIABLE_SUBPROTOCOL : PROTOBUF_SUBPROTOCOL);
  const client = new PbClient(schema, {
    url, protocol, autoAck: opts.autoAck ?? true,
    label: opts.label ?? `${opts.reliable ? "reliable " : ""}protobuf client${opts.userId ? ` (${opts.userId})` : ""}`,
  });
  // Closed with the other raw connections at the end of the test.
  ctx.raws.push({ close: () => client.terminate() });
  await client.open();
  if (opts.waitConnected !== false) {
    const c = await client.connectedMessage();
    client.connectionId = c.connectionId;
    client.reconnectionToken = c.reconnectionToken;
  }
  return client;
}
