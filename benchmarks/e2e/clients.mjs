// The end-to-end benchmark's clients: every WebSocket client of one run, in this one Node process.
//
// Usage: node clients.mjs '<json config>'   (written by benchmarks/e2e/runner.py)
//
// Config: {mode: "raw" | "plain" | "neffos", urls: [ws url of instance A, of B], perInstance: N,
//          messages: M, pacedFraction, pacedSeconds, connectMs, settleMs, idleMs, burstLimitMs,
//          drainLimitMs, pacedLimitMs}
//
// Client i connects to instance i % 2; all are connected (and, for neffos, have joined the room
// "bench-room") before anyone sends — a start barrier. Every message is the text
// "<phase>|<sender>|<seq>|<send time, ms>", the time from performance.timeOrigin +
// performance.now(), so all clients share one clock. Each delivery is checked at the receiving
// client: the latency (receive time − send time), duplicates, and per-sender order.
//
// Burst: every client sends its M messages at once. Deliveries/s = unique deliveries / (last
// delivery − first send). It ends when every expected delivery arrived, when none arrived for
// idleMs, or at burstLimitMs; what is missing then is lost.
// If it was cut short, the clients then wait until late burst deliveries stop coming (idleMs
// of quiet, at most drainLimitMs): they are reported as "late", not as received.
// Paced: messages at a fixed total rate, pacedFraction × (burst deliveries/s) / fan-out, spread
// round-robin over the clients, for pacedSeconds.
//
// stdout: one JSON line per phase, {"phase": "connected" | "burst" | "paced", ...}; an
// {"phase": "error", "error": ...} line and exit code 1 on failure.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
// Node resolves packages next to the importing script: resolve them from testproject/ instead.
const requireFromTestproject = createRequire(path.join(here, "..", "..", "testproject", "package.json"));
const WebSocket = requireFromTestproject("ws");
const neffos = (await import(pathToFileURL(requireFromTestproject.resolve("neffos.js")).href)).default;

const config = JSON.parse(process.argv[2]);
const { mode, urls, perInstance, messages } = config;
const total = 2 * perInstance;
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const emit = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const instanceOf = (client) => client % 2;
// raw relays only to the sockets of its own process; the others reach both instances.
const receives = (receiver, sender) =>
  receiver !== sender && (mode !== "raw" || instanceOf(receiver) === instanceOf(sender));
const fanOut = mode === "raw" ? perInstance - 1 : total - 1;
// No permessage-deflate (browsers offer it; uvicorn accepts it, daphne does not): both servers
// do the same work, and this one process does not spend its CPU inflating every frame.
const wsOptions = { perMessageDeflate: false };

/** The deliveries of one phase, counted at the receivers. */
class Tally {
  constructor(sentBy) {
    this.sentBy = sentBy; // messages each sender sends in this phase
    this.width = Math.max(1, ...sentBy);
    this.seen = new Uint8Array(total * total * this.width);
    this.lastSeq = new Int32Array(total * total).fill(-1);
    this.expected = 0;
    for (let r = 0; r < total; r++) {
      for (let s = 0; s < total; s++) if (receives(r, s)) this.expected += sentBy[s];
    }
    this.unique = 0;
    this.duplicates = 0;
    this.orderViolations = 0;
    this.unexpected = 0;
    this.late = 0; // arrived after the phase was closed
    this.closed = false;
    this.latencies = [];
    this.firstSend = Infinity;
    this.lastSend = 0;
    this.lastDelivery = 0;
    this.onComplete = null;
  }

  record(receiver, sender, seq, sentAt, at) {
    if (this.closed) {
      this.late++; // counted, not as received: the phase was already judged
      return;
    }
    if (!receives(receiver, sender) || !(seq >= 0 && seq < this.sentBy[sender])) {
      this.unexpected++;
      return;
    }
    const pair = receiver * total + sender;
    const slot = pair * this.width + seq;
    if (this.seen[slot]) {
      this.duplicates++;
      return;
    }
    this.seen[slot] = 1;
    if (seq < this.lastSeq[pair]) this.orderViolations++;
    else this.lastSeq[pair] = seq;
    this.unique++;
    this.latencies.push(at - sentAt);
    this.lastDelivery = at;
    if (this.unique === this.expected && this.onComplete) this.onComplete();
  }

  /** Wait until everything arrived, nothing arrived for idleMs, or limitMs passed. */
  async settle(idleMs, limitMs) {
    const deadline = now() + limitMs;
    const ended = await new Promise((resolve) => {
      const poll = setInterval(() => {
        const t = now();
        if (t > deadline) finish("time limit");
        else if (t - Math.max(this.lastDelivery, this.lastSend) > idleMs) finish("idle");
      }, 20);
      const finish = (why) => {
        clearInterval(poll);
        this.onComplete = null;
        resolve(why);
      };
      this.onComplete = () => finish("complete");
      if (this.unique >= this.expected) finish("complete");
    });
    await sleep(200); // duplicates that trail the last expected delivery still count
    this.closed = true;
    return ended;
  }

  summary(ended) {
    const sorted = Float64Array.from(this.latencies).sort();
    const pct = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null);
    const seconds = (this.lastDelivery - this.firstSend) / 1000;
    return {
      sent: this.sentBy.reduce((a, b) => a + b, 0),
      expected: this.expected,
      received: this.unique,
      loss: this.expected - this.unique,
      duplicates: this.duplicates,
      order_violations: this.orderViolations,
      unexpected: this.unexpected,
      ended,
      seconds: this.unique ? seconds : null,
      deliveries_per_s: this.unique && seconds > 0 ? this.unique / seconds : 0,
      p50_ms: pct(0.5),
      p99_ms: pct(0.99),
      max_ms: sorted.length ? sorted[sorted.length - 1] : null,
    };
  }
}

