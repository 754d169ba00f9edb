// The protobuf client subprotocols (protobuf.webpubsub.azure.v1, protobuf.reliable.webpubsub.azure.v1)
// against a real Hubbub, with a small protobufjs client built from Azure's published schema
// (protobuf-client.mjs) next to official @azure/web-pubsub-client 1.1.0 JSON clients:
// the handshake, groups and the three data types both ways plus REST sends and metadata,
// protobuf_data (the encoded Any: dataType protobuf for JSON clients, protobuf_data for protobuf
// ones, a binary frame for simple ones), recovery of a reliable protobuf
// connection after a TCP cut, bad input, and group streams published over protobuf.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";
import { withDataplane, arrayBuffer, norm, sleep } from "./dataplane.mjs";
import { startProxy } from "./proxy.mjs";
import express from "express";
import { startUpstream, configureHub, handlerSetting, waitEvent } from "./upstream.mjs";
import {
  connectProtobuf, loadSchema, pbData, dataSummary, describe,
  PROTOBUF_SUBPROTOCOL, PROTOBUF_RELIABLE_SUBPROTOCOL,
} from "./protobuf-client.mjs";

const T = { timeout: 90_000 };
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

/** A DataMessage as "from[:group]:case:payload[ meta=...]" (sequence ids checked separately). */
function pbSummary(m) {
  const meta = Object.keys(m.metadata ?? {}).length ? ` meta=${JSON.stringify(sortKeys(m.metadata))}` : "";
  return `${m.from}${m.group !== undefined ? `:${m.group}` : ""}:${dataSummary(m.data)}${meta}`;
}

