// Simple WebSocket clients (npm `ws`, no subprotocol): REST messages arrive as raw
// frames; webpubsub_mode=sendToGroup publishes every frame to the group; in the default
// sendEvent mode (no event handler) a frame from the client closes the connection.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";
import {
  withDataplane, upgrade, clientUrl, rest, API, MARKER_PREFIX, norm, sleep,
} from "./dataplane.mjs";

const T = { timeout: 60_000 };

/** Frames without flush markers, as "t:<text>" / "b:<hex>". */
function rawFrames(raw) {
  return raw.frames
    .filter((f) => f.isBinary || !f.text.startsWith(MARKER_PREFIX))
    .map((f) => (f.isBinary ? `b:${f.data.toString("hex")}` : `t:${f.text}`));
}

test("REST messages reach a simple client as raw frames: text, JSON text as sent, binary", T,
  withDataplane(async (ctx) => {
    const svc = ctx.service;
    const s = await ctx.raw({ userId: "simple-u", groups: ["sg"] });
    assert.equal(s.ws.protocol, "", "no subprotocol selected");
    assert.equal(s.response?.headers["sec-websocket-protocol"], undefined, "no Sec-WebSocket-Protocol header in the 101");
    const sub = await ctx.connect({ protocol: "json", userId: "simple-u", label: "json client of the same user" });

    await svc.sendToUser("simple-u", "plain text", { contentType: "text/plain" });
    await svc.sendToUser("simple-u", { a: 1, b: "x" });
    await svc.sendToUser("simple-u", "Hello");
    await svc.sendToUser("simple-u", Buffer.from([0, 1, 2, 255]));
    await svc.group("sg").sendToAll("group text", { contentType: "text/plain" });
    await svc.group("sg").sendToAll(Buffer.from([7]));
    await svc.sendToAll({ all: true });
    // Bodies exactly as sent, including JSON whitespace, charset parameters and UTF-8.
    const spaced = '{ "spaced" : [1,  2] }';
    let r = await rest(ctx.hub, ctx.keys.primaryKey, "POST", `/api/hubs/${ctx.hubName}/users/simple-u/:send?${API}`,
      { body: spaced, contentType: "application/json" });
    assert.equal(r.status, 202, `raw JSON send: ${r.status} ${r.text}`);
    r = await rest(ctx.hub, ctx.keys.primaryKey, "POST", `/api/hubs/${ctx.hubName}/users/simple-u/:send?${API}`,
      { body: "héllo ✓", contentType: "text/plain; charset=utf-8" });
    assert.equal(r.status, 202, `text with charset: ${r.status} ${r.text}`);
    await ctx.flush([s, sub]);

    assert.deepEqual(rawFrames(s), [
      "t:plain text",
      't:{"a":1,"b":"x"}',
      't:"Hello"',
      "b:000102ff",
      "t:group text",
      "b:07",
      't:{"all":true}',
      `t:${spaced}`,
      "t:héllo ✓",
    ]);
    // The same sends as seen by a json-protocol client of the same user.
    assert.deepEqual(sub.summary(), [
      "server:text:plain text",
      'server:json:{"a":1,"b":"x"}',
      "server:json:Hello",
      `server:binary:${norm("binary", new Uint8Array([0, 1, 2, 255]))}`,
      'server:json:{"all":true}',
      'server:json:{"spaced":[1,2]}',
      "server:text:héllo ✓",
    ]);
  }));

test("webpubsub_mode=sendToGroup&group=g with role webpubsub.sendToGroup.g publishes every frame to g", T,
  withDataplane(async (ctx, t) => {
    const sub = await ctx.connect({ protocol: "reliable", groups: ["pubg"], label: "subscriber" });
    const simpleSub = await ctx.raw({ userId: "simple-sub", groups: ["pubg"] });
    const outsider = await ctx.connect({ protocol: "json", groups: ["elsewhere"], label: "outsider" });
    const pub = await ctx.raw({
      userId: "pub", roles: ["webpubsub.sendToGroup.pubg"], query: "&webpubsub_mode=sendToGroup&group=pubg",
    });
    pub.send("frame one");
    pub.send(Buffer.from([1, 2, 3]));
    pub.send('{"j":1}');
    await sub.waitCount(3);
    await ctx.flush([sub, simpleSub, outsider]);
    assert.deepEqual(sub.summary(), [
      "group:pubg:text:frame one",
      `group:pubg:binary:${norm("binary", new Uint8Array([1, 2, 3]))}`,
      'group:pubg:text:{"j":1}',
    ]);
    for (const m of sub.data) assert.equal(m.fromUserId, "pub", `fromUserId: ${JSON.stringify(m)}`);
    assert.deepEqual(rawFrames(simpleSub), ["t:frame one", "b:010203", 't:{"j":1}']);
    assert.deepEqual(outsider.summary(), []);
    assert.equal(pub.closed, null, "the publishing simple client stays connected");

    // Without the role the frames are not published.
    const { token } = await ctx.service.getClientAccessToken({ userId: "no-role" });
    const r = await upgrade(clientUrl(ctx.hub, ctx.hubName, token, "&webpubsub_mode=sendToGroup&group=pubg"));
    if (r.status === 101) {
      ctx.track(r.raw);
      r.raw.send("must not arrive");
      await sleep(300); // the frame travels on another connection than the flush marker
      await ctx.flush([sub]);
      t.diagnostic(`sendToGroup mode without role: upgrade 101, after a frame closed=${JSON.stringify(r.raw.closed)}`);
    } else {
      t.diagnostic(`sendToGroup mode without role: upgrade answered ${r.status}`);
    }
    assert.ok(!sub.data.some((m) => m.data === "must not arrive"), "a frame from a client without the role is not published");
  }));

test("a simple client in the default sendEvent mode is closed when it sends a frame (no event handler)", T,
  withDataplane(async (ctx, t) => {
    const s = await ctx.raw({ userId: "ev-simple" });
    const other = await ctx.raw({ userId: "other-simple" });
    s.send("hello?");
    const closed = await s.waitClosed(5_000, "the sendEvent-mode simple client to be closed");
    t.diagnostic(`simple client closed with ${JSON.stringify(closed)}`);
    assert.notEqual(closed.code, 1006, `closed with a close frame: ${JSON.stringify(closed)}`);
    assert.deepEqual(rawFrames(s), [], "no JSON system/ack frames are ever sent to a simple client");
    await ctx.flush([other]);
    assert.equal(other.closed, null, "another simple client is unaffected");
    await waitFor(async () => !(await ctx.service.userExists("ev-simple")), { timeoutMs: 5_000, what: "closed simple client to be gone" });
  }));
