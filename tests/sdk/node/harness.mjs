// Shared helpers for the Hubbub SDK compatibility tests (JavaScript side).
//
// Starts a real `hubbub serve` process on free loopback ports with its own
// temporary data directory, reads the listener addresses it prints, and runs
// the `hubbub key ...` CLI against it. Every wait is bounded by a deadline.

import { spawn, execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createHmac, randomBytes } from "node:crypto";
import { WebPubSubServiceClient } from "@azure/web-pubsub";

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, "..", "..", "..");

export const READY_TIMEOUT_MS = 20_000;
export const STOP_TIMEOUT_MS = 10_000;
export const CLI_TIMEOUT_MS = 15_000;
export const HTTP_TIMEOUT_MS = 10_000;

/** Path of the hubbub binary under test. */
export function hubbubBin() {
  const bin = process.env.HUBBUB_BIN || join(repoRoot, "target", "debug", "hubbub");
  if (!existsSync(bin)) {
    throw new Error(`hubbub binary not found at ${bin} (set HUBBUB_BIN or build it first)`);
  }
  return bin;
}

/** Environment for child processes: never let an outer admin token leak in. */
function childEnv() {
  const env = { ...process.env };
  delete env.HUBBUB_ADMIN_TOKEN;
  return env;
}

/** A timer that never keeps the process alive on its own. */
function sleepUnref(ms) {
  return new Promise((res) => setTimeout(res, ms).unref());
}

function tail(text, lines = 60) {
  const all = text.split("\n");
  return all.slice(Math.max(0, all.length - lines)).join("\n");
}

/**
 * A running (or stopped) Hubbub server. Create with `startHubbub()`.
 */
export class Hubbub {
  constructor(dataDir, ownsDataDir, extraArgs = []) {
    this.dataDir = dataDir;
    this.ownsDataDir = ownsDataDir;
    this.extraArgs = extraArgs; // additional `hubbub serve` flags
    this.proc = null;
    this.stdout = "";
    this.stderr = "";
    this.history = []; // logs of earlier runs of this data dir (after restarts)
    this.publicAddr = null;
    this.adminAddr = null;
    this.endpoint = null;
    this.exit = null; // { code, signal } once the current process has exited
  }

  get publicUrl() {
    return `http://${this.publicAddr}`;
  }

  get adminUrl() {
    return `http://${this.adminAddr}`;
  }

  get publicPort() {
    return Number(this.publicAddr.split(":").pop());
  }

  get adminPort() {
    return Number(this.adminAddr.split(":").pop());
  }

