// Recovery under real neffos.js clients with the channels_neffos helper (recovery.js).
// Usage: node recovery.mjs <mode> <http url of A> <http url of B> [clients]
// Clients (default 100) join room "r" of namespace "chat" through a round-robin TCP balancer in
// front of A and B (no stickiness), so about half are on each. The test sends numbered
// broadcasts to the room from outside the instances (as a Celery task would) and does the
// faults; this script prints "STEP <name>" when it wants one (see conftest.run_node_steps):
//   STEP send-start      -> broadcasts begin ("1", "2", ... in the chat's JSON body)
//   STEP send-stop       -> broadcasts end; the reply is how many were sent
//   mode "kill":    STEP kill-a                          (SIGKILL)
//   mode "rolling": STEP drain-a, start-a, drain-b, start-b  (SIGTERM: drain; then a new process)
//   mode "broker":  STEP restart-broker                  (killed, started without its data)
//   mode "away":    one client is cut off while more than its room's history holds is sent
// Checks: every client ends with every broadcast exactly once, in offset order (modes kill,
// rolling); recovered: false and the app's reload path (modes broker, away), never a partial
// replay presented as complete.
import neffos from "neffos.js";
import "../../channels_neffos/static/channels_neffos/recovery.mjs";
import { check, eventually, loadBalancer, run, sleep, step } from "./harness.mjs";

const { connect } = globalThis.ChannelsNeffos;
const [mode, httpA, httpB, count = "100"] = process.argv.slice(2);
const ROOM = mode === "away" ? "small-away" : "r";
const portOf = (http) => Number(new URL(http).port);

async function client(url, name) {
  const c = { name, seqs: [], offsets: [], recoveries: [], states: [], reloads: 0 };
  c.session = await connect(`${url}/ws/chat?name=${name}`, {
    chat: {
      chat: (nsConn, msg) => {
        if (msg.Room !== ROOM) return;
        const [seq] = JSON.parse(msg.Body).text.split("|");  // "<n>|<send time>" (broadcaster.py)
        c.seqs.push(Number(seq));
        c.offsets.push(msg.position ? msg.position.offset : null);
      },
    },
  }, {
    neffos,
    minDelay: 100,
    maxDelay: 2000,
    onRecovery: (info) => {
      c.recoveries.push(info);
      if (!info.recovered) c.reloads++;  // the app's reload path
    },
    onState: (state, detail) => c.states.push(detail ? `${state}:${detail.code}` : state),
  });
  await c.session.join("chat", ROOM);
  return c;
}

const exactlyOnce = (c, total) => c.seqs.length === total && c.seqs.every((s, i) => s === i + 1);
const increasing = (c) => c.offsets.every((o, i) => o !== null && (i === 0 || o > c.offsets[i - 1]));
const describe = (c, total) => {
  const seen = new Set(c.seqs);
  const missing = [];
  for (let s = 1; s <= total && missing.length < 10; s++) if (!seen.has(s)) missing.push(s);
  return { name: c.name, got: c.seqs.length, missing, dups: c.seqs.length - seen.size, states: c.states, recoveries: c.recoveries.slice(-3) };
};

