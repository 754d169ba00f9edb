// Key events as CloudEvents, received by a consumer built on the CNCF CloudEvents SDK for
// JavaScript (`cloudevents`): it checks Hubbub's signature, parses and validates each event, and
// gets a regeneration and the first stale caller of the old key with the right data.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createHmac } from "node:crypto";
import { mkdtemp, writeFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HTTP } from "cloudevents";
import { startHubbub, sdkClient, expectRestError, uniqueHub, waitFor } from "./harness.mjs";

const SECRET = "a-webhook-secret-of-some-length";

function consumer() {
  const received = [];
  const rejected = [];
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      const timestamp = req.headers["x-hubbub-timestamp"];
      const expected = `sha256=${createHmac("sha256", SECRET).update(`${timestamp}.${body}`).digest("hex")}`;
      if (req.headers["x-hubbub-signature"] !== expected) {
        rejected.push("bad signature");
        res.writeHead(401).end();
        return;
      }
      try {
        const event = HTTP.toEvent({ headers: req.headers, body });
        event.validate();
        received.push(event);
        res.writeHead(200).end();
      } catch (e) {
        rejected.push(String(e));
        res.writeHead(400).end();
      }
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({
    url: `http://127.0.0.1:${server.address().port}/events`, received, rejected,
    close: () => new Promise((r) => server.close(r)),
  })));
}

test("a CloudEvents SDK consumer verifies and parses Hubbub's key events", { timeout: 60_000 }, async () => {
  const sink = await consumer();
  const dir = await mkdtemp(join(tmpdir(), "hubbub-ce-"));
  const config = join(dir, "hubbub.toml");
  await writeFile(config, `[notifications]\ncloudevents_url = "${sink.url}"\nwebhook_secret = "${SECRET}"\n`);
  const hub = await startHubbub({ extraArgs: ["--config", config] });
  try {
    // The first housekeeping pass marks where key events start.
    await new Promise((r) => setTimeout(r, 6_000));
    const before = await hub.keyShow();
    await hub.keyRegenerate("primary");
    const old = sdkClient(before.primaryConnectionString, uniqueHub("ce"));
    await expectRestError(old.sendToAll("stale"), "the old primary key");

    await waitFor(() => ["Hubbub.Keys.KeyRegenerated", "Hubbub.Keys.StaleCallerDetected"]
      .every((t) => sink.received.some((e) => e.type === t)), { timeoutMs: 30_000, what: "both key events" });
    assert.deepEqual(sink.rejected, [], "every event verified and parsed");
    const regenerated = sink.received.find((e) => e.type === "Hubbub.Keys.KeyRegenerated");
    assert.equal(regenerated.specversion, "1.0");
    assert.equal(regenerated.subject, "primary");
    assert.equal(regenerated.data.keyType, "primary");
    assert.equal(regenerated.data.version, 2);
    assert.equal(regenerated.data.objectType, "AccessKey");
    assert.ok(regenerated.source.endsWith("/keys"));
    const stale = sink.received.find((e) => e.type === "Hubbub.Keys.StaleCallerDetected");
    assert.equal(stale.data.version, 1);
    assert.equal(stale.data.kind, "rest");
    assert.match(stale.data.userAgent, /azsdk-js/i);
    for (const event of sink.received) {
      const text = JSON.stringify(event);
      assert.ok(!text.includes(before.primaryKey), "no key in an event");
    }
  } finally {
    await hub.dispose();
    await sink.close();
    await rm(dir, { recursive: true, force: true });
  }
});