  /** Launch `hubbub serve` and wait (bounded) for "Hubbub is ready.". */
  async start() {
    if (this.proc && this.exit === null) throw new Error("hubbub is already running");
    if (this.proc) {
      this.history.push(`--- earlier run (exit ${JSON.stringify(this.exit)}) ---\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`);
    }
    this.stdout = "";
    this.stderr = "";
    this.exit = null;
    this.publicAddr = this.adminAddr = this.endpoint = null;

    const args = [
      "serve",
      "--data-dir", this.dataDir,
      "--listen", "127.0.0.1:0",
      "--admin-listen", "127.0.0.1:0",
      ...this.extraArgs,
    ];
    const proc = spawn(hubbubBin(), args, { env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    proc.stdout.setEncoding("utf8");
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (d) => { this.stderr += d; });

    const exited = new Promise((res) => {
      proc.on("exit", (code, signal) => { this.exit = { code, signal }; res(this.exit); });
    });
    this.exited = exited;

    await new Promise((res, rej) => {
      let done = false;
      const finish = (err) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) rej(err); else res();
      };
      const timer = setTimeout(() => {
        finish(new Error(`hubbub did not print "Hubbub is ready." within ${READY_TIMEOUT_MS} ms\n${this.logs()}`));
      }, READY_TIMEOUT_MS);
      proc.on("error", (e) => finish(new Error(`cannot start hubbub: ${e.message}`)));
      exited.then((ex) => finish(new Error(`hubbub exited before it was ready: ${JSON.stringify(ex)}\n${this.logs()}`)));
      proc.stdout.on("data", (d) => {
        this.stdout += d;
        const lines = this.stdout.split("\n");
        lines.pop(); // only complete lines
        for (const line of lines) {
          const l = line.trim();
          let m;
          if ((m = /^public listener:\s*(\S+)/.exec(l))) this.publicAddr = m[1];
          else if ((m = /^admin listener:\s*(\S+)/.exec(l))) this.adminAddr = m[1];
          else if ((m = /^public endpoint:\s*(\S+)/.exec(l))) this.endpoint = m[1];
          else if (l === "Hubbub is ready.") {
            if (!this.publicAddr || !this.adminAddr || !this.endpoint) {
              finish(new Error(`hubbub was ready but did not print all of its addresses\n${this.logs()}`));
            } else {
              finish();
            }
          }
        }
      });
    }).catch(async (e) => {
      // Do not leave a half-started server behind.
      if (!this.exit) {
        proc.kill("SIGKILL");
        await Promise.race([exited, sleepUnref(5_000)]);
      }
      throw e;
    });
    return this;
  }

  /** Stop the server: "SIGTERM" (graceful) or "SIGKILL". Resolves with { code, signal }. */
  async stop(signal = "SIGTERM", timeoutMs = STOP_TIMEOUT_MS) {
    if (!this.proc || this.exit) return this.exit;
    this.proc.kill(signal);
    const ex = await Promise.race([
      this.exited,
      sleepUnref(timeoutMs).then(() => null),
    ]);
    if (ex === null) {
      this.proc.kill("SIGKILL");
      await Promise.race([this.exited, sleepUnref(5_000)]);
      throw new Error(`hubbub did not exit within ${timeoutMs} ms after ${signal}\n${this.logs()}`);
    }
    return ex;
  }

  /** Stop with `signal`, then start again on the same data dir. Returns the first stop's exit status. */
  async restart(signal = "SIGTERM") {
    const ex = await this.stop(signal);
    await this.start();
    return ex;
  }

  /** Stop (if running) and remove the temporary data dir. Never throws. */
  async dispose() {
    try {
      if (this.proc && !this.exit) await this.stop("SIGTERM");
    } catch {
      try { this.proc.kill("SIGKILL"); } catch { /* already gone */ }
    }
    if (this.ownsDataDir) await rm(this.dataDir, { recursive: true, force: true }).catch(() => {});
  }

  logs() {
    const earlier = this.history.length ? this.history.join("\n") + "\n--- current run ---\n" : "";
    return `${earlier}hubbub stdout:\n${tail(this.stdout)}\nhubbub stderr:\n${tail(this.stderr)}`;
  }

  async adminToken() {
    return (await readFile(join(this.dataDir, "admin-token"), "utf8")).trim();
  }

  /** Run `hubbub <args...>`; resolves with { code, stdout, stderr } (never rejects on exit code). */
  cli(args, opts = {}) {
    return runCli(args, opts);
  }

  /** `hubbub key show` against this server; returns the parsed JSON. */
  async keyShow() {
    const r = await this.cli(["key", "show", "--admin-url", this.adminUrl, "--data-dir", this.dataDir]);
    return parseCliJson(r, "key show");
  }

  /** `hubbub key regenerate --key-type TYPE`; returns the parsed JSON of the new key set. */
  async keyRegenerate(keyType) {
    const r = await this.cli([
      "key", "regenerate", "--key-type", keyType,
      "--admin-url", this.adminUrl, "--data-dir", this.dataDir,
    ]);
    return parseCliJson(r, `key regenerate --key-type ${keyType}`);
  }

  /** fetch() against the admin listener with the admin bearer token (unless `token` is given). */
  async admin(method, path, { body, token } = {}) {
    const t = token === undefined ? await this.adminToken() : token;
    const headers = {};
    if (t !== null) headers.authorization = `Bearer ${t}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    return fetchWithTimeout(`${this.adminUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }
}

