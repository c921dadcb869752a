// The reconnect-storm benchmark's clients (see benchmarks/storm/__main__.py), one role per process.
//
// Usage: node clients.mjs '<json config>'
//   {role: "storm", backends: [port A, port B], count, rooms, roomPrefix, minDelay, plain}
//     (plain: plain neffos.js clients with its `reconnect` option instead, the peer)
//     count clients through a TCP balancer of this process that sends each new connection to the
//     first backend that accepts it (so all start on A, and reconnect to B once A is dead), each
//     in room "storm-<i % rooms>" of namespace "chat", on the channels_neffos client helper.
//   {role: "live", url, count, rooms}
//     count plain neffos.js clients on one instance, the same rooms: they measure latency.
// Chat messages carry "<seq>|<send time ms>" (the driver sends them, one sequence per room).
// stdout: JSON lines. {"phase": "ready"}; then, after stdin "killed <ms>", {"phase": "progress",
// "caughtUp": n} every 250 ms (storm); after stdin "stop", {"phase": "done", ...summary}.
import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const fromTestproject = createRequire(path.join(here, "..", "..", "testproject", "package.json"));
const neffos = (await import(pathToFileURL(fromTestproject.resolve("neffos.js")).href)).default;
await import(pathToFileURL(path.join(here, "..", "..", "channels_neffos", "static", "channels_neffos", "recovery.mjs")).href);
const { loadBalancer } = await import(pathToFileURL(path.join(here, "..", "..", "testproject", "e2e", "harness.mjs")).href);
const { connect } = globalThis.ChannelsNeffos;

const config = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now();
const emit = (line) => process.stdout.write(JSON.stringify(line) + "\n");
// The last line is large: exit only once the pipe has taken all of it.
const emitLast = (line) => new Promise((resolve) => process.stdout.write(JSON.stringify(line) + "\n", resolve));
const room = (i) => `${config.roomPrefix}${i % config.rooms}`;

function parse(body) {
  const [seq, sent] = JSON.parse(body).text.split("|");
  return [Number(seq), Number(sent)];
}

const clients = [];
let killedAt = null;

// The peer: plain neffos.js with its own `reconnect` option (it rejoins the rooms, recovers nothing).
async function openPlain(url, i) {
  const c = { seqs: [], caughtUp: null, recoveries: 0, notRecovered: 0 };
  c.conn = await neffos.dial(`${url}/ws/chat?name=p${i}`, {
    chat: {
      chat: (nsConn, msg) => {
        const [seq, sent] = parse(msg.Body);
        c.seqs.push(seq);
        if (killedAt !== null && c.caughtUp === null && sent >= killedAt) c.caughtUp = now();
      },
    },
  }, { reconnect: 250, perMessageDeflate: false });
  const nsConn = await c.conn.connect("chat");
  await nsConn.joinRoom(room(i));
  c.session = { stats: { duplicates: 0, reconnects: 0 }, close: () => c.conn.close() };
  return c;
}

async function openStorm(url, i) {
  const c = { seqs: [], caughtUp: null, recoveries: 0, notRecovered: 0 };
  c.session = await connect(`${url}/ws/chat?name=s${i}`, {
    chat: {
      chat: (nsConn, msg) => {
        const [seq, sent] = parse(msg.Body);
        c.seqs.push(seq);
        if (killedAt !== null && c.caughtUp === null && sent >= killedAt) c.caughtUp = now();
      },
    },
  }, {
    neffos, ...(config.minDelay == null ? {} : { minDelay: config.minDelay }), maxDelay: 10000, dialOptions: { perMessageDeflate: false },
    onRecovery: (info) => { c.recoveries++; if (!info.recovered) c.notRecovered++; },
  });
  await c.session.join("chat", room(i));
  return c;
}

async function openLive(url, i) {
  const c = { samples: [] };
  c.conn = await neffos.dial(`${url}/ws/chat?name=l${i}`, {
    chat: {
      chat: (nsConn, msg) => {
        const at = now();
        const [, sent] = parse(msg.Body);
        c.samples.push([at, at - sent]);
      },
    },
  }, { perMessageDeflate: false });
  c.nsConn = await c.conn.connect("chat");
  await c.nsConn.joinRoom(room(i));
  return c;
}

async function main() {
  let url = config.url;
  if (config.role === "storm") {
    const balancer = await loadBalancer(config.backends);
    url = `ws://127.0.0.1:${balancer.address().port}`;
  }
  const opener = config.role === "storm" ? (config.plain ? openPlain : openStorm) : openLive;
  // An instance with NEFFOS_ACCEPT_RATE refuses handshakes beyond it: try again a moment later.
  const open = async (url, i) => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await opener(url, i);
      } catch (err) {
        if (attempt >= 50) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 400));
      }
    }
  };
  for (let i = 0; i < config.count; i += 20) {  // 20 handshakes at a time
    const block = [];
    for (let j = i; j < Math.min(i + 20, config.count); j++) block.push(open(url, j));
    clients.push(...(await Promise.all(block)));
  }
  emit({ phase: "ready", clients: clients.length });
  let progress = null;
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.startsWith("killed ")) {
      killedAt = Number(line.split(" ")[1]);
      progress = setInterval(() => emit({ phase: "progress", caughtUp: clients.filter((c) => c.caughtUp !== null).length }), 250);
    } else if (line === "stop") {
      clearInterval(progress);
      break;
    }
  }
  if (config.role === "storm") {
    const contiguous = (seqs) => seqs.every((s, k) => k === 0 || s === seqs[k - 1] + 1);
    await emitLast({
      phase: "done",
      caughtUp: clients.map((c) => c.caughtUp),
      broken: clients.filter((c) => !contiguous(c.seqs)).length,
      missed: clients.reduce((n, c) => n + (c.seqs.length ? c.seqs[c.seqs.length - 1] - c.seqs[0] + 1 - new Set(c.seqs).size : 0), 0),
      lastSeqs: clients.map((c) => [c.seqs[0], c.seqs[c.seqs.length - 1], c.seqs.length]),
      notRecovered: clients.reduce((n, c) => n + c.notRecovered, 0),
      duplicatesDropped: clients.reduce((n, c) => n + c.session.stats.duplicates, 0),
      reconnects: clients.reduce((n, c) => n + c.session.stats.reconnects, 0),
    });
    for (const c of clients) c.session.close();
  } else {
    await emitLast({ phase: "done", samples: clients.flatMap((c) => c.samples) });
    for (const c of clients) c.conn.close();
  }
  process.exit(0);
}

main().catch((err) => {
  emit({ phase: "error", error: String((err && (err.stack || err.message)) || JSON.stringify(err)) });
  process.exit(1);
});
