// Group streams with @azure/web-pubsub-client 1.1.0 (openGroupStream / onGroupStream) against a
// real Hubbub: a 1 MiB stream in 64 KiB fragments reaches a JSON receiver and a reliable JSON
// receiver whose TCP connection is cut mid-stream, in order and whole; an aborted stream reaches
// receivers as ended with the publisher's error; bad stream frames from a raw client get the
// protocol's answers (streamNack, streamClosed) without harming the connection; a publisher's
// disconnect ends its streams for the receivers.

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { waitFor } from "./harness.mjs";
import { withDataplane, arrayBuffer, sleep, JSON_SUBPROTOCOL } from "./dataplane.mjs";
import { startProxy } from "./proxy.mjs";

const T = { timeout: 90_000 };
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

/** Collects the streams a client receives: per stream id, its fragments and how it ended. */
function collectStreams(conn, options) {
  const streams = new Map();
  conn.client.onGroupStream(async (stream) => {
    const record = { group: stream.groupName, chunks: [], seqs: [], done: false, error: undefined };
    streams.set(stream.streamId, record);
    try {
      for await (const message of stream) {
        const data = message.dataType === "json" ? JSON.stringify(message.data)
          : message.dataType === "text" ? message.data : Buffer.from(message.data);
        record.chunks.push(Buffer.from(data));
        record.seqs.push(message.stream.streamSequenceId);
      }
    } catch (e) {
      record.error = e;
    }
    record.done = true;
  }, options);
  return streams;
}

test("a 1 MiB stream in 64 KiB fragments reaches a JSON and a reliable receiver (cut mid-stream), in order", T,
  withDataplane(async (ctx) => {
    const proxy = await startProxy(ctx.hub.publicPort);
    try {
      const sender = await ctx.connect({ protocol: "reliable", userId: "pub", roles: ROLES, label: "publisher" });
      const plain = await ctx.connect({ protocol: "json", userId: "plain", roles: ROLES, label: "json receiver" });
      const reliable = await ctx.connect({
        protocol: "reliable", userId: "rel", roles: ROLES, label: "reliable receiver",
        transformUrl: (u) => proxy.url(u),
      });
      for (const c of [sender, plain, reliable]) await c.client.joinGroup("films");
      const gotPlain = collectStreams(plain);
      const gotReliable = collectStreams(reliable);

      const payload = randomBytes(1024 * 1024);
      const chunk = 64 * 1024;
      const stream = await sender.client.openGroupStream("films", { noEcho: true });
      for (let i = 0; i < payload.length / chunk; i++) {
        if (i === 8) {
          // Cut the reliable receiver's TCP connection half way; it recovers on its own.
          proxy.cut();
        }
        await stream.write(arrayBuffer(payload.subarray(i * chunk, (i + 1) * chunk)), "binary");
      }
      await stream.end();

      for (const [label, got] of [["json", gotPlain], ["reliable", gotReliable]]) {
        await waitFor(() => got.get(stream.streamId)?.done, { timeoutMs: 30_000, what: `${label} receiver: the whole stream` });
        const record = got.get(stream.streamId);
        assert.equal(record.error, undefined, `${label}: ended without an error`);
        assert.equal(record.group, "films");
        assert.deepEqual(record.seqs, Array.from({ length: 16 }, (_, i) => i + 1), `${label}: fragments 1..16 once, in order`);
        assert.ok(Buffer.concat(record.chunks).equals(payload), `${label}: the 1 MiB arrives byte for byte`);
      }
      assert.equal(reliable.connected.length, 1, "the reliable receiver recovered its session (no new connection)");
      assert.equal(sender.data.length, 0, "noEcho: the publisher got none of its fragments");
    } finally {
      await ctx.cleanup();
      await proxy.close();
    }
  }));

test("an aborted stream reaches receivers as ended with the publisher's error; the publisher hears it closed", T,
  withDataplane(async (ctx) => {
    const sender = await ctx.connect({ protocol: "reliable", userId: "pub", roles: ROLES });
    const receiver = await ctx.connect({ protocol: "json", userId: "sub", roles: ROLES });
    await sender.client.joinGroup("g");
    await receiver.client.joinGroup("g");
    const got = collectStreams(receiver);
    const stream = await sender.client.openGroupStream("g", { streamId: "s-abort" });
    await stream.write("first", "text");
    await stream.write({ second: 2 }, "json");
    await stream.abort({ message: "the source went away", userErrorCode: "E42" });
    await waitFor(() => got.get("s-abort")?.done, { timeoutMs: 10_000, what: "the aborted stream ends" });
    const record = got.get("s-abort");
    assert.deepEqual(record.chunks.map((b) => b.toString()), ["first", '{"second":2}'].map((s) => s));
    assert.equal(record.error?.name, "UserError");
    assert.equal(record.error?.message, "the source went away");
    assert.equal(record.error?.userErrorCode, "E42");
    // The stream id is free again once closed.
    const again = await sender.client.openGroupStream("g", { streamId: "s-abort" });
    await again.end();
  }));

