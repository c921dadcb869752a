// Burst, zero loss: many neffos.js clients on two instances, one room, everybody talks at once.
// Usage: node burst.mjs <http url of A> <http url of B> [clients per instance = 100] [messages = 10]
// Every client joins room "burst" of namespace "chat"; once all have joined, each emits its
// messages as fast as it can. Each client must get every other client's messages exactly once,
// in order per sender. Then a second round, one "fin" message per client: per-sender FIFO puts
// each sender's fin after its burst, so once every fin arrived, nothing of the burst is in flight.
// Prints {"check name": {"ok": bool, "detail": ...}, ...} as JSON; exit code 1 if any failed.
import neffos from "neffos.js";
import { check, eventually, run } from "./harness.mjs";

const [httpA, httpB, perInstanceArg = "100", messagesArg = "10"] = process.argv.slice(2);
const PER_INSTANCE = Number(perInstanceArg);
const MESSAGES = Number(messagesArg);
const CLIENTS = 2 * PER_INSTANCE;
const ROOM = "burst";
const FIN = MESSAGES; // the seq of the second round's message
const wsUrl = (http) => http.replace(/^http/, "ws");
// No permessage-deflate (uvicorn accepts it, daphne does not): the `ws` package inflates every
// message on libuv's thread pool, and 400,000 of them keep one Node process busy for half a
// minute on futexes alone. This test is about the server's fan-out, not about Node's zlib.
const WS_OPTIONS = { perMessageDeflate: false };

async function client(http, index) {
  const c = {
    index,
    // sender index -> seqs in arrival order
    got: new Map(),
    chats: 0,
    fins: 0,
    lastAt: 0,
    strays: [],
    closed: null,
  };
  const onChat = (nsConn, msg) => {
    let sender;
    let seq;
    try {
      ({ i: sender, s: seq } = JSON.parse(JSON.parse(msg.Body).text));
    } catch {
      c.strays.push(msg.Body);
      return;
    }
    if (msg.Room !== ROOM) c.strays.push(msg.Body);
    let seqs = c.got.get(sender);
    if (seqs === undefined) c.got.set(sender, (seqs = []));
    seqs.push(seq);
    if (seq === FIN) c.fins += 1;
    else c.chats += 1;
    c.lastAt = Date.now();
  };
  const handlers = { chat: { chat: onChat, notice: () => {} } };
  c.conn = await neffos.dial(`${wsUrl(http)}/ws/chat?name=burst-${index}`, handlers, WS_OPTIONS);
  c.conn.conn.on("close", (code) => { c.closed = code; });
  c.nsConn = await c.conn.connect("chat");
  return c;
}

// Dial in small waves: a listen backlog of 50 (Twisted's default) is no place for 100 SYNs.
async function dialAll() {
  const specs = [];
  for (let i = 0; i < CLIENTS; i++) specs.push({ http: i % 2 === 0 ? httpA : httpB, index: i });
  const clients = [];
  for (let start = 0; start < specs.length; start += 20) {
    const wave = specs.slice(start, start + 20).map((s) => client(s.http, s.index));
    clients.push(...(await Promise.all(wave)));
  }
  return clients;
}

function audit(clients) {
  let missing = 0;
  let duplicates = 0;
  let outOfOrder = 0;
  const examples = [];
  for (const c of clients) {
    for (let sender = 0; sender < CLIENTS; sender++) {
      const seqs = c.got.get(sender) || []; // the burst, then the fin
      if (sender === c.index) {
        duplicates += seqs.length; // the sender is excluded: any copy is one too many
        if (seqs.length && examples.length < 5) examples.push({ client: c.index, ownMessages: seqs });
        continue;
      }
      const seen = new Set(seqs);
      let lost = 0;
      for (let s = 0; s <= FIN; s++) if (!seen.has(s)) lost += 1;
      let swapped = 0;
      for (let k = 1; k < seqs.length; k++) if (seqs[k] <= seqs[k - 1]) swapped += 1;
      missing += lost;
      duplicates += seqs.length - seen.size;
      outOfOrder += swapped;
      if ((lost || swapped || seqs.length !== seen.size) && examples.length < 5) {
        examples.push({ client: c.index, sender, seqs });
      }
    }
  }
  return { missing, duplicates, outOfOrder, examples };
}

async function main() {
  const dialStart = Date.now();
  const clients = await dialAll();
  const rooms = await Promise.all(clients.map((c) => c.nsConn.joinRoom(ROOM)));
  // Barrier: every joinRoom has been answered, so every instance's hub is in the room's group.
  const joinedIn = Date.now() - dialStart;

  const expected = (CLIENTS - 1) * MESSAGES;
  const start = Date.now();
  for (let s = 0; s < MESSAGES; s++) {
    for (let i = 0; i < CLIENTS; i++) rooms[i].emit("chat", JSON.stringify({ i, s }));
  }
  const emittedIn = Date.now() - start;
  const complete = await eventually(() => clients.every((c) => c.chats >= expected), 60000);
  const burstMs = Math.max(...clients.map((c) => c.lastAt)) - start;

  for (let i = 0; i < CLIENTS; i++) rooms[i].emit("chat", JSON.stringify({ i, s: FIN }));
  const fins = await eventually(() => clients.every((c) => c.fins >= CLIENTS - 1), 30000);

  const counts = clients.map((c) => c.chats);
  const summary = {
    clients: CLIENTS,
    expectedPerClient: expected,
    receivedMin: Math.min(...counts),
    receivedMax: Math.max(...counts),
    joinedAfterMs: joinedIn,
    emittedInMs: emittedIn,
    burstMs,
    deliveries: counts.reduce((a, b) => a + b, 0),
  };
  check("every client receives the burst", complete, summary);
  check("every client receives every other client's fin", fins,
    { finsMin: Math.min(...clients.map((c) => c.fins)), expected: CLIENTS - 1 });
  const { missing, duplicates, outOfOrder, examples } = audit(clients);
  check("no message missing, duplicated or out of order per sender",
    missing === 0 && duplicates === 0 && outOfOrder === 0,
    { missing, duplicates, outOfOrder, examples, ...summary });
  const strays = clients.flatMap((c) => c.strays);
  check("nothing else arrives as a chat event", strays.length === 0, strays.slice(0, 5));
  const closed = clients.filter((c) => c.closed !== null).map((c) => [c.index, c.closed]);
  check("no connection was closed by the server", closed.length === 0, closed.slice(0, 10));

  for (const c of clients) c.conn.close();
}

run(main, 90);
