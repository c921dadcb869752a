// End-to-end check of native messages: plain WebSocket clients (the `ws` package, no neffos.js)
// on two server instances, relayed through ws/native?room=<room>.
// Usage: node native.mjs <http url of instance A> <http url of instance B>
// Prints {"check name": {"ok": bool, "detail": ...}, ...} as JSON; exit code 1 if any failed.
import WebSocket from "ws";
import { check, eventually, run, sleep } from "./harness.mjs";

const [httpA, httpB] = process.argv.slice(2);

function plain(http, room) {
  const socket = new WebSocket(`${http.replace(/^http/, "ws")}/ws/native?room=${room}`);
  const inbox = [];
  socket.on("message", (data, isBinary) => inbox.push(isBinary ? [...data] : data.toString()));
  return new Promise((resolve, reject) => {
    socket.once("open", () => resolve({ socket, inbox }));
    socket.once("error", reject);
  });
}

async function main() {
  const a = await plain(httpA, "lobby");
  const b = await plain(httpB, "lobby");
  const other = await plain(httpB, "elsewhere");
  await sleep(200);
  check("plain WebSocket clients connect with no neffos handshake (nothing is sent to them)",
    [a, b, other].every((c) => c.inbox.length === 0), [a.inbox, b.inbox, other.inbox]);

  a.socket.send("hello;from;A;with;six;semi;colons");
  check("a text frame reaches the room on the other instance, unchanged",
    await eventually(() => b.inbox.includes("hello;from;A;with;six;semi;colons")), b.inbox);
  a.socket.send(Buffer.from([0, 255, 59]));
  check("a binary frame stays binary",
    await eventually(() => b.inbox.some((m) => Array.isArray(m) && m.join() === "0,255,59")), b.inbox);
  await sleep(300);
  check("the sender does not get its own frames", a.inbox.length === 0, a.inbox);
  check("another room does not get them", other.inbox.length === 0, other.inbox);

  for (const c of [a, b, other]) c.socket.close();
}

run(main, 30);
