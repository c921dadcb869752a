// What the Node scenarios share: named checks, polling, and one JSON line of results at the end.
// A scenario calls run(main, seconds); it prints {"check name": {"ok": bool, "detail": ...}, ...}
// and exits 1 if any check failed, main threw, or it did not finish within `seconds`.
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