test("raw stream frames: out of order gets streamNack, unknown and duplicate streams get streamClosed, no permission is Forbidden", T,
  withDataplane(async (ctx) => {
    const raw = await ctx.raw({ protocols: [JSON_SUBPROTOCOL], userId: "raw", roles: ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.allowed"] });
    const member = await ctx.connect({ protocol: "json", userId: "m", roles: ROLES });
    await member.client.joinGroup("allowed");
    const got = collectStreams(member);
    const send = (o) => raw.send(JSON.stringify(o));
    const next = (pred, what) => raw.waitFrame((f) => f.json && pred(f.json), what, 5_000).then((f) => f.json);

    send({ type: "sendToGroup", group: "denied", stream: { streamId: "x" } });
    const forbidden = await next((j) => j.type === "streamClosed" && j.streamId === "x", "Forbidden");
    assert.equal(forbidden.error.name, "Forbidden");

    send({ type: "sendToGroup", group: "allowed", stream: { streamId: "bad", idleTimeoutMs: 0 } });
    const badStart = await next((j) => j.type === "streamClosed" && j.streamId === "bad", "a bad idle timeout");
    assert.equal(badStart.error.name, "BadRequest");
    assert.match(badStart.error.message, /idleTimeoutMs/);

    send({ type: "sendToGroup", group: "allowed", stream: { streamId: "s1", idleTimeoutMs: 60000 } });
    assert.equal((await next((j) => j.type === "streamAck" && j.streamId === "s1", "start ack")).expectedSequenceId, 1);
    send({ type: "sendToGroup", group: "allowed", stream: { streamId: "s1" } });
    const dup = await next((j) => j.type === "streamClosed" && j.streamId === "s1", "duplicate start refused");
    assert.equal(dup.error.name, "BadRequest");

    send({ type: "streamData", streamId: "s1", streamSequenceId: 3, dataType: "text", data: "too early" });
    const nack = await next((j) => j.type === "streamNack", "nack");
    assert.deepEqual([nack.name, nack.expectedSequenceId], ["InvalidSequenceId", 1]);
    send({ type: "streamData", streamId: "s1", streamSequenceId: 1, dataType: "text", data: "one" });
    assert.equal((await next((j) => j.type === "streamAck" && j.expectedSequenceId === 2, "ack 2")).streamId, "s1");
    send({ type: "streamData", streamId: "s1", streamSequenceId: 1, dataType: "text", data: "one again" });
    await next((j) => j.type === "streamAck" && j.expectedSequenceId === 2 && j !== null, "a replayed fragment is acked, not delivered");
    send({ type: "streamData", streamId: "s1" }); // keep-alive
    send({ type: "streamData", streamId: "nope", streamSequenceId: 1, dataType: "text", data: "?" });
    const missing = await next((j) => j.type === "streamClosed" && j.streamId === "nope", "unknown stream");
    assert.equal(missing.error.name, "StreamNotFound");
    // A malformed fragment (no data) ends the stream with BadRequest; the connection goes on.
    send({ type: "streamData", streamId: "s1", streamSequenceId: 2, dataType: "text" });
    const bad = await next((j) => j.type === "streamClosed" && j.streamId === "s1", "malformed fragment");
    assert.equal(bad.error.name, "BadRequest");
    await waitFor(() => got.get("s1")?.done, { timeoutMs: 5_000, what: "the member sees s1 end" });
    assert.deepEqual(got.get("s1").chunks.map((b) => b.toString()), ["one"], "the replay and the bad frame delivered nothing");
    assert.equal(got.get("s1").error?.name, "Cancelled");

    send({ type: "sendToGroup", group: "allowed", stream: { streamId: "s2" } });
    await next((j) => j.type === "streamAck" && j.streamId === "s2", "s2 start ack");
    send({ type: "streamData", streamId: "s2", streamSequenceId: 1, dataType: "binary", data: "AQID" });
    send({ type: "streamEnd", streamId: "s2" });
    const closed = await next((j) => j.type === "streamClosed" && j.streamId === "s2", "s2 closed");
    assert.equal(closed.error, undefined, "closed normally");
    await waitFor(() => got.get("s2")?.done, { timeoutMs: 5_000, what: "the member sees s2 end" });
    assert.deepEqual([...got.get("s2").chunks[0]], [1, 2, 3]);
    assert.equal(got.get("s2").error, undefined);
    // The permission revoked mid-stream: the next fragment ends the stream with Forbidden.
    send({ type: "sendToGroup", group: "allowed", stream: { streamId: "s3" } });
    await next((j) => j.type === "streamAck" && j.streamId === "s3", "s3 start ack");
    await ctx.service.revokePermission(raw.connectionId, "sendToGroup", { targetName: "allowed" });
    send({ type: "streamData", streamId: "s3", streamSequenceId: 1, dataType: "text", data: "too late" });
    const revoked = await next((j) => j.type === "streamClosed" && j.streamId === "s3", "s3 closed");
    assert.equal(revoked.error?.name, "Forbidden");
    await waitFor(() => got.get("s3")?.done, { timeoutMs: 5_000, what: "the member sees s3 end" });
    assert.equal(got.get("s3").error?.name, "Forbidden");
    assert.deepEqual(got.get("s3").chunks, [], "the refused fragment was not delivered");

    // The raw connection still works.
    send({ type: "joinGroup", group: "allowed", ackId: 7 });
    assert.equal((await next((j) => j.type === "ack" && j.ackId === 7, "ack")).success, true);
  }));

test("a publisher that disconnects ends its streams for the receivers (Cancelled); an idle stream times out", T,
  withDataplane(async (ctx) => {
    const sender = await ctx.connect({ protocol: "json", userId: "pub", roles: ROLES });
    const receiver = await ctx.connect({ protocol: "reliable", userId: "sub", roles: ROLES });
    await sender.client.joinGroup("g");
    await receiver.client.joinGroup("g");
    const got = collectStreams(receiver);
    const idle = await sender.client.openGroupStream("g", { streamId: "idle", idleTimeoutInMs: 500 });
    const errors = [];
    idle.onError((e) => errors.push(e));
    await idle.write("before idle", "text");
    const live = await sender.client.openGroupStream("g", { streamId: "live" });
    await live.write("hello", "text");
    await waitFor(() => got.get("idle")?.done, { timeoutMs: 5_000, what: "the idle stream times out" });
    assert.equal(got.get("idle").error?.name, "IdleTimeout");
    await waitFor(() => errors.length > 0, { timeoutMs: 5_000, what: "the publisher hears IdleTimeout" });
    assert.equal(errors[0].name, "IdleTimeout");

    sender.stop();
    await waitFor(() => got.get("live")?.done, { timeoutMs: 10_000, what: "the live stream ends with its publisher" });
    assert.equal(got.get("live").error?.name, "Cancelled");
    assert.deepEqual(got.get("live").chunks.map((b) => b.toString()), ["hello"]);
    await sleep(100);
  }));

test("a reliable publisher cut mid-stream recovers its session and its stream: every fragment once, in order", T,
  withDataplane(async (ctx) => {
    const proxy = await startProxy(ctx.hub.publicPort);
    try {
      const sender = await ctx.connect({
        protocol: "reliable", userId: "pub", roles: ROLES, label: "publisher via proxy",
        transformUrl: (u) => proxy.url(u), autoReconnect: false,
      });
      const receiver = await ctx.connect({ protocol: "json", userId: "sub", roles: ROLES });
      await sender.client.joinGroup("g");
      await receiver.client.joinGroup("g");
      const got = collectStreams(receiver);
      const stream = await sender.client.openGroupStream("g", { streamId: "survivor" });
      for (let i = 1; i <= 40; i++) {
        if (i === 15) proxy.cut(); // the client recovers the same session on its own
        await stream.write(`fragment ${i}`, "text");
      }
      await stream.end();
      await waitFor(() => got.get("survivor")?.done, { timeoutMs: 30_000, what: "the stream's end after recovery" });
      const record = got.get("survivor");
      assert.equal(record.error, undefined);
      assert.deepEqual(record.chunks.map((b) => b.toString()), Array.from({ length: 40 }, (_, i) => `fragment ${i + 1}`),
        "every fragment once, in order, across the publisher's reconnect");
      assert.equal(sender.connected.length, 1, "the publisher recovered its session (no new connection)");
      assert.ok(proxy.requestLines.some((l) => l.includes("awps_reconnection_token=")), "it used the recovery URL");
    } finally {
      await ctx.cleanup();
      await proxy.close();
    }
  }));
