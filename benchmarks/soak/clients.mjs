// The soak benchmark's clients: a block of the run's neffos.js clients, in this one Node process.
//
// Usage: node clients.mjs '<json config>'   (written by benchmarks/soak/__main__.py, which starts
// one or more of these processes and merges what they record)
//
// Config: {urls: [ws url of instance A, of B], first, count, rooms, roomsPerClient, seed,
//          broadcastEvery, churnEvery, askEvery ([min s, max s] each), askTimeoutMs,
//          joinTimeoutMs, connectConcurrency, connectMs, drainMs, log, recovery (use the
//          client helper, recovery.js: the rooms keep history)}
//
// Clients first … first + count − 1 are opened here; client i connects to instance i % 2, to the
// testproject's `chat` namespace, and joins roomsPerClient random rooms of `rooms`. Then
// "ready" is printed and the process waits for one stdin line {"start": ms, "stop": ms} (epoch
// milliseconds): between the two, each client, on its own jittered timers,
//
// * broadcasts: `chat` into one of the rooms it has joined (the server relays it to the room's
//   other members on both instances), with the text "<message id>|<send time>";
// * churns: leaves one of its rooms, then joins another one (join and leave are asks: their
//   acknowledgement times bound when the server counted it as a member);
// * asks one of `whoami` (its connection id), `who` (the room's nicknames, on every instance)
//   and `poke` (the server asks another client of this process, on either instance, "ping").
//
// Then it waits drainMs for late deliveries and prints "done". Times are
// performance.timeOrigin + performance.now(): epoch ms on the machine's clock, shared by every
// process of the run. Everything each client does and sees is appended to `log`, one JSON array a
// line, for the driver to judge (nothing is judged here):
//
//   ["c", client, instance, time, connection id]        connected and joined its first rooms
//   ["j", client, room, request time, ack time]         joined (["J", …, failure time, error])
//   ["l", client, room, request time, ack time]         left   (["L", …, failure time, error])
//   ["s", message id, client, room, time]               broadcast sent
//   ["r", message id, client, room, time]               broadcast received
//   ["a", client, kind, request time, reply time, ok, error, who: [room, answer] | null]   ask
//   ["x", client, time, what, detail]                   an error: close, exception, refused send
//
// stdout: JSON lines {"phase": "ready" | "progress" | "done" | "error", ...}.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
// Node resolves packages next to the importing script: resolve them from testproject/ instead.
const requireFromTestproject = createRequire(
  path.join(here, "..", "..", "testproject", "package.json"),
);
const neffos = (await import(pathToFileURL(requireFromTestproject.resolve("neffos.js")).href)).default;
// The client helper (config.recovery): reconnects, resumes its rooms' positions, drops duplicates.
await import(pathToFileURL(path.join(here, "..", "..", "channels_neffos", "static", "channels_neffos", "recovery.mjs")).href);
const { connect: connectRecovering } = globalThis.ChannelsNeffos;

const config = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const emit = (line) => process.stdout.write(JSON.stringify(line) + "\n");
// No permessage-deflate (daphne does not offer it anyway): this process inflates nothing.
const wsOptions = { perMessageDeflate: false };
const roomName = (k) => `soak-${k}`;
/** Message ids: unique over the run, and they name their sender. */
const ID_STRIDE = 1_000_000;

// -- the log: batched, one write per 250 ms --------------------------------------------------
const logStream = fs.createWriteStream(config.log);
let logBuffer = [];
const record = (...fields) => { logBuffer.push(JSON.stringify(fields)); };
const flushLog = () => {
  if (logBuffer.length) {
    logStream.write(logBuffer.join("\n") + "\n");
    logBuffer = [];
  }
};
const flusher = setInterval(flushLog, 250);

/** A small seeded generator (mulberry32), so that a run's schedule can be repeated. */
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const counts = {
  sent: 0, received: 0, notices: 0, pings: 0, joins: 0, leaves: 0, asks: 0,
  askFailures: 0, joinFailures: 0, leaveFailures: 0, errors: 0, closes: 0,
  duplicates: 0, notRecovered: 0,
};
let closing = false; // set at the end: closes from then on are ours
const error = (client, what, detail) => {
  counts.errors++;
  record("x", client, now(), what, String(detail).slice(0, 500));
};
process.on("unhandledRejection", (reason) => error(-1, "unhandled rejection", reason && reason.stack || reason));
process.on("uncaughtException", (err) => error(-1, "uncaught exception", err && err.stack || err));

