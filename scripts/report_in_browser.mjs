// Open an edgec report.html in headless Chromium with the network cut off, and say what a reader would see:
// images that failed to load, tables, empty rows, requests that tried to leave the machine, console errors.
// A development check (issue 17): make test parses the HTML instead, since CI has no browser.
//
//   mkdir -p /tmp/report-browser && cd /tmp/report-browser && npm init -y >/dev/null \
//     && npm install @sparticuz/chromium@153 puppeteer-core      # Chromium from the npm registry, no CDN
//   cp $EDGEC/scripts/report_in_browser.mjs . && node report_in_browser.mjs ARTIFACT/report.html shot.png
//
// Exit code 1 when an image is broken, a request left file:/data:, or the page logged an error.
import chromium from "@sparticuz/chromium";
import puppeteer from "puppeteer-core";
const [report, shot] = process.argv.slice(2);
const browser = await puppeteer.launch({
  args: [...chromium.args, "--no-sandbox"],
  executablePath: await chromium.executablePath(),
  headless: true,
  defaultViewport: { width: 1200, height: 900 },
});
const page = await browser.newPage();
const outside = [], errors = [];
await page.setRequestInterception(true);
page.on("request", (r) => {
  const url = r.url();
  if (url.startsWith("file:") || url.startsWith("data:")) r.continue();
  else { outside.push(url); r.abort(); }
});
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
page.on("pageerror", (e) => errors.push(String(e)));
await page.goto("file://" + report, { waitUntil: "load" });
const facts = await page.evaluate(() => ({
  title: document.title,
  images: [...document.images].map((i) => ({ ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, h: i.naturalHeight, alt: i.alt })),
  tables: [...document.querySelectorAll("table")].map((t) => t.rows.length),
  emptyHeaderRows: [...document.querySelectorAll("table tr")].filter((tr) => [...tr.cells].every((c) => c.textContent.trim() === "")).length,
  headings: [...document.querySelectorAll("h1,h2,h3")].map((h) => h.textContent.trim()),
  scripts: document.scripts.length,
  stylesheetsLinked: document.querySelectorAll("link[rel=stylesheet]").length,
}));
await page.screenshot({ path: shot, fullPage: true });
console.log(JSON.stringify({ ...facts, outsideRequests: outside, consoleErrors: errors }, null, 1));
await browser.close();
const broken = facts.images.filter((i) => !i.ok).length;
process.exit(broken || outside.length || errors.length ? 1 : 0);
