// A client that stops reading is let go by the server while the others get everything.
// Usage: node slow.mjs <http url of A> <http url of B> [flood MB = 60] [message bytes = 8000]
// Room "slow" of namespace "chat": the slow client and two fast clients on A, two fast clients
// and the sender on B. The slow client pauses its TCP socket (nothing more is read from the
// kernel); the sender floods the room. Every fast client must get every flood message, in
// order; while the slow client still reads nothing, its instance must let go of it (the room
// is told it left); once it reads again, its connection must end (4013, or 1006 if the server
// had to drop the TCP connection because not even the close frame could be written).
// Progress lines {"phase": ...} go to stdout before the results, for the test to sample the
// instance's memory: "flood" (the slow client is paused, the flood starts), "flooded" (every
// fast client has everything), "resume" (the slow client reads again).
// Prints {"check name": {"ok": bool, "detail": ...}, ...} as JSON; exit code 1 if any failed.
import crypto from "node:crypto";
import neffos from "neffos.js";
import { check, eventually, run } from "./harness.mjs";

const [httpA, httpB, floodMbArg = "60", sizeArg = "8000"] = process.argv.slice(2);
const SIZE = Number(sizeArg);
const COUNT = Math.ceil((Number(floodMbArg) * 1e6) / SIZE);
const ROOM = "slow";
// The sender waits for an answer every BATCH emits: the server handles a client's frames one at
// a time, and a client more than 1,000 frames ahead of its handler is closed as a flood (4008).
const BATCH = 200;
const wsUrl = (http) => http.replace(/^http/, "ws");
// No permessage-deflate (uvicorn would compress): the sizes below are what crosses the wire,
// and Node's zlib is not what this test is about.
const WS_OPTIONS = { perMessageDeflate: false };
const phase = (name, detail = {}) => console.log(JSON.stringify({ phase: name, ...detail }));

async function client(http, name) {
  const c = { name, seqs: [], notices: [], strays: 0, bytes: 0, closed: null, closedAt: 0 };
  const onChat = (nsConn, msg) => {
    c.bytes += msg.Body.length;
    const text = JSON.parse(msg.Body).text;
    const seq = Number(text.slice(0, text.indexOf(":")));
    if (Number.isInteger(seq)) c.seqs.push(seq);
    else c.strays += 1;
  };
  const handlers = { chat: { chat: onChat, notice: (nsConn, msg) => { c.notices.push(msg.Body); } } };
  c.conn = await neffos.dial(`${wsUrl(http)}/ws/chat?name=${name}`, handlers, WS_OPTIONS);
  c.ws = c.conn.conn;
  c.ws.on("close", (code) => { c.closed = code; c.closedAt = Date.now(); });
  c.nsConn = await c.conn.connect("chat");
  c.room = await c.nsConn.joinRoom(ROOM);
  return c;
}

// Stop reading at the TCP level: no 'data' events, so the kernel's receive buffer fills, the
// server's send buffer fills, and the server's writes to this client back up. `ws` resumes a
// socket it paused itself once its parser drains; keep it from resuming ours.
function pauseReading(c) {
  const socket = c.ws._socket;
  const resume = socket.resume;
  socket.resume = function resumeLater() { return this; };
  socket.pause();
  return () => {
    socket.resume = resume;
    socket.resume();
  };
}

// Text that does not compress much, so no layer can shrink the flood by much.
const filler = (n) => crypto.randomBytes(Math.ceil((n * 3) / 4)).toString("base64").slice(0, n);

async function flood(sender, first, count) {
  const pad = filler(SIZE);
  for (let start = first; start < first + count; start += BATCH) {
    const end = Math.min(start + BATCH, first + count);
    for (let seq = start; seq < end; seq++) {
      const head = `${seq}:`;
      sender.room.emit("chat", head + pad.slice(head.length));
    }
    // Handled in order: once this is answered, every emit before it was broadcast.
    await sender.nsConn.ask("whoami", "");
  }
}

