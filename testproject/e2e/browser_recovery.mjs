// The demo page in Chromium through an instance's death: ann's page is on A, ben's on B, both in
// room "lobby" (a history room). A is SIGKILLed (STEP kill-a); ben goes on talking; ann's page
// reconnects to B by itself (the page lists both instances) and shows what ben said meanwhile,
// each line once, in order.
// Usage: node browser_recovery.mjs <http url A> <http url B> <screenshot dir> [chromium path]
import { launchHeadless, openChat } from "./chromium.mjs";
import { check, run, step } from "./harness.mjs";

const [httpA, httpB, screenshotDir, executablePath] = process.argv.slice(2);
const lines = async (page) => page.$$eval("#log li", (items) => items.map((item) => item.textContent));

async function main() {
  const browser = await launchHeadless(executablePath);
  try {
    const context = await browser.newContext();
    const pageA = await context.newPage();
    const pageB = await context.newPage();
    const problems = [];
    for (const page of [pageA, pageB]) {
      page.on("pageerror", (error) => problems.push(String(error)));
      page.on("console", (message) => { if (message.type() === "error") problems.push(message.text()); });
    }
    process.on("exit", () => { if (problems.length) console.error(JSON.stringify(problems)); });
    await openChat(pageA, httpA, "ann");
    await openChat(pageB, httpB, "ben");
    const say = async (text) => {
      await pageB.bringToFront();
      await pageB.fill("#text", text);
      await pageB.click("#send");
    };
    await say("before");
    await pageA.waitForSelector("#log li:has-text('ben: before')", { timeout: 10000 });
    await step("kill-a");
    const meanwhile = ["while A was gone 1", "while A was gone 2", "while A was gone 3"];
    for (const text of meanwhile) await say(text);
    await pageA.bringToFront();
    await pageA.waitForSelector(`#log li:has-text('ben: ${meanwhile[2]}')`, { timeout: 20000 });
    await pageA.waitForSelector("#log li:has-text('reconnected')", { timeout: 20000 });
    const seen = (await lines(pageA)).filter((line) => line.startsWith("ben: "));
    check("A's page shows what was said while it reconnected, once each, in order",
      JSON.stringify(seen) === JSON.stringify(["ben: before", ...meanwhile.map((t) => `ben: ${t}`)]), seen);
    const connection = await pageA.textContent("#connection-id");
    check("A's page is now connected to B", connection.includes(new URL(httpB).host), connection);
    await say("after");
    await pageA.waitForSelector("#log li:has-text('ben: after')", { timeout: 10000 });
    check("live messages reach it again", true, null);
    // The connection id changed; who the user is did not: presence still names ann.
    await pageA.bringToFront();
    await pageA.click("#who");
    await pageA.waitForSelector("#log li:has-text('here: ann, ben')", { timeout: 10000 });
    check("its presence carried over to the new connection", true, null);
    await pageA.screenshot({ path: `${screenshotDir}/recovered-on-b.png`, fullPage: true });
  } finally {
    await browser.close();
  }
}

run(main, 90);
