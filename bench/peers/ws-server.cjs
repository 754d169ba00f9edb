// The floor every user could write: a Node `ws` broadcast server. Every WebSocket client gets
// every message; `POST /publish` with a body broadcasts it. One frame per client per message.
// Run with NODE_PATH pointing at a node_modules that has `ws`.
const { createServer } = require("node:http");
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 0);
const server = createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/publish") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const text = Buffer.concat(chunks).toString("utf8");
    for (const client of wss.clients) client.send(text);
    res.writeHead(202).end();
  });
});
const wss = new WebSocketServer({ server });
server.listen(port, "127.0.0.1", () => console.log(`ws-server listening on ${server.address().port}`));
