// check.cjs drives Debian's chromium through the channel's pages, as a
// person would, and prints what it saw as one JSON object for the Go test
// (cmd/conda-upload-server/browser_test.go) to judge:
//
//   node check.cjs <base URL> <output dir> <package> <hostile package> [<upstream page>]
//
// For each page it records the visible text, the links and whether each
// same-origin one answers 200, dialogs opened, requests to other origins,
// Content-Security-Policy violations, axe-core's WCAG 2.1 AA violations,
// and whether the copy buttons came alive; it takes screenshots of the
// home, package and upstream pages at 1280 and 390 px, and loads the
// pages once more with JavaScript off.
"use strict";
const fs = require("fs");
const path = require("path");
const puppeteer = require("puppeteer-core");

const [base, outDir, pkg, hostile, upstream] = process.argv.slice(2);
const origin = new URL(base).origin;
const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const pages = [
  { name: "home", path: "/", shots: true },
  { name: "search", path: "/?q=" + encodeURIComponent(pkg.slice(0, 3)) },
  { name: "package", path: "/packages/" + pkg, shots: true },
  { name: "hostile", path: "/packages/" + hostile, shots: true },
  { name: "label", path: "/label/dev/" },
  { name: "subdir", path: "/noarch/" },
];
if (upstream) pages.push({ name: "upstream", path: upstream, shots: true });

async function visit(browser, p, width, js) {
  const page = await browser.newPage();
  await page.setViewport({ width, height: 900 });
  await page.setJavaScriptEnabled(js);
  const seen = { dialogs: [], foreign: [], cspConsole: [], errors: [] };
  page.on("dialog", async (d) => { seen.dialogs.push(d.message()); await d.dismiss(); });
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith("data:") && new URL(u).origin !== origin) seen.foreign.push(u);
  });
  page.on("console", (m) => {
    if (/Content.Security.Policy/i.test(m.text())) seen.cspConsole.push(m.text());
  });
  page.on("pageerror", (e) => seen.errors.push(String(e)));
  // Counted by the browser itself: every violation of the page's CSP.
  await page.evaluateOnNewDocument(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
  });
  const resp = await page.goto(base.replace(/\/$/, "") + p.path, { waitUntil: "networkidle0" });
  const r = {
    status: resp.status(),
    cspHeader: resp.headers()["content-security-policy"] || "",
    text: await page.evaluate(() => document.body.innerText),
    title: await page.title(),
    scripts: await page.evaluate(() => [...document.scripts].map((s) => s.src || "inline")),
    links: await page.evaluate(() => [...document.querySelectorAll("a[href]")].map((a) => a.href)),
    copyButtons: await page.evaluate(() => [...document.querySelectorAll("button.copy")].map((b) => !b.hidden)),
    summary: await page.evaluate(() => { const e = document.querySelector(".summary"); return e ? e.textContent : ""; }),
    cspEvents: js ? await page.evaluate(() => window.__csp) : [],
  };
  if (js) {
    // Runtime.evaluate, which the page's CSP does not govern, so that
    // axe itself adds no violation.
    await page.evaluate(axeSource);
    const res = await page.evaluate(() => axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }));
    r.axe = res.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
    // From Node, not the page: the CSP lets the page fetch nothing.
    r.linkStatus = {};
    for (const l of r.links) {
      const u = new URL(l);
      u.hash = "";
      if (u.origin !== origin || u.href in r.linkStatus) continue;
      const res = await fetch(u.href, { headers: { Accept: "text/html" } });
      r.linkStatus[u.href] = res.status;
    }
  }
  if (p.shots) {
    const stem = path.join(outDir, `${p.name}-${width}${js ? "" : "-nojs"}`);
    await page.screenshot({ path: stem + ".png", fullPage: true });
    // The first screen, as a person sees it before scrolling.
    await page.screenshot({ path: stem + "-top.png" });
  }
  await page.close();
  return Object.assign(r, seen);
}

(async () => {
  fs.mkdirSync(outDir, { recursive: true });
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--ignore-certificate-errors", "--disable-gpu", "--no-first-run"],
  });
  const report = {};
  try {
    for (const p of pages) {
      report[p.name] = await visit(browser, p, 1280, true);
      if (p.shots) report[p.name + "-390"] = await visit(browser, p, 390, true);
      report[p.name + "-nojs"] = await visit(browser, p, 1280, false);
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(report));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
