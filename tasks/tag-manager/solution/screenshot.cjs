// Screenshots /admin/tags of a running Quillpost server with Playwright (playwright-core, global).
// Usage: node screenshot.cjs <base-url> <output.png>
"use strict";

const { execSync } = require("node:child_process");
const path = require("node:path");

function loadPlaywright() {
  try {
    return require("playwright-core");
  } catch {
    const globalRoot = execSync("npm root -g").toString().trim();
    return require(path.join(globalRoot, "playwright-core"));
  }
}

async function waitForServer(url, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let lastError = "no answer";
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url, { redirect: "manual" });
      if (response.status < 500) return;
      lastError = `HTTP ${response.status}`;
    } catch (error) {
      lastError = String(error && error.message ? error.message : error);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error(`server at ${url} not ready after ${timeoutMs} ms: ${lastError}`);
}

async function main() {
  const [base, output] = process.argv.slice(2);
  if (!base || !output) throw new Error("usage: node screenshot.cjs <base-url> <output.png>");
  const password = process.env.ADMIN_PASSWORD || "quillpost-admin";

  await waitForServer(`${base}/login`, 90_000);

  const { chromium } = loadPlaywright();
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    chromiumSandbox: false,
    args: [
      "--headless=new",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const context = await browser.newContext({
      baseURL: base,
      viewport: { width: 1100, height: 900 },
    });
    const page = await context.newPage();
    // page.request shares the context's cookies, so the session cookie reaches the browser.
    const login = await page.request.post("/api/auth/login", { data: { password } });
    if (!login.ok()) throw new Error(`login failed: HTTP ${login.status()} ${await login.text()}`);

    await page.goto("/admin/tags", { waitUntil: "networkidle" });
    if (!page.url().endsWith("/admin/tags")) throw new Error(`ended up on ${page.url()}`);
    await page.waitForSelector("table tbody tr");
    const rows = await page.locator("table tbody tr").count();
    await page.screenshot({ path: output, fullPage: true });
    console.log(`screenshot: ${output} (${rows} tag rows)`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
