// Peer 7: Node socket.io 4 with @socket.io/redis-adapter (node-redis 4 pub/sub clients).
// `subscribe` joins a room, `publish` emits `msg` to the room (through Redis).
// Run: node socketio_server.js PORT REDIS_URL
"use strict";
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.argv[2]);
const redisUrl = process.argv[3] || "redis://127.0.0.1:6379";

async function main() {
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);
  const httpServer = createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(pubClient, subClient),
    transports: ["websocket"],
    pingInterval: 3600000,
    pingTimeout: 600000,
    perMessageDeflate: false,
    serveClient: false,
  });
  io.on("connection", (socket) => {
    socket.on("subscribe", (topic) => {
      socket.join(topic);
      socket.emit("subscribed", topic);
    });
    socket.on("publish", (msg) => {
      io.to(msg.topic).emit("msg", msg);
    });
  });
  httpServer.listen(port, "127.0.0.1", 4096);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