/** `promise`, or a rejection after `ms`. */
function within(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

class Client {
  constructor(index) {
    this.index = index;
    this.instance = index % 2;
    this.random = generator(config.seed * 7919 + index);
    this.seq = 0;
    this.rooms = new Map(); // room name → Room, joined and acknowledged, not leaving
    this.tainted = new Set(); // rooms whose join or leave failed: their state on the server is unknown
    this.busy = false; // a churn (leave, then join) is under way
  }

  pick(items) { return items[Math.floor(this.random() * items.length)]; }

  between([low, high]) { return (low + this.random() * (high - low)) * 1000; }

  async open() {
    const handlers = {
      chat: {
        chat: (nsConn, msg) => this.deliver(msg),
        notice: () => { counts.notices++; },
        whisper: () => {},
        ping: () => { counts.pings++; return neffos.reply("pong"); },
        _OnNamespaceDisconnect: () => {
          if (!closing) error(this.index, "namespace disconnected by the server", "");
        },
        _OnRoomLeft: (nsConn, msg) => {
          if (msg.IsForced && !closing) error(this.index, "room left by the server", msg.Room);
        },
      },
    };
    const url = `${config.urls[this.instance]}/ws/chat?name=c${this.index}`;
    if (config.recovery) {
      this.session = await connectRecovering(url, handlers, {
        neffos,
        dialOptions: { ...wsOptions },
        onRecovery: (info) => {
          if (!info.recovered) {
            counts.notRecovered++;
            error(this.index, "room not recovered", `${info.room}: ${info.reason}`);
          }
        },
      });
      this.conn = this.session.conn;
      this.nsConn = await this.session.connect("chat");
    } else {
      this.conn = await neffos.dial(url, handlers, { ...wsOptions });
      this.nsConn = await this.conn.connect("chat");
    }
    this.conn.conn.addEventListener("close", (evt) => {
      if (closing) return;
      counts.closes++;
      error(this.index, "websocket closed", `code ${evt.code} ${evt.reason || ""}`);
    });
    const first = new Set();
    while (first.size < Math.min(config.roomsPerClient, config.rooms)) {
      first.add(roomName(Math.floor(this.random() * config.rooms)));
    }
    for (const room of first) await this.join(room);
    record("c", this.index, this.instance, now(), this.conn.ID);
  }

  deliver(msg) {
    const at = now();
    counts.received++;
    let text;
    try {
      text = JSON.parse(msg.Body).text;
    } catch (err) {
      error(this.index, "unreadable chat message", msg.Body);
      return;
    }
    const [id] = String(text).split("|");
    record("r", Number(id), this.index, msg.Room, at);
  }

  async join(room) {
    const requested = now();
    try {
      const joining = this.session
        ? this.session.join("chat", room).then(() => this.session.nsConns.get("chat").room(room))
        : this.nsConn.joinRoom(room);
      const joined = await within(joining, config.joinTimeoutMs, `join ${room}`);
      record("j", this.index, room, requested, now());
      counts.joins++;
      this.rooms.set(room, joined);
    } catch (err) {
      counts.joinFailures++;
      // A join that timed out may still be done by the server: never use this room again.
      this.tainted.add(room);
      record("J", this.index, room, requested, now(), String(err && err.message || err));
    }
  }

  async leave(room) {
    const joined = this.rooms.get(room);
    this.rooms.delete(room); // no broadcast into a room being left
    const requested = now();
    let failure;
    try {
      const leaving = this.session ? this.session.leave("chat", room) : joined.leave();
      failure = await within(leaving, config.joinTimeoutMs, `leave ${room}`);
    } catch (err) {
      failure = err;
    }
    if (failure) {
      counts.leaveFailures++;
      this.tainted.add(room);
      record("L", this.index, room, requested, now(), String(failure && failure.message || failure));
    } else {
      counts.leaves++;
      record("l", this.index, room, requested, now());
    }
  }

  broadcast() {
    const rooms = [...this.rooms.keys()];
    if (!rooms.length) return;
    const room = this.pick(rooms);
    const id = this.index * ID_STRIDE + this.seq++;
    const at = now();
    record("s", id, this.index, room, at);
    counts.sent++;
    if (!this.rooms.get(room).emit("chat", `${id}|${at}`)) error(this.index, "emit refused", room);
  }

  async churn() {
    if (this.busy) return;
    this.busy = true;
    try {
      const rooms = [...this.rooms.keys()];
      if (rooms.length >= config.roomsPerClient) await this.leave(this.pick(rooms));
      if (this.rooms.size < config.roomsPerClient) {
        const candidates = [];
        for (let k = 0; k < config.rooms; k++) {
          const room = roomName(k);
          if (!this.rooms.has(room) && !this.tainted.has(room)) candidates.push(room);
        }
        if (candidates.length) await this.join(this.pick(candidates));
      }
    } finally {
      this.busy = false;
    }
  }

  async ask() {
    const kind = this.pick(["whoami", "who", "poke"]);
    let body = "";
    let check = () => true;
    if (kind === "whoami") {
      body = "";
      check = (answer) => answer === this.conn.ID;
    } else if (kind === "who") {
      body = roomName(Math.floor(this.random() * config.rooms));
      check = (answer) => { try { return Array.isArray(JSON.parse(answer)); } catch { return false; } };
    } else {
      const target = this.pick(clients.filter((c) => c !== this));
      body = target.conn.ID;
      check = (answer) => answer === "pong";
    }
    const requested = now();
    counts.asks++;
    try {
      const reply = await within(this.nsConn.ask(kind, body), config.askTimeoutMs, kind);
      const answered = now();
      // who's answer goes to the log: the driver checks it against everyone's joins and leaves.
      const detail = kind === "who" ? [body, reply.Body] : null;
      if (check(reply.Body)) record("a", this.index, kind, requested, answered, 1, "", detail);
      else {
        counts.askFailures++;
        const error = `wrong answer: ${String(reply.Body).slice(0, 200)}`;
        record("a", this.index, kind, requested, answered, 0, error, detail);
      }
    } catch (err) {
      counts.askFailures++;
      record("a", this.index, kind, requested, now(), 0, String(err && err.message || err), null);
    }
  }

  /** Run `action` every [min, max] seconds until `stop`, starting at a random point of the first period. */
  every(period, stop, action) {
    const schedule = (delay) => {
      setTimeout(() => {
        if (now() >= stop) return;
        Promise.resolve().then(action).catch((err) => error(this.index, "action failed", err && err.stack || err));
        schedule(this.between(period));
      }, delay);
    };
    schedule(this.random() * this.between(period));
  }

  start(stop) {
    this.every(config.broadcastEvery, stop, () => this.broadcast());
    this.every(config.churnEvery, stop, () => this.churn());
    this.every(config.askEvery, stop, () => this.ask());
  }
}

const clients = [];

/** Open every client, at most connectConcurrency handshakes in flight. */
async function connectAll() {
  for (let i = 0; i < config.count; i++) clients.push(new Client(config.first + i));
  let next = 0;
  const worker = async () => {
    while (next < clients.length) await clients[next++].open();
  };
  const workers = Array.from({ length: config.connectConcurrency }, worker);
  await within(Promise.all(workers), config.connectMs, "connecting the clients");
}

/** The event loop's lag: how late a 100 ms interval fires (max per progress period and overall). */
const lag = { periodMax: 0, max: 0 };
let expectedTick = now() + 100;
setInterval(() => {
  const late = Math.max(0, now() - expectedTick);
  lag.periodMax = Math.max(lag.periodMax, late);
  lag.max = Math.max(lag.max, late);
  expectedTick = now() + 100;
}, 100);

function readStart() {
  return new Promise((resolve) => {
    let buffered = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk) => {
      buffered += chunk;
      const newline = buffered.indexOf("\n");
      if (newline >= 0) resolve(JSON.parse(buffered.slice(0, newline)));
    });
  });
}

async function main() {
  const began = now();
  await connectAll();
  emit({ phase: "ready", clients: clients.length, connect_s: (now() - began) / 1000 });
  const { start, stop } = await readStart();
  await sleep(Math.max(0, start - now()));
  for (const client of clients) client.start(stop);
  const progress = setInterval(() => {
    emit({ phase: "progress", at: now(), ...counts, loop_lag_max_ms: lag.periodMax });
    lag.periodMax = 0;
  }, 10_000);
  await sleep(Math.max(0, stop - now()));
  // Let churns and asks under way finish, and late deliveries arrive.
  await sleep(config.drainMs);
  clearInterval(progress);
  closing = true;
  for (const client of clients) (client.session || client.conn).close();
  for (const client of clients) counts.duplicates += client.session ? client.session.stats.duplicates : 0;
  clearInterval(flusher);
  flushLog();
  await new Promise((resolve) => logStream.end(resolve));
  emit({ phase: "done", ...counts, loop_lag_max_ms: lag.max });
}

main().then(
  () => process.exit(0),
  (err) => {
    flushLog();
    emit({ phase: "error", error: String((err && err.stack) || err) });
    logStream.end(() => process.exit(1));
  },
);
