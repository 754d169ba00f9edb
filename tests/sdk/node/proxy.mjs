// A small TCP proxy on 127.0.0.1 that a test can cut: it forwards every accepted
// connection to the target port and can destroy all of them at once (both sides),
// and refuse new connections for a while, like a network outage.

import net from "node:net";

export async function startProxy(targetPort, targetHost = "127.0.0.1") {
  const pairs = new Set();
  const requestLines = []; // first line of every forwarded connection (the HTTP request line)
  let refusing = false;
  let refused = 0;

  const kill = (sock) => {
    if (!sock || sock.destroyed) return;
    if (typeof sock.resetAndDestroy === "function") {
      try { sock.resetAndDestroy(); return; } catch { /* fall through */ }
    }
    sock.destroy();
  };

  const server = net.createServer((client) => {
    client.on("error", () => {});
    if (refusing) {
      refused += 1;
      kill(client);
      return;
    }
    const upstream = net.connect(targetPort, targetHost);
    upstream.on("error", () => {});
    const pair = { client, upstream };
    pairs.add(pair);
    client.once("data", (d) => {
      requestLines.push(d.toString("latin1").split("\r\n")[0]);
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      kill(client);
      kill(upstream);
      pairs.delete(pair);
    };
    client.on("close", end);
    upstream.on("close", end);
  });

  await new Promise((res, rej) => {
    server.once("error", rej);
    server.listen(0, "127.0.0.1", res);
  });
  const port = server.address().port;

  return {
    port,
    requestLines,
    get active() { return pairs.size; },
    get refused() { return refused; },
    /** Rewrite a ws:// URL so that it goes through the proxy. */
    url(wsUrl) {
      return wsUrl.replace(/^ws:\/\/[^/]+/, `ws://127.0.0.1:${port}`);
    },
    /** Destroy every forwarded connection on both sides. */
    cut() {
      for (const p of pairs) {
        kill(p.client);
        kill(p.upstream);
      }
      pairs.clear();
    },
    /** While refusing, new connections are accepted and destroyed at once. */
    refuse(on) {
      refusing = on;
    },
    async close() {
      refusing = true;
      this.cut();
      await new Promise((res) => server.close(() => res()));
    },
  };
}