const gotAll = (c, n) => c.seqs.length >= n;
const inOrder = (c) => c.seqs.every((seq, k) => seq === k);

async function main() {
  const slow = await client(httpA, "slowpoke");
  const fast = [
    await client(httpA, "fast-a1"),
    await client(httpA, "fast-a2"),
    await client(httpB, "fast-b1"),
    await client(httpB, "fast-b2"),
  ];
  const sender = await client(httpB, "sender");
  // Barrier: every joinRoom was answered, so both instances' hubs are in the room's group.

  // Warm-up while everyone reads, so the flood's memory is measured against a warm server.
  const WARMUP = 300;
  await flood(sender, 0, WARMUP);
  const warm = await eventually(() => [slow, ...fast].every((c) => gotAll(c, WARMUP)), 15000);
  check("everyone, the slow client too, gets the warm-up", warm,
    [slow, ...fast].map((c) => [c.name, c.seqs.length]));

  const resumeReading = pauseReading(slow);
  const slowBefore = slow.seqs.length;
  phase("flood", { messages: COUNT, bytes: COUNT * SIZE });
  const started = Date.now();
  await flood(sender, WARMUP, COUNT);
  const total = WARMUP + COUNT;
  const delivered = await eventually(() => fast.every((c) => gotAll(c, total)), 30000);
  const floodMs = Date.now() - started;
  phase("flooded", { ms: floodMs });
  check("every fast client receives every flood message", delivered,
    { expected: total, got: fast.map((c) => [c.name, c.seqs.length]), floodMs });
  check("in order, exactly once", fast.every((c) => c.seqs.length === total && inOrder(c)),
    fast.map((c) => [c.name, c.seqs.length, inOrder(c)]));
  check("no fast client, nor the sender, was closed",
    [...fast, sender].every((c) => c.closed === null),
    [...fast, sender].map((c) => [c.name, c.closed]));
  check("the slow client read nothing while paused", slow.seqs.length === slowBefore,
    { before: slowBefore, after: slow.seqs.length });

  // A client that stays stalled must not stay a member: the server gives up on it (closes it,
  // or drops its connection if not even a close frame gets through) while it still reads
  // nothing, and its instance tells the room it left.
  const left = await eventually(
    () => fast.every((c) => c.notices.includes(`slowpoke left ${ROOM}`)), 12000);
  const leftAfterMs = Date.now() - started - floodMs;
  check("the server lets go of the stalled client: the others are told it left the room", left,
    { leftAfterFloodMs: left ? leftAfterMs : null, notices: fast.map((c) => [c.name, c.notices]) });

  // Now read again: what the kernel held arrives, then the end of the connection.
  phase("resume");
  const resumedAt = Date.now();
  resumeReading();
  const ended = await eventually(() => slow.closed !== null, 8000);
  const afterResume = slow.seqs.length - slowBefore;
  check("the stalled client's connection is ended by the server: 4013, or 1006 if dropped",
    slow.closed === 4013 || slow.closed === 1006, {
      code: slow.closed,
      closedAfterResumeMs: ended ? slow.closedAt - resumedAt : null,
      floodMessagesItGot: afterResume,
      floodMessagesItMissed: COUNT - afterResume,
      // What waited in kernel socket buffers (and the server's last buffers) after the pause.
      bytesReadAfterResume: afterResume * SIZE,
    });
  check("the slow client's messages were a prefix of the flood, in order",
    inOrder(slow), slow.seqs.length);

  // The room still works for the others (and reaches the slow client only if it is still open).
  const after = total;
  const slowHad = slow.seqs.length;
  sender.room.emit("chat", `${after}:after the slow client`);
  check("the room still works", await eventually(() => fast.every((c) => gotAll(c, after + 1))),
    { fast: fast.map((c) => [c.name, c.seqs.at(-1)]), slowGotIt: slow.seqs.length > slowHad });

  for (const c of [slow, ...fast, sender]) c.conn.close();
}

run(main, 60);
