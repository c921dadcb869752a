// Faults under real neffos.js clients: the broker dies and comes back; instance A is SIGKILLed.
// Usage: node faults.mjs <http url of A> <http url of B>
// The test (tests/e2e/test_faults.py) does the killing. This script prints "STEP <name>" when it
// wants a fault, and reads one line from stdin once the fault is done:
//   STEP kill-broker     -> the broker is SIGKILLed (the reply line comes once it is dead)
//   STEP restart-broker  -> the broker is started again on its port (reply once it accepts)
//   STEP kill-a          -> instance A is SIGKILLed
// Clients in room "r" of namespace "chat": a1, a2 on A; b1, b2 on B; c1..c3 through a small TCP
// load balancer that forwards each new connection to the first of A, B that accepts it, dialled
// with neffos.js' `reconnect` option (as a browser behind a load balancer would be).
// Prints {"check name": {"ok": bool, "detail": ...}, ...} as JSON; exit code 1 if any failed.
import neffos from "neffos.js";
import { check, eventually, loadBalancer, run, sleep, step } from "./harness.mjs";

const [httpA, httpB] = process.argv.slice(2);
// Rooms named plain-* keep no history (testproject settings): they keep working on each
// instance while the broker is down; history rooms need the broker (docs/history.rst).
const ROOM = "plain-r";
const wsUrl = (http) => http.replace(/^http/, "ws");
const portOf = (http) => Number(new URL(http).port);

async function client(url, name, options) {
  const c = { name, chats: [], notices: [], closes: [], errors: [] };
  const handlers = {
    chat: {
      chat: (nsConn, msg) => { c.chats.push(JSON.parse(msg.Body).text); },
      notice: (nsConn, msg) => { c.notices.push(msg.Body); },
    },
  };
  c.conn = await neffos.dial(`${url}/ws/chat?name=${name}`, handlers, options);
  c.conn.conn.on("close", (code) => { c.closes.push(code); });
  c.conn.conn.on("error", (err) => { c.errors.push(String(err)); });
  c.nsConn = await c.conn.connect("chat");
  c.room = await c.nsConn.joinRoom(ROOM);
  return c;
}

const got = (c, text) => c.chats.filter((t) => t === text).length;
const everyoneGot = (clients, text) => eventually(() => clients.every((c) => got(c, text) === 1), 2000);
const missing = (clients, text) => clients.filter((c) => got(c, text) !== 1).map((c) => c.name);

async function main() {
  const balancer = await loadBalancer([portOf(httpA), portOf(httpB)]);
  const viaBalancer = `ws://127.0.0.1:${balancer.address().port}`;
  const a1 = await client(wsUrl(httpA), "a1");
  const a2 = await client(wsUrl(httpA), "a2");
  const b1 = await client(wsUrl(httpB), "b1");
  const b2 = await client(wsUrl(httpB), "b2");
  const cs = [];
  for (const name of ["c1", "c2", "c3"]) cs.push(await client(viaBalancer, name, { reconnect: 200 }));
  const onA = [a2, ...cs];
  const all = [a1, a2, b1, b2, ...cs];
  await eventually(() => a1.notices.includes("c3 joined plain-r") && b1.notices.includes("c3 joined plain-r"));

  a1.room.emit("chat", "before");
  check("before the faults, a broadcast reaches both instances",
    await everyoneGot([a2, b1, b2, ...cs], "before"), missing([a2, b1, b2, ...cs], "before"));

  // The broker dies: each instance keeps serving its own clients, and nobody is told of it.
  await step("kill-broker");
  await sleep(300);
  a1.room.emit("chat", "local on A");
  b1.room.emit("chat", "local on B");
  check("broker down: a broadcast on A reaches A's clients", await everyoneGot(onA, "local on A"),
    missing(onA, "local on A"));
  check("broker down: a broadcast on B reaches B's clients", await everyoneGot([b2], "local on B"),
    b2.chats);
  // Joining a room during the outage works locally; its subscription is made once it is back.
  const joinedNew = [];
  for (const c of [a1, a2]) {
    try { c.newRoom = await c.nsConn.joinRoom("plain-new"); joinedNew.push(c.name); } catch (err) { joinedNew.push(String(err)); }
  }
  check("broker down: clients can join a new room", joinedNew.join() === "a1,a2", joinedNew);
  a1.newRoom?.emit("chat", "new room, local");
  check("broker down: the new room carries messages on its instance", await everyoneGot([a2], "new room, local"),
    a2.chats);
  const whoami = await a1.nsConn.ask("whoami", "");
  check("broker down: a local ask is answered", whoami.Body === a1.conn.ID, whoami.Body);
  await sleep(300);
  check("broker down: nothing crossed, nothing twice",
    got(b1, "local on A") + got(b2, "local on A") + got(a2, "local on B") === 0
      && all.every((c) => got(c, "local on A") <= 1),
    { b1: b1.chats, a2: a2.chats });
  check("broker down: no client was closed or saw an error",
    all.every((c) => c.closes.length === 0 && c.errors.length === 0),
    all.map((c) => [c.name, c.closes, c.errors]));

  // The broker is back: cross-instance broadcasts resume within 2 s, both ways.
  await step("restart-broker");
  const back = Date.now();
  const resumed = {};
  for (const [from, to, key] of [[a1, b1, "A->B"], [b1, a1, "B->A"]]) {
    for (let n = 0; !resumed[key]; n++) {
      const text = `probe ${key} ${n}`;
      from.room.emit("chat", text);
      if (await eventually(() => got(to, text) === 1, 100)) resumed[key] = Date.now() - back;
      if (Date.now() - back > 15000) break;
    }
  }
  check("broker back: cross-instance broadcasts resume within 2 s, both ways",
    resumed["A->B"] !== undefined && resumed["B->A"] !== undefined
      && Math.max(resumed["A->B"], resumed["B->A"]) <= 2000,
    { milliseconds: resumed });
  b2.newRoom = await b2.nsConn.joinRoom("plain-new");
  a1.newRoom.emit("chat", "new room, across");
  check("broker back: the room joined during the outage reaches the other instance",
    await everyoneGot([a2, b2], "new room, across"), missing([a2, b2], "new room, across"));
  a1.room.emit("chat", "after the outage");
  check("broker back: a broadcast reaches everyone once", await everyoneGot([a2, b1, b2, ...cs], "after the outage"),
    missing([a2, b1, b2, ...cs], "after the outage"));

  // Instance A is SIGKILLed: B's clients carry on; the balancer's clients reconnect to B and
  // neffos.js rejoins their rooms.
  await step("kill-a");
  b1.room.emit("chat", "B unaffected");
  check("A killed: B's clients are unaffected", await everyoneGot([b2], "B unaffected")
    && b1.closes.length === 0 && b2.closes.length === 0, { b2: b2.chats, closes: [b1.closes, b2.closes] });
  const rejoined = await eventually(
    () => cs.every((c) => b1.notices.filter((n) => n === `${c.name} joined plain-r`).length === 2), 10000);
  check("A killed: clients reconnect through the balancer to B and rejoin their room", rejoined,
    b1.notices);
  b2.room.emit("chat", "after the rejoin");
  check("A killed: the rejoined clients receive again", await everyoneGot([b1, ...cs], "after the rejoin"),
    missing([b1, ...cs], "after the rejoin"));
  check("A killed: B's clients never saw an error", [b1, b2].every((c) => c.errors.length === 0),
    [b1.errors, b2.errors]);

  for (const c of [b1, b2, ...cs]) c.conn.close();
  balancer.close();
}

run(main, 90);
