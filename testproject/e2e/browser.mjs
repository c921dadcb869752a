// A real browser on both instances: type on A, see it on B.
// Usage: node browser.mjs <http url A> <http url B> <screenshot dir> [chromium path]
// Prints {"ok": bool, "detail": ...} as JSON; exit code 1 on failure.
import { launchHeadless, openChat } from "./chromium.mjs";

const [httpA, httpB, screenshotDir, executablePath] = process.argv.slice(2);

async function main() {
  const browser = await launchHeadless(executablePath);
  try {
    const context = await browser.newContext();
    const pageA = await context.newPage();
    const pageB = await context.newPage();
    await openChat(pageA, httpA, "ann");
    await openChat(pageB, httpB, "ben");
    await pageA.bringToFront();
    await pageA.fill("#text", "hello from the browser on A");
    await pageA.click("#send");
    await pageB.waitForSelector("#log li:has-text('ann: hello from the browser on A')", { timeout: 10000 });
    await pageB.bringToFront();
    await pageB.click("#who");
    await pageB.waitForSelector("#log li:has-text('here: ann, ben')", { timeout: 10000 });
    await pageA.screenshot({ path: `${screenshotDir}/instance-a.png`, fullPage: true });
    await pageB.screenshot({ path: `${screenshotDir}/instance-b.png`, fullPage: true });
    const instances = [await pageA.textContent("#instance"), await pageB.textContent("#instance")];
    return { ok: true, detail: { instances, logB: await pageB.textContent("#log") } };
  } finally {
    await browser.close();
  }
}

main().then((result) => {
  console.log(JSON.stringify(result));
  process.exit(0);
}, (err) => {
  console.log(JSON.stringify({ ok: false, detail: String(err && err.stack || err) }));
  process.exit(1);
});