const phases = { b: null, p: null };

function deliver(receiver, text) {
  const at = now();
  const [phase, sender, seq, sentAt] = String(text).split("|");
  const tally = phases[phase];
  if (tally) tally.record(receiver, Number(sender), Number(seq), Number(sentAt), at);
}

function openPlain(index) {
  const suffix = mode === "raw" ? "/" : "/ws/chat";
  const socket = new WebSocket(urls[instanceOf(index)] + suffix, wsOptions);
  socket.on("message", (data) => deliver(index, data));
  return new Promise((resolve, reject) => {
    socket.once("open", () =>
      resolve({ send: (text) => socket.send(text), close: () => socket.close(), socket }));
    socket.once("error", reject);
    socket.once("unexpected-response", (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
}

async function openNeffos(index) {
  const handlers = { bench: { chat: (nsConn, msg) => { deliver(index, msg.Body); } } };
  const conn = await neffos.dial(urls[instanceOf(index)] + "/ws/neffos", handlers, { ...wsOptions });
  const nsConn = await conn.connect("bench");
  const room = await nsConn.joinRoom("bench-room");
  return { send: (text) => room.emit("chat", text), close: () => conn.close(), socket: conn.conn };
}

/** Open every client, at most 20 handshakes in flight (a listen backlog may be small). */
async function connectAll() {
  const clients = new Array(total);
  let next = 0;
  const open = mode === "neffos" ? openNeffos : openPlain;
  const worker = async () => {
    while (next < total) {
      const index = next++;
      clients[index] = await open(index);
    }
  };
  const limit = sleep(config.connectMs).then(() => {
    throw new Error(`clients not connected within ${config.connectMs} ms`);
  });
  await Promise.race([Promise.all(Array.from({ length: 20 }, worker)), limit]);
  return clients;
}

async function burst(clients) {
  const tally = (phases.b = new Tally(new Array(total).fill(messages)));
  const cpu = process.cpuUsage();
  tally.firstSend = now();
  for (let seq = 0; seq < messages; seq++) {
    for (let sender = 0; sender < total; sender++) clients[sender].send(`b|${sender}|${seq}|${now()}`);
  }
  tally.lastSend = now();
  const ended = await tally.settle(config.idleMs, config.burstLimitMs);
  const used = process.cpuUsage(cpu);
  const summary = tally.summary(ended);
  summary.client_cpu_s = (used.user + used.system) / 1e6;
  return summary;
}

/** Before the paced phase: wait until no late burst delivery came for idleMs (or limitMs).
 * Returns how long late deliveries kept coming, and whether they stopped within limitMs. */
async function drain(tally, idleMs, limitMs) {
  const start = now();
  let seen = tally.late;
  let quietSince = start;
  while (now() - quietSince < idleMs && now() - start < limitMs) {
    await sleep(50);
    if (tally.late !== seen) {
      seen = tally.late;
      quietSince = now();
    }
  }
  return { drain_s: (quietSince - start) / 1000, drained: now() - quietSince >= idleMs };
}

async function paced(clients, burstDeliveriesPerS) {
  const rate = (config.pacedFraction * burstDeliveriesPerS) / fanOut; // messages/s, all clients
  const count = Math.max(1, Math.round(rate * config.pacedSeconds));
  const sentBy = Array.from({ length: total }, (_, s) => Math.floor(count / total) + (s < count % total ? 1 : 0));
  const tally = (phases.p = new Tally(sentBy));
  const start = now();
  tally.firstSend = start;
  let maxLag = 0;
  for (let k = 0; k < count; ) {
    const wait = start + (k * 1000) / rate - now();
    if (wait > 0) await sleep(wait);
    const t = now();
    for (; k < count && start + (k * 1000) / rate <= t; k++) {
      maxLag = Math.max(maxLag, t - (start + (k * 1000) / rate));
      const sender = k % total;
      clients[sender].send(`p|${sender}|${Math.floor(k / total)}|${now()}`);
      tally.lastSend = now();
    }
  }
  const ended = await tally.settle(config.idleMs, config.pacedLimitMs);
  return { rate_msgs_per_s: rate, max_send_lag_ms: maxLag, ...tally.summary(ended) };
}

async function main() {
  const clients = await connectAll();
  const extensions = [...new Set(clients.map((c) => c.socket.extensions || ""))];
  await sleep(config.settleMs); // the start barrier: everyone is connected and joined
  emit({ phase: "connected", clients: total, fan_out: fanOut, extensions });
  const burstResult = await burst(clients);
  const incomplete = burstResult.ended !== "complete";
  const drained = incomplete
    ? await drain(phases.b, config.idleMs, config.drainLimitMs)
    : { drain_s: 0, drained: true };
  emit({ phase: "burst", ...burstResult, ...drained, late: phases.b.late });
  if (burstResult.deliveries_per_s > 0 && config.pacedSeconds > 0) {
    emit({ phase: "paced", ...(await paced(clients, burstResult.deliveries_per_s)) });
  }
  for (const client of clients) client.close();
}

main().then(
  () => process.exit(0),
  (err) => {
    emit({ phase: "error", error: String((err && err.stack) || err) });
    process.exit(1);
  },
);
