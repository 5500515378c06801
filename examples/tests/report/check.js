// Open a Strata report in headless Chromium (puppeteer-core, Debian's chromium), fail on any
// console error, page error, failed or non-file request; screenshot it; print what the page
// drew and the data it holds as one JSON object. Used by examples/tests/cli/report.rs.
//
//   node check.js REPORT.html SCREENSHOT.png
const path = require("path");
const puppeteer = require(process.env.STRATA_PUPPETEER || "puppeteer-core");

(async () => {
  const [file, shot] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: process.env.STRATA_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 900 });
    page.on("console", (m) => { if (m.type() === "error" || m.type() === "warn") problems.push(`console ${m.type()}: ${m.text()}`); });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
    page.on("request", (r) => { if (!r.url().startsWith("file://")) problems.push(`network request: ${r.url()}`); });
    page.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
    await page.goto("file://" + path.resolve(file), { waitUntil: "load" });
    await page.waitForFunction("window.strataReport && window.strataReport.ready", { timeout: 20000 });
    const result = await page.evaluate(() => {
      const r = window.strataReport;
      const canvases = [...document.querySelectorAll("canvas")].map((c) => {
        const ctx = c.getContext("2d");
        const { data } = ctx.getImageData(0, 0, c.width, c.height);
        let inked = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
        return { width: c.width, height: c.height, inked };
      });
      // Text must have been drawn with a font (an empty box means no font was found).
      const texts = [...document.querySelectorAll("h1, h2, th, td")].slice(0, 200)
        .map((e) => e.getBoundingClientRect().width);
      const tables = [...document.querySelectorAll("table.numbers")].map((t) => ({
        section: t.dataset.section,
        rows: t.querySelectorAll("tbody tr").length,
        firstRow: [...(t.querySelector("tbody tr")?.children || [])].map((td) => td.textContent),
      }));
      const tiles = [...document.querySelectorAll(".kpi .tile")].map((t) => t.textContent);
      return { charts: r.charts, canvases, textWidths: texts, tables, tiles, data: r.data };
    });
    // Sorting: click a numeric header of the first table twice and read the order back.
    const sorted = await page.evaluate(() => {
      const th = [...document.querySelectorAll("table.numbers th")].find((h) => h.classList.length === 0 ? false : h.classList.contains("num"));
      if (!th) return null;
      th.click();
      const t = th.closest("table");
      const i = [...th.parentNode.children].indexOf(th);
      const first = t.querySelector("tbody tr").children[i].textContent;
      th.click();
      const again = t.querySelector("tbody tr").children[i].textContent;
      return { column: th.textContent, first, again, sort: th.getAttribute("aria-sort") };
    });
    await page.screenshot({ path: shot, fullPage: true });
    result.sorted = sorted;
    result.problems = problems;
    process.stdout.write(JSON.stringify(result));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
