// End-to-end scenario with the real neffos.js client against two server instances.
// Usage: node scenario.mjs <http url of instance A> <http url of instance B>
// Prints {"check name": {"ok": bool, "detail": ...}, ...} as JSON; exit code 1 if any failed.
import neffos from "neffos.js";
import { check, eventually, run, sleep } from "./harness.mjs";

const [httpA, httpB] = process.argv.slice(2);
const wsUrl = (http) => http.replace(/^http/, "ws");

async function client(http, name) {
  const inbox = [];
  const record = (event) => (nsConn, msg) => { inbox.push({ event, room: msg.Room, body: msg.Body }); };
  const handlers = {
    chat: {
      chat: record("chat"),
      notice: record("notice"),
      whisper: record("whisper"),
      ping: () => neffos.reply(`pong from ${name}`),
    },
  };
  const conn = await neffos.dial(`${wsUrl(http)}/ws/chat?name=${name}`, handlers);
  const nsConn = await conn.connect("chat");
  return { name, conn, nsConn, inbox, rooms: {} };
}

const chats = (c, text) => c.inbox.filter((m) => m.event === "chat" && m.body.includes(text));

async function main() {
  const alice = await client(httpA, "alice");
  const dave = await client(httpA, "dave");
  const bob = await client(httpB, "bob");
  const carol = await client(httpB, "carol");
  check("handshake gives each connection an id", [alice, dave, bob, carol].every((c) => c.conn.ID),
    [alice.conn.ID, bob.conn.ID]);

  for (const c of [alice, dave, bob, carol]) c.rooms.lobby = await c.nsConn.joinRoom("lobby");
  check("join notices reach the room on both instances",
    await eventually(() => alice.inbox.some((m) => m.event === "notice" && m.body === "carol joined lobby")),
    alice.inbox);

  alice.rooms.lobby.emit("chat", "hello from A");
  const crossed = await eventually(() => chats(bob, "hello from A").length && chats(carol, "hello from A").length
    && chats(dave, "hello from A").length);
  await sleep(300);
  check("room broadcast reaches the other instance and the same instance", crossed,
    { bob: bob.inbox, dave: dave.inbox });
  check("room broadcast excludes the sender", chats(alice, "hello from A").length === 0, alice.inbox);
  check("room broadcast carries the room", chats(bob, "hello from A")[0]?.room === "lobby", bob.inbox);
  check("room broadcast arrives once", chats(bob, "hello from A").length === 1 && chats(dave, "hello from A").length === 1,
    { bob: chats(bob, "hello from A"), dave: chats(dave, "hello from A") });

  alice.nsConn.emit("whisper", JSON.stringify({ to: bob.conn.ID, text: "psst" }));
  const whispered = await eventually(() => bob.inbox.some((m) => m.event === "whisper" && m.body.includes("psst")));
  await sleep(200);
  check("To-targeted message reaches exactly that connection",
    whispered && !carol.inbox.some((m) => m.event === "whisper") && !dave.inbox.some((m) => m.event === "whisper"),
    bob.inbox);

  const whoami = await alice.nsConn.ask("whoami", "");
  check("client→server ask is answered", whoami.Body === alice.conn.ID, whoami.Body);

  const who = JSON.parse((await alice.nsConn.ask("who", "lobby")).Body);
  check("who-is-here gathers every instance", JSON.stringify(who) === JSON.stringify(["alice", "bob", "carol", "dave"]), who);

  const pong = await alice.nsConn.ask("poke", bob.conn.ID);
  check("server→client ask across instances", pong.Body === "pong from bob", pong.Body);
  const pongLocal = await bob.nsConn.ask("poke", carol.conn.ID);
  check("server→client ask on the same instance", pongLocal.Body === "pong from carol", pongLocal.Body);

  let refused = null;
  try { await alice.nsConn.joinRoom("closed"); } catch (err) { refused = err.message; }
  check("a handler can veto a join", refused === "this room is closed", refused);

  let unknown = null;
  try { await alice.nsConn.ask("no-such-event", ""); } catch (err) { unknown = err.message; }
  check("an unknown event is answered with an error", unknown && unknown.includes("unknown event"), unknown);

  let badNamespace = null;
  try { await alice.conn.connect("nope"); } catch (err) { badNamespace = err.message; }
  check("connecting to an undeclared namespace fails", badNamespace === "bad namespace", badNamespace);

  await bob.rooms.lobby.leave();
  const leftNotice = await eventually(() => alice.inbox.some((m) => m.event === "notice" && m.body === "bob left lobby"));
  alice.rooms.lobby.emit("chat", "after bob left");
  await eventually(() => chats(carol, "after bob left").length);
  await sleep(300);
  check("leaving a room stops its broadcasts", leftNotice && chats(bob, "after bob left").length === 0
    && chats(carol, "after bob left").length === 1, bob.inbox);

  carol.conn.close();
  await eventually(() => alice.inbox.some((m) => m.event === "notice" && m.body === "carol left lobby"));
  const whoAfter = JSON.parse((await alice.nsConn.ask("who", "lobby")).Body);
  check("disconnect cleans membership on its instance", JSON.stringify(whoAfter) === JSON.stringify(["alice", "dave"]), whoAfter);

  for (const c of [alice, dave, bob]) c.conn.close();
}

run(main, 60);
