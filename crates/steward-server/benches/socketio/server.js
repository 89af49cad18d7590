// The socket.io 4 server the sockets bench (../sockets.rs) measures side by side with Steward:
// the subset of Steward's WebSocket protocol (docs/protocol/websocket.md) the bench's client uses,
// in socket.io's idiom.
//
// - Authentication: a non-empty `token` in the handshake's `auth` (any token is accepted, as the
//   bench only measures the cost of holding the socket); otherwise the CONNECT is refused.
// - `subscribe` event `{job}` with an ack answering `{type: "subscribed", job, snapshot}`; the
//   socket joins the job's room.
// - `POST /bench/update` with `{job, status, progress}`: the job's new state, emitted as a `job`
//   event `{type: "job", job, status, progress, at}` to the job's room; answers 204.
// - Engine.IO ping every 30 s (`pingInterval`, Steward's `socket.ping_interval`).
//
// Listens on 127.0.0.1 on a port the OS chooses and prints `{"listening":"127.0.0.1:<port>"}` on
// stdout; exits when its stdin ends, so that it cannot outlive the bench that started it.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const JOB_ID = /^[0-9a-f]{32}$/;

/** The last state of each job updated through `POST /bench/update`, by job id. */
const jobs = new Map();

const httpServer = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/bench/update") {
    res.writeHead(404).end();
    return;
  }
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    let update;
    try {
      update = JSON.parse(body);
    } catch {
      res.writeHead(400).end();
      return;
    }
    const state = { status: update.status, progress: update.progress, at: new Date().toISOString() };
    jobs.set(update.job, state);
    io.to(update.job).emit("job", { type: "job", job: update.job, ...state });
    res.writeHead(204).end();
  });
});

const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  pingInterval: 30_000,
  pingTimeout: 20_000,
});

io.use((socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  next(typeof token === "string" && token.length > 0 ? undefined : new Error("unauthenticated"));
});

io.on("connection", (socket) => {
  socket.on("subscribe", (msg, ack) => {
    if (typeof ack !== "function") {
      return;
    }
    const job = msg && msg.job;
    if (typeof job !== "string" || !JOB_ID.test(job)) {
      ack({ type: "error", code: "bad_request", message: "a job id is 32 hex digits" });
      return;
    }
    socket.join(job);
    const state = jobs.get(job) || { status: "pending", progress: 0 };
    ack({ type: "subscribed", job, snapshot: { id: job, ...state } });
  });
});

httpServer.listen(0, "127.0.0.1", () => {
  const { address, port } = httpServer.address();
  process.stdout.write(JSON.stringify({ listening: `${address}:${port}` }) + "\n");
});

process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