async function main() {
  const balancer = await loadBalancer([portOf(httpA), portOf(httpB)], { roundRobin: true });
  const viaBalancer = `ws://127.0.0.1:${balancer.address().port}`;
  const clients = [];
  for (let i = 0; i < Number(count); i++) clients.push(await client(viaBalancer, `c${i}`));
  check("every client joined and learnt the room's position",
    await eventually(() => clients.every((c) => c.recoveries.length === 1 && c.recoveries[0].recovered), 10000),
    clients.filter((c) => c.recoveries.length !== 1).map((c) => c.name));

  if (mode === "away") return away(clients, balancer);
  await step("send-start");
  await eventually(() => clients.every((c) => c.seqs.length >= 25), 10000);
  const faults = { kill: ["kill-a"], rolling: ["drain-a", "start-a", "drain-b", "start-b"], broker: ["restart-broker"] }[mode];
  for (const fault of faults) {
    await step(fault);
    if (fault.startsWith("drain") || fault === "kill-a") {
      // Every client is live again (reconnected where needed) and has received since.
      const mark = Math.max(...clients.map((c) => c.seqs.length));
      const back = await eventually(() => clients.every((c) => c.session.state === "connected" && c.seqs.length > mark), 20000);
      check(`${fault}: every client is live again`, back,
        clients.filter((c) => !(c.session.state === "connected" && c.seqs.length > mark)).slice(0, 5).map((c) => describe(c, 0)));
    }
  }
  if (mode === "rolling") {
    check("drained clients were closed with code 4012", clients.every((c) => c.states.includes("reconnecting:4012")),
      clients.filter((c) => !c.states.includes("reconnecting:4012")).slice(0, 5).map((c) => c.states));
  }
  if (mode === "broker") {
    const told = await eventually(() => clients.every((c) => c.reloads >= 1), 20000);
    check("broker restarted without its data: every client is told recovered: false and reloads", told,
      clients.filter((c) => c.reloads === 0).slice(0, 5).map((c) => describe(c, 0)));
    check("the reason is the new epoch", clients.every((c) => c.recoveries.some((r) => !r.recovered && (r.reason === "epoch" || r.reason === "gap"))),
      clients.slice(0, 3).map((c) => c.recoveries));
  }
  await sleep(2000);  // live traffic after the last fault
  const total = Number(await step("send-stop"));
  if (mode !== "broker") {
    const complete = await eventually(() => clients.every((c) => c.seqs.length >= total), 20000);
    const wrong = clients.filter((c) => !exactlyOnce(c, total) || !increasing(c));
    check(`every client has every one of the ${total} broadcasts exactly once, in offset order`,
      complete && wrong.length === 0, wrong.slice(0, 5).map((c) => describe(c, total)));
    check("no client was ever told recovered: false",
      clients.every((c) => c.recoveries.every((r) => r.recovered)),
      clients.filter((c) => c.recoveries.some((r) => !r.recovered)).slice(0, 5).map((c) => c.recoveries));
    const moved = clients.filter((c) => c.recoveries.length > 1);
    check("clients reconnected to the other instance and recovered there", moved.length > 0,
      { reconnected: moved.length, replayed: moved.reduce((n, c) => n + c.recoveries.slice(1).reduce((m, r) => m + r.replayed, 0), 0) });
  }
  for (const c of clients) c.session.close();
  balancer.close();
}

// One client away longer than the room's history holds (size 10): recovered false, nothing replayed.
async function away(clients, balancer) {
  const [stay] = clients;
  const absent = await client(`ws://127.0.0.1:${(await loadBalancer([portOf(httpA), portOf(httpB)])).address().port}`, "absent");
  const own = absent.session;
  await step("send-start");
  await eventually(() => absent.seqs.length >= 3, 10000);
  // Cut only the absent client: close its socket and keep its reconnections failing.
  const realDial = own._dial.bind(own);
  let blocked = true;
  own._dial = () => (blocked ? Promise.reject(new Error("offline")) : realDial());
  own.conn.conn.close();
  const before = absent.seqs.length;
  await eventually(() => stay.seqs.length >= before + 25, 20000);
  blocked = false;
  const back = await eventually(() => absent.recoveries.length >= 2, 20000);
  const last = absent.recoveries[absent.recoveries.length - 1];
  check("away longer than the history holds: told recovered: false (evicted) and reloads",
    back && last.recovered === false && last.reason === "evicted" && absent.reloads === 1, absent.recoveries);
  check("nothing replayed: no partial replay presented as complete", last.replayed === 0, last);
  // Broadcasts sent before the rejoin's boundary are part of the reload; wait for live ones.
  await eventually(() => absent.seqs.length > before, 10000);
  const total = Number(await step("send-stop"));
  await eventually(() => absent.seqs[absent.seqs.length - 1] === total, 10000);
  const after = absent.seqs.slice(before);
  check("after the reload, live messages continue from the position the server gave, in order",
    after.length > 0 && after[0] > before + 10 && after.every((s, i) => i === 0 || s === after[i - 1] + 1)
      && after[after.length - 1] === total,
    { before, after: after.slice(0, 5), last: after.slice(-3) });
  for (const c of [...clients, absent]) c.session.close();
  balancer.close();
}

run(main, 150);
