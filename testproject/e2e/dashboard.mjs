// The live dashboard in a real browser, next to the chat on both instances.
// Usage: node dashboard.mjs <http url A> <http url B> <screenshot dir> [chromium path]
// Two chat pages (ann on A, ben on B) join "lobby"; A's /dashboard must show both instances,
// the room with 2 members, and traffic once ann chats. Prints "STEP status" when the chat pages
// are connected (the test runs `manage.py neffos status` then) and waits for a line on stdin.
// Prints {"check name": {"ok": bool, "detail": ...}, ...} as JSON; exit code 1 if any failed.
import readline from "node:readline";
import { launchHeadless } from "./chromium.mjs";
import { check, run } from "./harness.mjs";

const [httpA, httpB, screenshotDir, executablePath] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

async function main() {
  const browser = await launchHeadless(executablePath);
  try {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    const chats = [];
    for (const [url, name] of [[httpA, "ann"], [httpB, "ben"]]) {
      const page = await context.newPage();
      await page.goto(url);
      await page.fill("#name", name);
      await page.click("#join");
      await page.waitForSelector("#log li:has-text('you joined lobby')", { timeout: 10000 });
      chats.push(page);
    }
    console.log("STEP status");
    await nextLine();

    const dashboard = await context.newPage();
    await dashboard.goto(`${httpA}/dashboard`);
    const text = (selector) => dashboard.locator(selector).innerText();
    let twoInstances = true;
    try {
      await dashboard.waitForFunction(() => document.getElementById("instance-count").textContent === "2",
        null, { timeout: 15000 });
    } catch { twoInstances = false; }
    check("the dashboard lists both instances", twoInstances, await text("#instances"));
    let lobby = true;
    try {
      await dashboard.waitForSelector("#rooms tr:has-text('lobby') >> td:text-is('2')", { timeout: 15000 });
    } catch { lobby = false; }
    check("the dashboard shows the room with its 2 members (one per instance)", lobby, await text("#rooms"));

    // A page in the background gets no animation frames, and Playwright waits for two before
    // each fill and click: bring ann's page to the front (1 s per action otherwise).
    await chats[0].bringToFront();
    for (let n = 0; n < 20; n++) {
      await chats[0].fill("#text", `message ${n}`);
      await chats[0].click("#send");
    }
    await chats[1].waitForSelector("#log li:has-text('ann: message 19')", { timeout: 10000 });
    await dashboard.bringToFront();
    let traffic = true;
    try {
      await dashboard.waitForFunction(() => [...document.querySelectorAll("#instances tbody tr")]
        .some((row) => parseFloat(row.children[6].textContent) > 0), null, { timeout: 10000 });
    } catch { traffic = false; }
    check("the dashboard shows messages/s once ann chats", traffic, await text("#instances"));
    check("the dashboard shows every instance connected",
      (await text("#instances")).split("connected").length - 1 === 2, await text("#instances"));
    await dashboard.screenshot({ path: `${screenshotDir}/dashboard.png`, fullPage: true });
    check("screenshot taken", true, `${screenshotDir}/dashboard.png`);
  } finally {
    await browser.close();
    lines.close();
  }
}

run(main, 100);
