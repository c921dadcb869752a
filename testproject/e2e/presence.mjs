// "Who is here?" is exact across instances, right after joins and right after abrupt disconnects.
// Usage: node presence.mjs <http url of A> <http url of B> [clients per instance = 100] [cut = 50]
// Every client joins room "presence" of namespace "chat" (nickname p-<index>; even indexes on A,
// odd on B). As soon as every joinRoom has been answered — no waiting — "who" asked on A and on B
// must list exactly every nickname. Then `cut` clients (half on each instance, half FIN, half
// RST) lose their TCP connection with no WebSocket close frame, and "who" is asked in a loop on
// both instances until it lists exactly the remaining clients. Every answer must list every
// client still connected, and must not list a client whose "<name> left presence" notice the
// asking client had received before it asked (the chat sends that notice from on_leave, after
// the connection was withdrawn from presence: from then on no answer may list it).
// Prints {"check name": {"ok": bool, "detail": ...}, ...} as JSON; exit code 1 if any failed.
import neffos from "neffos.js";
import { check, eventually, sleep, run } from "./harness.mjs";

const [httpA, httpB, perInstanceArg = "100", cutArg = "50"] = process.argv.slice(2);
const PER_INSTANCE = Number(perInstanceArg);
const CUT = Number(cutArg);
const CLIENTS = 2 * PER_INSTANCE;
const ROOM = "presence";
const EXACT_WITHIN_MS = 5000;
const wsUrl = (http) => http.replace(/^http/, "ws");
const WS_OPTIONS = { perMessageDeflate: false }; // see burst.mjs
const nameOf = (index) => `p-${String(index).padStart(3, "0")}`;

async function client(http, index) {
  const c = { index, name: nameOf(index), left: new Set(), closed: null };
  const leftSuffix = ` left ${ROOM}`;
  const handlers = {
    chat: {
      notice: (nsConn, msg) => {
        if (msg.Body.endsWith(leftSuffix)) c.left.add(msg.Body.slice(0, -leftSuffix.length));
      },
    },
  };
  c.conn = await neffos.dial(`${wsUrl(http)}/ws/chat?name=${c.name}`, handlers, WS_OPTIONS);
  c.conn.conn.on("close", (code) => { c.closed = code; });
  c.nsConn = await c.conn.connect("chat");
  return c;
}

// Dial in small waves: a listen backlog of 50 (Twisted's default) is no place for 100 SYNs.
async function dialAll() {
  const clients = [];
  for (let start = 0; start < CLIENTS; start += 20) {
    const wave = [];
    for (let i = start; i < Math.min(start + 20, CLIENTS); i++) {
      wave.push(client(i % 2 === 0 ? httpA : httpB, i));
    }
    clients.push(...(await Promise.all(wave)));
  }
  return clients;
}

const who = async (c) => JSON.parse((await c.nsConn.ask("who", ROOM)).Body);
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

async function main() {
  const clients = await dialAll();
  await Promise.all(clients.map((c) => c.nsConn.joinRoom(ROOM)));
  const everyone = clients.map((c) => c.name).sort();
  const askers = [clients[0], clients[1]]; // on A, on B
  const [onA, onB] = await Promise.all(askers.map(who));
  check(`right after the joins, "who" on A lists exactly the ${CLIENTS}`, same(onA, everyone),
    { count: onA.length, missing: everyone.filter((n) => !onA.includes(n)).slice(0, 5) });
  check(`right after the joins, "who" on B lists exactly the ${CLIENTS}`, same(onB, everyone),
    { count: onB.length, missing: everyone.filter((n) => !onB.includes(n)).slice(0, 5) });

  // Cut CUT clients that are not askers, alternating instances and FIN/RST.
  const victims = clients.slice(2, 2 + CUT);
  const cut = new Set(victims.map((c) => c.name));
  const remaining = everyone.filter((n) => !cut.has(n));
  const cutAt = Date.now();
  victims.forEach((c, k) => {
    const socket = c.conn.conn._socket;
    if (k % 4 < 2) socket.resetAndDestroy();
    else socket.destroy();
  });

  const problems = { missedConnected: [], listedAfterLeft: [], strangers: [], duplicates: [] };
  let answers = 0;
  let exactAt = null;
  while (Date.now() - cutAt < EXACT_WITHIN_MS && exactAt === null) {
    const round = await Promise.all(askers.map(async (asker) => {
      const noticed = new Set(asker.left); // leaves the server had done before this ask
      const answer = await who(asker);
      answers += 1;
      const listed = new Set(answer);
      if (listed.size !== answer.length) problems.duplicates.push(answer.length - listed.size);
      const missed = remaining.filter((n) => !listed.has(n));
      if (missed.length) problems.missedConnected.push(missed.slice(0, 5));
      const stale = answer.filter((n) => noticed.has(n));
      if (stale.length) problems.listedAfterLeft.push(stale.slice(0, 5));
      const strangers = answer.filter((n) => !everyone.includes(n));
      if (strangers.length) problems.strangers.push(strangers.slice(0, 5));
      return same(answer, remaining);
    }));
    if (round.every(Boolean)) exactAt = Date.now();
    else await sleep(50);
  }
  check(`"who" on both instances lists exactly the ${remaining.length} remaining within ${EXACT_WITHIN_MS / 1000} s of the cut`,
    exactAt !== null, { exactAfterMs: exactAt === null ? null : exactAt - cutAt, answers });
  check("no answer missed a connected client", problems.missedConnected.length === 0,
    problems.missedConnected.slice(0, 3));
  check("no answer listed a client after its leave was announced", problems.listedAfterLeft.length === 0,
    problems.listedAfterLeft.slice(0, 3));
  check("no answer listed a stranger or a duplicate",
    problems.strangers.length === 0 && problems.duplicates.length === 0, problems);
  const noticesComplete = await eventually(
    () => askers.every((a) => victims.every((v) => a.left.has(v.name))));
  check("both askers were told every cut client left", noticesComplete,
    askers.map((a) => a.left.size));
  const closed = clients.filter((c) => !cut.has(c.name) && c.closed !== null).map((c) => [c.name, c.closed]);
  check("no remaining connection was closed", closed.length === 0, closed.slice(0, 5));

  for (const c of clients) if (!cut.has(c.name)) c.conn.close();
}

run(main, 25);
