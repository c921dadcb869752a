// Debian's headless Chromium, driven by playwright-core, as the browser scenarios launch it.
import { chromium } from "playwright-core";

export const launchHeadless = (executablePath = "/usr/bin/chromium") => chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
