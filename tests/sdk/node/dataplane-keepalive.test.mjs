// Keep-alive (`hubbub serve --keep-alive-secs 1`): the server pings every connection, answers
// the official client's JSON pings with pongs (so its idle detection never fires), keeps idle
// clients that answer, and closes a client that answers nothing.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";
import { withDataplane, JSON_SUBPROTOCOL, sleep } from "./dataplane.mjs";

test("keep-alive: WebSocket pings at the configured interval; idle responsive clients stay; a mute client is closed",
  { timeout: 30_000 },
  withDataplane(async (ctx, t) => {
    const responsive = await ctx.raw({ protocols: [JSON_SUBPROTOCOL], userId: "responsive" });
    const simple = await ctx.raw({ userId: "simple-idle" });
    // The official client closes its own socket when nothing arrives for keepAliveTimeoutInMs;
    // with JSON pings every 300 ms the server's pongs must keep it alive. (json protocol: a
    // self-inflicted close would show up as a disconnected event instead of a silent recovery.)
    const sdk = await ctx.connect({
      protocol: "json", userId: "sdk-idle",
      clientOptions: { keepAliveIntervalInMs: 300, keepAliveTimeoutInMs: 1_500 },
    });
    const mute = await ctx.raw({ protocols: [JSON_SUBPROTOCOL], userId: "mute", wsOptions: { autoPong: false } });

    await waitFor(() => responsive.pings.length >= 3, { timeoutMs: 6_000, what: "three WebSocket pings" });
    const span = responsive.pings[2] - responsive.pings[0];
    assert.ok(span >= 1_500 && span <= 4_000, `two ping intervals took ${span} ms with --keep-alive-secs 1`);
    assert.ok(simple.pings.length >= 1, "simple clients are pinged too");

    const closed = await mute.waitClosed(10_000, "the client that never answers pings to be closed");
    const disc = mute.json.find((j) => j.type === "system" && j.event === "disconnected");
    t.diagnostic(`mute client closed: ${JSON.stringify(closed)}, disconnected message ${JSON.stringify(disc)}`);
    assert.ok(disc?.message?.includes("PingTimeout"), `disconnected reason PingTimeout: ${mute.describeFrames()}`);

    await sleep(1_000);
    for (const r of [responsive, simple]) assert.equal(r.closed, null, `${r.userId}: idle but answering pings, still open`);
    assert.equal(sdk.disconnected.length, 0, "the official client did not drop its idle connection");
    assert.equal(sdk.client._state, "Connected", "the official client is still connected");
    await ctx.service.sendToAll("still here", { contentType: "text/plain" });
    await sdk.waitMessages((ms) => ms.some((m) => m.data === "still here"), "message after idling");
    await responsive.waitJson((j) => j.data === "still here", "message at the raw client");
    await simple.waitFrame((f) => f.text === "still here", "message at the simple client");
  }, { extraArgs: ["--keep-alive-secs", "1"] }));
