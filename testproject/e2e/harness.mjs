// What the Node scenarios share: named checks, polling, and one JSON line of results at the end.
// A scenario calls run(main, seconds); it prints {"check name": {"ok": bool, "detail": ...}, ...}
// and exits 1 if any check failed, main threw, or it did not finish within `seconds`.
import net from "node:net";
import readline from "node:readline";

const results = {};

export const check = (name, ok, detail) => { results[name] = { ok: Boolean(ok), detail }; };

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function eventually(predicate, ms = 3000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (predicate()) return true;
    await sleep(25);
  }
  return predicate();
}

export function run(main, seconds) {
  const finish = (code) => {
    console.log(JSON.stringify(results));
    process.exit(code);
  };
  const watchdog = setTimeout(() => {
    check("scenario finished in time", false, `timed out after ${seconds} s`);
    finish(1);
  }, seconds * 1000);
  main().then(() => {
    clearTimeout(watchdog);
    finish(Object.values(results).every((r) => r.ok) ? 0 : 1);
  }, (err) => {
    clearTimeout(watchdog);
    check("scenario ran without exceptions", false, String(err && err.stack || err));
    finish(1);
  });
}

// Steps: print "STEP <name> [args]" and wait for the test's one-line reply (see conftest.py).
let lines = null;
const replies = [];
let waiting = null;
export async function step(name) {
  if (lines === null) {
    lines = readline.createInterface({ input: process.stdin });
    lines.on("line", (line) => {
      if (waiting) { const w = waiting; waiting = null; w(line); } else replies.push(line);
    });
  }
  console.log(`STEP ${name}`);
  if (replies.length) return replies.shift();
  return new Promise((resolve) => { waiting = resolve; });
}

// A TCP load balancer for WebSockets: each new connection goes to a backend that accepts it —
// the first one in order, or, with roundRobin, the next one in turn (skipping those that refuse).
// No stickiness. `balancer.cut()` resets every connection and refuses new ones until `restore()`.
export function loadBalancer(backends, { roundRobin = false } = {}) {
  let next = 0;
  let cut = false;
  const open = new Set();
  const server = net.createServer((downstream) => {
    if (cut) { downstream.destroy(); return; }
    downstream.pause();
    const first = roundRobin ? next++ % backends.length : 0;
    const attempt = (tried) => {
      if (tried >= backends.length || cut) { downstream.destroy(); return; }
      const upstream = net.connect(backends[(first + tried) % backends.length], "127.0.0.1");
      upstream.once("error", () => attempt(tried + 1));
      upstream.once("connect", () => {
        upstream.removeAllListeners("error");
        const pair = [upstream, downstream];
        open.add(pair);
        const end = () => { open.delete(pair); upstream.destroy(); downstream.destroy(); };
        upstream.on("error", end).on("close", end);
        downstream.on("error", end).on("close", end);
        upstream.pipe(downstream);
        downstream.pipe(upstream);
        downstream.resume();
      });
    };
    attempt(0);
  });
  server.cut = () => {
    cut = true;
    for (const [upstream, downstream] of open) { upstream.resetAndDestroy(); downstream.resetAndDestroy(); }
    open.clear();
  };
  server.restore = () => { cut = false; };
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}