function sortKeys(o) {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

const b64 = (bytes) => Buffer.from(bytes).toString("base64");

for (const [name, protocol] of [["plain", PROTOBUF_SUBPROTOCOL], ["reliable", PROTOBUF_RELIABLE_SUBPROTOCOL]]) {
  test(`handshake (${name}): the server selects ${protocol} and first sends a ConnectedMessage`, T,
    withDataplane(async (ctx) => {
      const pb = await connectProtobuf(ctx, { userId: "pb-user", reliable: name === "reliable", waitConnected: false });
      assert.equal(pb.selectedProtocol, protocol, "Sec-WebSocket-Protocol of the 101");
      await pb.waitFrame(() => true, "a first frame");
      const first = pb.frames[0];
      assert.equal(first.binary, true, "the first frame is binary");
      assert.equal(first.decodeError, undefined, "the first frame decodes as a DownstreamMessage");
      assert.equal(first.message, "systemMessage", `first frame: ${describe(first)}`);
      assert.equal(first.systemMessage.message, "connectedMessage");
      const c = first.systemMessage.connectedMessage;
      assert.equal(c.userId, "pb-user");
      assert.match(c.connectionId, /^\S+$/);
      assert.equal(await ctx.service.connectionExists(c.connectionId), true, "REST knows the connection id");
      if (name === "reliable") {
        assert.equal(typeof c.reconnectionToken, "string");
        assert.ok(c.reconnectionToken.length > 0, "a non-empty reconnection token");
      } else {
        assert.equal(c.reconnectionToken, undefined, "no reconnection token on the plain protocol");
      }
      // An anonymous connection gets user_id "" (the field is a plain string).
      const anon = await connectProtobuf(ctx, { reliable: name === "reliable" });
      assert.equal((await anon.connectedMessage()).userId, "");
      assert.notEqual(anon.connectionId, c.connectionId);
      // Nothing else arrives unasked.
      await sleep(200);
      assert.equal(pb.frames.length, 1, `only the connected message: ${pb.describeFrames()}`);
    }));
}

test("groups and data types: protobuf <-> JSON clients (1.1.0 json and reliable), REST sends, metadata", T,
  withDataplane(async (ctx) => {
    const pb = await connectProtobuf(ctx, { userId: "pb", roles: ROLES });
    const json = await ctx.connect({ protocol: "json", userId: "js", roles: ROLES, label: "json client" });
    const rel = await ctx.connect({ protocol: "reliable", userId: "rel", roles: ROLES, label: "reliable json client" });
    await json.client.joinGroup("room");
    await rel.client.joinGroup("room");

    pb.joinGroup("room", 1);
    assert.deepEqual(await pb.waitAck(1), { ackId: 1, success: true });

    // protobuf -> JSON: text, binary and json, each acked.
    pb.sendToGroup("room", pbData.text("hello"), { ackId: 2 });
    pb.sendToGroup("room", pbData.binary([0, 1, 2, 255]), { ackId: 3 });
    pb.sendToGroup("room", pbData.json('{"a":1,"b":[true,null]}'), { ackId: 4 });
    for (const id of [2, 3, 4]) assert.deepEqual(await pb.waitAck(id), { ackId: id, success: true });

    const fromPb = ["group:room:text:hello", "group:room:binary:b64:AAEC/w==", 'group:room:json:{"a":1,"b":[true,null]}'];
    for (const c of [json, rel]) {
      await c.waitCount(3);
      assert.deepEqual(c.summary(), fromPb, `${c.label}: what the protobuf client sent`);
      assert.deepEqual(c.data.map((m) => m.fromUserId), ["pb", "pb", "pb"], `${c.label}: fromUserId`);
    }
    assert.deepEqual(rel.data.map((m) => m.sequenceId), [1, 2, 3], "reliable json client: sequence ids");
    assert.deepEqual(json.data.map((m) => m.sequenceId), [undefined, undefined, undefined]);
    // The protobuf client hears its own messages (no_echo unset).
    await pb.waitData((d) => d.length >= 3, "own three messages");

    // JSON -> protobuf: text, json, binary.
    await json.client.sendToGroup("room", "from-js", "text");
    await json.client.sendToGroup("room", { x: 1 }, "json");
    await json.client.sendToGroup("room", arrayBuffer([9, 8, 7]), "binary");
    await pb.waitData((d) => d.length >= 6, "the json client's three messages");

    // REST -> protobuf: from "server".
    await ctx.service.sendToAll("srv-text", { contentType: "text/plain" });
    await ctx.service.sendToAll({ s: 1 });
    await ctx.service.sendToAll(Buffer.from([1, 2, 3]), { contentType: "application/octet-stream" });
    await pb.waitData((d) => d.length >= 9, "three REST sends");

    // Metadata on a protobuf sendToGroup.
    const metadata = { k1: "v1", "trace-id": "abc-123" };
    pb.sendToGroup("room", pbData.text("with-meta"), { ackId: 5, metadata });
    assert.deepEqual(await pb.waitAck(5), { ackId: 5, success: true });
    await pb.waitData((d) => d.length >= 10, "the metadata message");
    for (const c of [json, rel]) {
      const m = await c.waitMessages((ms) => ms.find((x) => x.data === "with-meta"), "the metadata message");
      assert.deepEqual(m.metadata, metadata, `${c.label}: metadata`);
      assert.equal(m.fromUserId, "pb");
    }

    await sleep(200);
    assert.deepEqual(pb.data.map(pbSummary), [
      "group:room:textData:hello",
      "group:room:binaryData:AAEC/w==",
      'group:room:jsonData:{"a":1,"b":[true,null]}',
      "group:room:textData:from-js",
      'group:room:jsonData:{"x":1}',
      "group:room:binaryData:CQgH",
      "server:textData:srv-text",
      'server:jsonData:{"s":1}',
      "server:binaryData:AQID",
      `group:room:textData:with-meta meta=${JSON.stringify(metadata)}`,
    ], "what the protobuf client received, in order");
    assert.ok(pb.data.every((m) => m.sequenceId === undefined), "no sequence ids on the plain protobuf protocol");
    assert.ok(pb.data.every((m) => m.stream == null), "no stream info");
    assert.ok(pb.frames.every((f) => f.binary && !f.decodeError), `every frame is a binary DownstreamMessage: ${pb.describeFrames()}`);
  }));

test("protobuf_data (google.protobuf.Any): dataType protobuf for JSON clients, protobuf_data for protobuf ones, binary for simple ones, both ways", T,
  withDataplane(async (ctx) => {
    const schema = await loadSchema();
    const sender = await connectProtobuf(ctx, { userId: "pb-sender", roles: ROLES, label: "protobuf sender" });
    const receiver = await connectProtobuf(ctx, { userId: "pb-receiver", roles: ROLES, label: "protobuf receiver" });
    const json = await ctx.connect({ protocol: "json", userId: "js", roles: ROLES });
    const rel = await ctx.connect({ protocol: "reliable", userId: "rel", roles: ROLES });
    const simple = await ctx.raw({ userId: "simple", query: "&webpubsub_mode=sendToGroup&group=g" });
    for (const c of [json, rel]) await c.client.joinGroup("g");
    await ctx.service.group("g").addUser("simple");
    receiver.joinGroup("g", 1);
    await receiver.waitAck(1);

    const typeUrl = "type.googleapis.com/google.protobuf.StringValue";
    const value = Buffer.from([0x0a, 0x02, 0x68, 0x69]); // StringValue { value: "hi" }
    sender.sendToGroup("g", pbData.any(typeUrl, value), { ackId: 9, noEcho: true });
    assert.deepEqual(await sender.waitAck(9), { ackId: 9, success: true });

    // The encoded Any: field 1 (type_url), field 2 (value).
    const encodedAny = Buffer.concat([
      Buffer.from([0x0a, typeUrl.length]), Buffer.from(typeUrl), Buffer.from([0x12, value.length]), value,
    ]);
    assert.ok(Buffer.from(schema.Any.encode({ type_url: typeUrl, value }).finish()).equals(encodedAny));
    for (const c of [json, rel]) {
      const [m] = await c.waitCount(1);
      assert.equal(m.dataType, "protobuf", `${c.label}: dataType`);
      assert.equal(norm(m.dataType, m.data), `b64:${b64(encodedAny)}`, `${c.label}: the encoded Any`);
      assert.equal(m.fromUserId, "pb-sender");
    }
    await receiver.waitData((d) => d.length >= 1, "the Any");
    assert.deepEqual(receiver.data.map(pbSummary), [`group:g:protobufData:${typeUrl}:${b64(value)}`],
      "a protobuf receiver gets protobuf_data");
    const frame = await simple.waitFrame((f) => f.isBinary, "the simple client's binary frame");
    assert.ok(Buffer.from(frame.data).equals(encodedAny), "a simple client gets the encoded Any as a binary frame");
    await sleep(100);
    assert.equal(sender.data.length, 0, "no_echo: the sender got nothing back");

    // The other way: the official JSON client sends dataType protobuf; the protobuf receiver
    // gets protobuf_data; bytes that are not an encoded Any are refused.
    const other = Buffer.from(schema.Any.encode({ type_url: "type.googleapis.com/x.Y", value: Buffer.from([8, 1]) }).finish());
    await json.client.sendToGroup("g", other.buffer.slice(other.byteOffset, other.byteOffset + other.length), "protobuf");
    await receiver.waitData((d) => d.length >= 2, "the JSON client's protobuf message");
    assert.equal(pbSummary(receiver.data[1]), `group:g:protobufData:type.googleapis.com/x.Y:${b64(Buffer.from([8, 1]))}`);
    const garbage = Buffer.from([0xff, 0xff, 0xff]);
    const refused = await json.client.sendToGroup("g", garbage.buffer.slice(garbage.byteOffset, garbage.byteOffset + 3), "protobuf")
      .then(() => undefined, (e) => e);
    assert.equal(refused?.errorDetail?.name, "BadRequest", `not an Any: ${refused}`);
  }));

test("reliable protobuf: TCP cut, sends meanwhile, resumed with awps_connection_id/awps_reconnection_token: all once, in order", T,
  withDataplane(async (ctx) => {
    const proxy = await startProxy(ctx.hub.publicPort);
    try {
      const pb = await connectProtobuf(ctx, {
        userId: "rel-pb", groups: ["rg"], roles: ["webpubsub.sendToGroup.rg"], reliable: true,
        transformUrl: (u) => proxy.url(u), label: "reliable protobuf via proxy",
      });
      const id = pb.connectionId;
      const token = pb.reconnectionToken;
      assert.ok(token, "a reconnection token");
      const other = await ctx.connect({ protocol: "json", userId: "other", roles: ROLES });
      const svc = ctx.service;
      for (let i = 1; i <= 3; i++) await svc.group("rg").sendToAll(`m${i}`, { contentType: "text/plain" });
      await pb.waitData((d) => d.length >= 3, "m1..m3");
      assert.deepEqual(pb.sentAcks, [1, 2, 3], "the client acked each sequence id");
      // A ping answered means the server has read everything sent before it, acks included.
      const from = pb.frames.length;
      pb.send({ pingMessage: {} });
      await pb.waitFrame((f) => f.message === "pongMessage", "the pong after the acks", 5_000, from);

      proxy.cut();
      await pb.waitClosed(5_000, "the socket to drop with the cut");
      assert.equal(await svc.connectionExists(id), true, "the session is kept while cut");
      await svc.sendToConnection(id, "m4", { contentType: "text/plain" });
      await svc.group("rg").sendToAll("m5", { contentType: "text/plain" });
      await other.client.sendToGroup("rg", "m6", "text");
      await svc.sendToConnection(id, "m7", { contentType: "text/plain" });
      await svc.group("rg").sendToAll("m8", { contentType: "text/plain" });

      const before = pb.frames.length;
      await pb.open(pb.recoveryUrl(id, token));
      assert.equal(pb.selectedProtocol, PROTOBUF_RELIABLE_SUBPROTOCOL);
      assert.ok(proxy.requestLines.at(-1).includes(`awps_connection_id=${id}`), proxy.requestLines.at(-1));
      await pb.waitData((d) => d.length >= 8, "m4..m8 after recovery", 10_000);
      await svc.sendToConnection(id, "m9", { contentType: "text/plain" });
      await pb.waitData((d) => d.length >= 9, "m9 after recovery");

      // What the resumed socket got first: a new ConnectedMessage, same id and token.
      const resumed = pb.frames.slice(before);
      assert.equal(resumed[0].message, "systemMessage", `first frame after resuming: ${describe(resumed[0])}`);
      assert.deepEqual(resumed[0].systemMessage.connectedMessage,
        { connectionId: id, userId: "rel-pb", reconnectionToken: token }, "the ConnectedMessage on resume");
      assert.equal(pb.connectedMessages.length, 2, "one ConnectedMessage per socket");

      await sleep(300); // room for a late duplicate
      const data = pb.data;
      assert.deepEqual(data.map((m) => m.data.textData), ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"],
        `every message exactly once, in order: ${pb.describeFrames()}`);
      assert.deepEqual(data.map((m) => m.sequenceId), [1, 2, 3, 4, 5, 6, 7, 8, 9], "sequence ids 1..9");
      assert.deepEqual(data.map((m) => m.from), ["group", "group", "group", "server", "group", "group", "server", "group", "server"]);
      assert.deepEqual(data.map((m) => m.socket), [0, 0, 0, 1, 1, 1, 1, 1, 1], "m4.. came on the resumed socket");

      // The resumed connection works: a sendToGroup with an ack, echoed with the next sequence id.
      pb.sendToGroup("rg", pbData.text("after"), { ackId: 1 });
      assert.deepEqual(await pb.waitAck(1), { ackId: 1, success: true });
      const echo = await pb.waitData((d) => d.find((m) => m.data.textData === "after"), "own message after recovery");
      assert.equal(echo.sequenceId, 10);
      assert.equal(await svc.connectionExists(id), true);
    } finally {
      await ctx.cleanup();
      await proxy.close();
    }
  }));

test("bad input: acked errors (BadRequest, Forbidden), ignored empty frames, malformed frames close with 1008 after a DisconnectedMessage", T,
  withDataplane(async (ctx) => {
    const roles = ["webpubsub.joinLeaveGroup.g", "webpubsub.sendToGroup.g"];
    const a = await connectProtobuf(ctx, { userId: "a", roles, label: "protobuf a" });
    const b = await connectProtobuf(ctx, { userId: "b", roles, label: "protobuf b" });
    const c = await connectProtobuf(ctx, { userId: "c", roles, label: "protobuf c" });
    const json = await ctx.connect({ protocol: "json", userId: "js", roles: ROLES });
    await json.client.joinGroup("g");
    b.joinGroup("g", 1);
    await b.waitAck(1);

    // With an ack id, a bad request gets an ack with an error; the connection goes on.
    a.send({ sendToGroupMessage: { group: "g", ackId: 11 } }); // no data
    assert.deepEqual(await a.waitAck(11), { ackId: 11, success: false, error: { name: "BadRequest", message: "'sendToGroup' needs 'data'" } });
    a.sendToGroup("g", pbData.json("{not json"), { ackId: 12 });
    const badJson = await a.waitAck(12);
    assert.equal(badJson.success, false);
    assert.equal(badJson.error.name, "BadRequest");
    assert.match(badJson.error.message, /^'jsonData' is not valid JSON/);
    a.send({ sendToGroupMessage: { group: "g", ackId: 13, data: {} } }); // MessageData with no case
    assert.equal((await a.waitAck(13)).error?.name, "BadRequest");
    a.sendToGroup("secret", pbData.text("x"), { ackId: 14 });
    assert.deepEqual(await a.waitAck(14), {
      ackId: 14, success: false, error: { name: "Forbidden", message: "The client has no permission to send message to group 'secret'." },
    });
    a.joinGroup("secret", 15);
    assert.deepEqual(await a.waitAck(15), {
      ackId: 15, success: false, error: { name: "Forbidden", message: "The client has no permission to join or leave group 'secret'." },
    });
    // An empty frame and one with only an unknown field are UpstreamMessages with no case: ignored.
    a.send(Buffer.alloc(0));
    a.send(Buffer.from([0xa0, 0x01, 0x05])); // field 20, varint 5
    a.sendToGroup("g", pbData.text("still here"), { ackId: 16 });
    assert.deepEqual(await a.waitAck(16), { ackId: 16, success: true });
    await json.waitMessages((ms) => ms.some((m) => m.data === "still here"), "a's message after the bad ones");
    assert.equal(a.closed, null, "a is still open");

    // Without an ack id, a frame that is not an UpstreamMessage closes the connection: a
    // DisconnectedMessage, then close code 1008.
    a.send(Buffer.from([0x0a, 0x05, 0x01])); // field 1, length 5, one byte: truncated
    const closed = await a.waitClosed();
    assert.equal(closed.code, 1008, `close code: ${JSON.stringify(closed)}`);
    const last = a.frames.at(-1);
    assert.equal(last.message, "systemMessage", `last frame before the close: ${describe(last)}`);
    const reason = last.systemMessage.disconnectedMessage?.reason;
    assert.match(reason ?? "", /^Invalid message: the frame is not a valid protobuf UpstreamMessage/, `reason: ${reason}`);
    assert.equal(closed.reason, reason.slice(0, 123), "the close frame carries the same reason");
    // A text frame is not a protobuf message either.
    c.sendText("hello?");
    const closedC = await c.waitClosed();
    assert.equal(closedC.code, 1008);
    assert.deepEqual(c.frames.at(-1).systemMessage?.disconnectedMessage,
      { reason: "Invalid message: the protobuf subprotocols take binary frames only" });
    await waitFor(async () => !(await ctx.service.connectionExists(a.connectionId)), { timeoutMs: 5_000, what: "a is gone" });

    // The others are unaffected.
    b.sendToGroup("g", pbData.text("from b"), { ackId: 2 });
    assert.deepEqual(await b.waitAck(2), { ackId: 2, success: true });
    await json.waitMessages((ms) => ms.some((m) => m.data === "from b" && m.fromUserId === "b"), "b's message");
    await ctx.service.group("g").sendToAll("rest", { contentType: "text/plain" });
    await b.waitData((d) => d.some((m) => m.data.textData === "rest"), "REST message to b");
    assert.equal(b.closed, null);
    assert.equal(await ctx.service.connectionExists(b.connectionId), true);
    assert.deepEqual(b.data.map(pbSummary), ["group:g:textData:still here", "group:g:textData:from b", "group:g:textData:rest"]);
  }));

test("group streams over protobuf: open, acked fragments, end; an official 1.1.0 onGroupStream receiver gets them in order", T,
  withDataplane(async (ctx) => {
    const pub = await connectProtobuf(ctx, { userId: "pub", roles: ROLES, label: "protobuf publisher" });
    const pbSub = await connectProtobuf(ctx, { userId: "pbsub", roles: ROLES, label: "protobuf receiver" });
    const sub = await ctx.connect({ protocol: "json", userId: "sub", roles: ROLES });
    await sub.client.joinGroup("films");
    pbSub.joinGroup("films", 1);
    await pbSub.waitAck(1);
    const record = { chunks: [], seqs: [], types: [], done: false, error: undefined, group: undefined };
    sub.client.onGroupStream(async (stream) => {
      record.group = stream.groupName;
      record.streamId = stream.streamId;
      try {
        for await (const message of stream) {
          record.types.push(message.dataType);
          record.chunks.push(message.dataType === "binary" ? `b64:${b64(Buffer.from(message.data))}`
            : message.dataType === "json" ? JSON.stringify(message.data) : message.data);
          record.seqs.push(message.stream.streamSequenceId);
        }
      } catch (e) {
        record.error = e;
      }
      record.done = true;
    });

    pub.send({ sendToGroupMessage: { group: "films", stream: { streamId: "s1" } } });
    assert.deepEqual(await pub.waitMessage("streamAckMessage", (m) => m.streamId === "s1", "stream start ack"),
      { streamId: "s1", expectedSequenceId: 1 });
    const fragments = [pbData.text("one"), pbData.binary([1, 2, 3]), pbData.json('{"n":3}')];
    for (let i = 0; i < fragments.length; i++) {
      const seq = i + 1;
      pub.send({ streamDataMessage: { streamId: "s1", streamSequenceId: seq, data: fragments[i] } });
      assert.deepEqual(
        await pub.waitMessage("streamAckMessage", (m) => m.expectedSequenceId === seq + 1, `ack of fragment ${seq}`),
        { streamId: "s1", expectedSequenceId: seq + 1 });
    }
    // Out of order: a nack naming the expected fragment.
    pub.send({ streamDataMessage: { streamId: "s1", streamSequenceId: 9, data: pbData.text("too early") } });
    const nack = await pub.waitMessage("streamNackMessage", () => true, "nack");
    assert.deepEqual([nack.streamId, nack.name, nack.expectedSequenceId], ["s1", "InvalidSequenceId", 4]);
    pub.send({ streamEndMessage: { streamId: "s1" } });
    const closed = await pub.waitMessage("streamClosedMessage", (m) => m.streamId === "s1", "stream closed");
    assert.equal(closed.error, undefined, `closed without an error: ${JSON.stringify(closed)}`);

    await waitFor(() => record.done, { timeoutMs: 10_000, what: `the JSON receiver sees the stream end: ${JSON.stringify(record)}` });
    assert.equal(record.error, undefined, `ended without an error: ${record.error}`);
    assert.equal(record.group, "films");
    assert.equal(record.streamId, "s1");
    assert.deepEqual(record.types, ["text", "binary", "json"]);
    assert.deepEqual(record.chunks, ["one", `b64:${b64([1, 2, 3])}`, '{"n":3}']);
    assert.deepEqual(record.seqs, [1, 2, 3]);

    // The protobuf receiver: DataMessages with StreamInfo, then the end (empty text, end_of_stream).
    await pbSub.waitData((d) => d.length >= 4, "three fragments and the end");
    assert.deepEqual(pbSub.data.map((m) => [pbSummary(m), m.stream]), [
      ["group:films:textData:one", { streamId: "s1", streamSequenceId: 1 }],
      [`group:films:binaryData:${b64([1, 2, 3])}`, { streamId: "s1", streamSequenceId: 2 }],
      ['group:films:jsonData:{"n":3}', { streamId: "s1", streamSequenceId: 3 }],
      ["group:films:textData:", { streamId: "s1", streamSequenceId: 4, endOfStream: true }],
    ]);
    assert.equal(pub.data.length, 0, "the publisher is not in the group");
  }));

test("a protobuf event reaches the event handler as application/x-protobuf (the encoded Any); an x-protobuf answer comes back as protobuf_data", T,
  withDataplane(async (ctx) => {
    const schema = await loadSchema();
    const answer = Buffer.from(schema.Any.encode({ type_url: "type.googleapis.com/reply.R", value: Buffer.from([8, 7]) }).finish());
    const app = express();
    app.use((req, res, next) => {
      if (req.method === "OPTIONS") {
        res.setHeader("WebHook-Allowed-Origin", "*");
        return res.status(200).end();
      }
      req.resume();
      req.on("end", () => {
        res.setHeader("Content-Type", "application/x-protobuf");
        res.status(200).end(answer);
      });
      return undefined;
    });
    const up = await startUpstream(app);
    try {
      await configureHub(ctx.hub, ctx.hubName, {
        eventHandlers: [handlerSetting(`${up.base}/upstream/{event}`, { systemEvents: [] })],
      });
      const pb = await connectProtobuf(ctx, { userId: "pb", roles: ROLES, label: "protobuf client" });
      const typeUrl = "type.googleapis.com/google.protobuf.Int32Value";
      pb.send({ eventMessage: { event: "pbevent", data: pbData.any(typeUrl, [0x08, 0x2a]), ackId: 5 } });
      assert.deepEqual(await pb.waitAck(5), { ackId: 5, success: true });
      const request = await waitEvent(up, "pbevent", pb.connectionId);
      assert.equal(request.headers["content-type"], "application/x-protobuf");
      const sent = schema.Any.decode(request.body);
      assert.deepEqual([sent.type_url ?? sent.typeUrl, [...sent.value]], [typeUrl, [0x08, 0x2a]], "the encoded Any as the body");
      await pb.waitData((d) => d.length >= 1, "the handler's answer");
      assert.deepEqual(pb.data.map(pbSummary), [`server:protobufData:type.googleapis.com/reply.R:${b64(Buffer.from([8, 7]))}`]);
    } finally {
      await up.close();
    }
  }));