export function runCli(args, { timeoutMs = CLI_TIMEOUT_MS, env = {} } = {}) {
  return new Promise((res) => {
    execFile(hubbubBin(), args, { env: { ...childEnv(), ...env }, timeout: timeoutMs, killSignal: "SIGKILL" }, (err, stdout, stderr) => {
      let code = 0;
      if (err) code = typeof err.code === "number" ? err.code : (err.killed ? `killed (timeout ${timeoutMs} ms)` : String(err.code ?? err.message));
      res({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

function parseCliJson(r, what) {
  if (r.code !== 0) {
    throw new Error(`hubbub ${what} failed with exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
  try {
    return JSON.parse(r.stdout);
  } catch (e) {
    throw new Error(`hubbub ${what} did not print JSON: ${e.message}\nstdout:\n${r.stdout}`);
  }
}

/** Start a fresh server with a new temporary data dir (`extraArgs`: more `hubbub serve` flags). */
export async function startHubbub({ extraArgs = [] } = {}) {
  const dir = await mkdtemp(join(tmpdir(), "hubbub-sdk-"));
  const hub = new Hubbub(dir, true, extraArgs);
  try {
    await hub.start();
  } catch (e) {
    await hub.dispose();
    throw e;
  }
  return hub;
}

/**
 * Wrap a test body: start a server, run `fn(hub, t)`, append the server logs to
 * any failure, and always clean up.
 */
export function withHubbub(fn, { extraArgs = [] } = {}) {
  return async (t) => {
    const hub = await startHubbub({ extraArgs });
    try {
      await fn(hub, t);
    } catch (e) {
      if (e && typeof e === "object") {
        try { e.message = `${e.message}\n\n${hub.logs()}`; } catch { /* read-only message */ }
      }
      throw e;
    } finally {
      await hub.dispose();
    }
  };
}

export async function fetchWithTimeout(url, init = {}, timeoutMs = HTTP_TIMEOUT_MS) {
  return fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
}

/** Split a connection string into a lower-cased-key map (values kept verbatim). */
export function parseConnectionString(cs) {
  const out = {};
  for (const seg of cs.split(";")) {
    if (!seg) continue;
    const i = seg.indexOf("=");
    if (i < 0) throw new Error(`malformed connection string segment ${JSON.stringify(seg)}`);
    out[seg.slice(0, i).toLowerCase()] = seg.slice(i + 1);
  }
  return out;
}

export const KEY_RE = /^[A-Za-z0-9+/]{43}=$/;

/** Poll `check()` until it returns a truthy value or the deadline passes. */
export async function waitFor(check, { timeoutMs = 10_000, intervalMs = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
}

// ---- hand-made JWTs (HS256, key used as UTF-8 bytes, exactly like the SDKs) ----

function b64url(buf) {
  return Buffer.from(buf).toString("base64url");
}

export function signJwt(payload, key, header = { alg: "HS256", typ: "JWT" }) {
  const h = b64url(JSON.stringify(header));
  const p = b64url(JSON.stringify(payload));
  const keyBytes = Buffer.isBuffer(key) ? key : Buffer.from(key, "utf8");
  const s = createHmac("sha256", keyBytes).update(`${h}.${p}`).digest("base64url");
  return `${h}.${p}.${s}`;
}

export function decodeJwtPayload(token) {
  return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString("utf8"));
}

export function randomKey() {
  return randomBytes(32).toString("base64");
}

export function uniqueHub(prefix = "hub") {
  return `${prefix}${randomBytes(4).toString("hex")}`;
}

/**
 * An official JS service client for an http:// endpoint. SDK retries are off so
 * that every single request has to succeed on its own.
 */
export function sdkClient(connectionString, hub, extra = {}) {
  return new WebPubSubServiceClient(connectionString, hub, {
    allowInsecureConnection: true,
    retryOptions: { maxRetries: 0 },
    ...extra,
  });
}

/** Resolve with the RestError of `promise`, failing if it resolves. */
export async function expectRestError(promise, what) {
  let result;
  try {
    result = await promise;
  } catch (e) {
    return e;
  }
  throw new Error(`${what}: expected a RestError but the call succeeded (${JSON.stringify(result)})`);
}

/** Assert `err` is the SDK's RestError for a 401 with a JSON { code, message } body. */
export function assert401(assert, err, what) {
  assert.equal(err?.name, "RestError", `${what}: ${err?.stack ?? err}`);
  assert.equal(err.statusCode, 401, `${what}: status`);
  let body;
  try {
    body = JSON.parse(err.response.bodyAsText);
  } catch {
    assert.fail(`${what}: 401 body is not JSON: ${err.response?.bodyAsText}`);
  }
  assert.equal(typeof body.code, "string", `${what}: body.code`);
  assert.ok(body.code.length > 0, `${what}: body.code is empty`);
  assert.equal(typeof body.message, "string", `${what}: body.message`);
  return body;
}
