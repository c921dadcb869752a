// A client whose TCP connection is cut, with no WebSocket close frame, leaves its rooms.
// Usage: node cut.mjs <http url of A> <http url of B>
// Room "cut" of namespace "chat": observers Z on A and Y on B. Client "x-fin" on A joins, then
// its socket is destroyed (the kernel sends FIN, no close frame); client "x-rst" on B joins,
// then its socket is reset (RST). Each time both observers must be told "<x> left cut", "who"
// must no longer list it, and the room must still carry messages between the observers.
// Prints {"check name": {"ok": bool, "detail": ...}, ...} as JSON; exit code 1 if any failed.
import neffos from "neffos.js";
import { check, eventually, run } from "./harness.mjs";

const [httpA, httpB] = process.argv.slice(2);
const ROOM = "cut";
const wsUrl = (http) => http.replace(/^http/, "ws");

async function client(http, name) {
  const c = { name, chats: [], notices: [], closed: null };
  const handlers = {
    chat: {
      chat: (nsConn, msg) => { c.chats.push(JSON.parse(msg.Body).text); },
      notice: (nsConn, msg) => { c.notices.push(msg.Body); },
    },
  };
  c.conn = await neffos.dial(`${wsUrl(http)}/ws/chat?name=${name}`, handlers);
  c.conn.conn.on("close", (code) => { c.closed = code; });
  c.nsConn = await c.conn.connect("chat");
  c.room = await c.nsConn.joinRoom(ROOM);
  return c;
}

const who = async (c) => JSON.parse((await c.nsConn.ask("who", ROOM)).Body);

async function cut(observers, http, name, how) {
  const x = await client(http, name);
  check(`${name}: the observers see it join`,
    await eventually(() => observers.every((o) => o.notices.includes(`${name} joined ${ROOM}`))),
    observers.map((o) => [o.name, [...o.notices]]));
  const present = await who(observers[0]);
  check(`${name}: "who" lists it before the cut`, present.includes(name), present);

  const socket = x.conn.conn._socket;
  const cutAt = Date.now();
  if (how === "rst") socket.resetAndDestroy();
  else socket.destroy();
  const left = await eventually(
    () => observers.every((o) => o.notices.includes(`${name} left ${ROOM}`)), 5000);
  check(`${name}: both observers are told it left, within 5 s of the cut (${how})`, left,
    { afterMs: left ? Date.now() - cutAt : null, notices: observers.map((o) => [o.name, [...o.notices]]) });
  const after = await who(observers[1]);
  check(`${name}: "who" no longer lists it`, !after.includes(name), after);
  return after;
}

async function main() {
  const z = await client(httpA, "z-observer");
  const y = await client(httpB, "y-observer");
  check("the observers see each other", await eventually(() => z.notices.includes(`y-observer joined ${ROOM}`)),
    [...z.notices]);

  await cut([y, z], httpA, "x-fin", "fin");
  const remaining = await cut([y, z], httpB, "x-rst", "rst");
  check('"who" lists exactly the observers after both cuts',
    JSON.stringify(remaining) === JSON.stringify(["y-observer", "z-observer"]), remaining);

  y.room.emit("chat", "from y after the cuts");
  z.room.emit("chat", "from z after the cuts");
  check("room broadcasts still reach both observers, across instances",
    await eventually(() => z.chats.includes("from y after the cuts") && y.chats.includes("from z after the cuts")),
    { y: y.chats, z: z.chats });
  check("the observers were not closed", y.closed === null && z.closed === null, [y.closed, z.closed]);

  y.conn.close();
  z.conn.close();
}

run(main, 40);
