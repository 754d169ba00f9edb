// A NATS JetStream server for cluster tests (nats-server -js on a free loopback port, its store in
// a temporary directory), with the cluster secret its nodes share. Needs `nats-server`
// (scripts/test installs it).

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { sdkClient, startHubbub, waitFor } from "./harness.mjs";

function natsBinary() {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/bin", "/usr/local/bin"];
  const found = dirs.map((d) => join(d, "nats-server")).find((p) => existsSync(p));
  if (!found) throw new Error("nats-server is not installed: apt-get install nats-server (scripts/test does it)");
  return found;
}

export function freePort() {
  return new Promise((res, rej) => {
    const server = createServer();
    server.on("error", rej);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => res(port));
    });
  });
}

export async function startNats() {
  const dir = await mkdtemp(join(tmpdir(), "hubbub-nats-"));
  const port = await freePort();
  const proc = spawn(natsBinary(), ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", dir], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d) => { stderr += d; });
  await waitFor(() => /Server is ready/.test(stderr), { timeoutMs: 15_000, what: "nats-server ready" });
  // The secret the nodes share, kept outside NATS.
  const secretFile = join(dir, "..", `${basename(dir)}.cluster-secret`);
  await writeFile(secretFile, `${randomBytes(32).toString("base64")}\n`, { mode: 0o600 });
  return {
    url: `nats://127.0.0.1:${port}`,
    /** The flags a node of this cluster starts with. */
    args: (id) => ["--cluster", `nats://127.0.0.1:${port}`, "--cluster-secret-file", secretFile, "--node-id", id],
    async dispose() {
      proc.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
      await rm(secretFile, { force: true });
    },
  };
}

/** A connection string for `node` with the cluster's shared key. */
export function connectionString(node, key) {
  return `Endpoint=${node.endpoint};AccessKey=${key};Version=1.0;`;
}

/**
 * Two `hubbub serve --cluster` nodes ("a", "b") on one fresh NATS server, with a service client
 * for either node (`service(node, hub)`, on the shared primary key) and one `dispose()` for all.
 */
export async function twoNodes() {
  const nats = await startNats();
  const nodes = [];
  for (const id of ["a", "b"]) nodes.push(await startHubbub({ extraArgs: nats.args(id) }));
  const key = (await nodes[0].keyShow()).primaryKey;
  return {
    nodes,
    service: (node, hub) => sdkClient(connectionString(node, key), hub),
    async dispose() {
      for (const node of nodes) await node.dispose();
      await nats.dispose();
    },
  };
}
