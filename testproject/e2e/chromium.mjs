// Debian's headless Chromium, driven by playwright-core, as the browser scenarios launch it.
import { chromium } from "playwright-core";

export const launchHeadless = (executablePath = "/usr/bin/chromium") => chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});

// Open the chat page at `url` as `name` and join the room "lobby" (the page's default).
// A background page gets no animation frames, and Playwright waits for two before each fill and
// click: the page being used goes to the front first.
export async function openChat(page, url, name) {
  await page.bringToFront();
  await page.goto(url);
  await page.fill("#name", name);
  await page.click("#join");
  await page.waitForSelector("#log li:has-text('you joined lobby')", { timeout: 10000 });
}
