// The dashboard in headless Debian chromium, driven by playwright-core: a local cluster (dd2ctl
// up) runs a tiny DD2 pipeline and then a long sleep job; the test opens the page and checks
// that it loads with no console errors, that the running run's progress advances between two
// reads, that a run page draws its DAG and its evals' sample grids load, and that a job page
// draws its metric curves, and that a sweep's page lists its points with the best one marked and
// draws the objective over the swept key. Screenshots go to OUT (home.png, run.png, job.png,
// sweep.png).
//   node dashboard_test.mjs --bin BUILD/bin --src SOURCE_DIR --out OUT
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const arg = (name) => process.argv[process.argv.indexOf(name) + 1];
const bin = arg("--bin"), src = arg("--src"), out = arg("--out");
mkdirSync(out, { recursive: true });
const { chromium } = createRequire(join(src, "dashboard/package.json"))("playwright-core");

const dir = mkdtempSync(join(tmpdir(), "dd2-dashboard-"));
const home = join(dir, "home");
const ctl = (...args) => execFileSync(join(bin, "dd2ctl"), ["--home", home, ...args], { encoding: "utf8" });
const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let browser;
try {
  ctl("up", "--workers", "2", "--heartbeat-ms", "200");
  const url = ctl("dashboard").trim();
  writeFileSync(join(dir, "tiny.yaml"), `name: tiny
pipeline: dd2
tokenizer: {steps: 20, batch: 16, channels: 16, codebook_size: 32, train_limit: 512}
featurenet: {steps: 20, batch: 32, train_limit: 512}
teacher: {steps: 20, batch: 16, width: 16, heads: 2, train_limit: 512}
tune: {steps: 6, head_steps: 3, pool: 20, batch: 8, m: 2, head_width: 16}
distill: {steps: 60, k: 2, batch: 8, m: 2}
eval: {samples: 50, batch: 50, marginal_samples: 50, euler_steps: 2}
`);
  ctl("submit", join(dir, "tiny.yaml"), "--wait");
  writeFileSync(join(dir, "long.yaml"), "name: long\njobs:\n  - {name: work, type: sleep, params: {seconds: 60, steps: 600}}\n");
  ctl("submit", join(dir, "long.yaml"));
  writeFileSync(join(dir, "sweep.yaml"), `name: scale
jobs:
  - {name: prep, type: sleep, params: {seconds: 0.2, steps: 2, output_bytes: 8}}
  - {name: work, type: sleep, after: [prep], params: {seconds: 0.4, steps: 4}}
sweep:
  grid: {jobs.work.params.loss_scale: [3, 1, 2]}
  seeds: 2
  objective: {job: work, metric: loss}
`);
  const sweepId = JSON.parse(ctl("submit", join(dir, "sweep.yaml"), "--json")).sweep_id;

  browser = await chromium.launchPersistentContext(join(dir, "chromium-profile"), {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run"],
    viewport: { width: 1360, height: 900 },
  });
  const page = browser.pages()[0] || (await browser.newPage());
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));

  // Home: the long run's progress advances between two reads.
  await page.goto(url);
  const row = page.locator('tr[data-run="long-2"] .bar span');
  await row.waitFor({ timeout: 20000 });
  await page.waitForFunction(() => /running/.test(document.querySelector('tr[data-run="long-2"]')?.textContent || ""), null, { timeout: 20000 });
  const progress = async () => Number((await page.locator('tr[data-run="long-2"] .bar .fill').getAttribute("style")).match(/width: ([\d.]+)%/)[1]);
  const first = await progress();
  await sleep(3000);
  const second = await progress();
  check(second > first, `the running run's progress advances (${first}% -> ${second}%)`);
  check(await page.locator('tr[data-run="tiny-1"]').count() === 1, "the finished run is listed");
  await page.screenshot({ path: join(out, "home.png"), fullPage: true });

  // Run page: the DAG and the eval results with their sample grids.
  await page.click('tr[data-run="tiny-1"] a');
  await page.locator(".dag .node").first().waitFor({ timeout: 10000 });
  const nodes = await page.locator(".dag .node").count();
  check(nodes === 11, `the DAG shows the run's 11 jobs (${nodes})`);
  await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll("img.grid")];
    return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  }, null, { timeout: 20000 }).then(() => check(true, "every eval's sample grid image loads"),
    () => check(false, "every eval's sample grid image loads"));
  await page.screenshot({ path: join(out, "run.png"), fullPage: true });

  // Job page: its curves are drawn.
  await page.click('.dag .node[data-job="distill"]');
  await page.locator(".chart canvas").first().waitFor({ timeout: 10000 });
  const drawn = await page.evaluate(() => {
    const c = document.querySelector(".chart canvas");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let colored = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && Math.abs(d[i] - d[i + 2]) > 60) colored++;
    return colored;
  });
  check(drawn > 50, `opening a job draws its curve (${drawn} curve pixels)`);
  const charts = await page.locator(".chart").count();
  check(charts >= 3, `the distill job shows a chart per metric (${charts})`);
  await page.screenshot({ path: join(out, "job.png"), fullPage: true });

  // Sweep page: its six points, the best one marked, the objective drawn over the swept key.
  await page.goto(url + "#/sweep/" + encodeURIComponent(sweepId));
  await page.waitForFunction(() => /finished/.test(document.querySelector("h2 .badge")?.textContent || ""), null, { timeout: 60000 });
  const points = await page.locator("table.points tbody tr").count();
  check(points === 6, `the sweep page lists its 6 points (${points})`);
  const best = await page.locator("table.points tr.best").allTextContents();
  check(best.length === 1 && /loss_scale=1/.test(best[0]), `the lowest loss_scale is marked best (${best.join(" | ")})`);
  await page.locator('.chart[data-key="objective"] canvas').first().waitFor({ timeout: 10000 });
  check(await page.locator("text=Over seeds").count() === 1, "the sweep page shows the spread over seeds");
  await page.screenshot({ path: join(out, "sweep.png"), fullPage: true });

  check(errors.length === 0, `no console errors${errors.length ? ": " + errors.join(" | ") : ""}`);
} catch (e) {
  check(false, "the test ran: " + (e.stack || e));
} finally {
  if (browser) await browser.close().catch(() => {});
  try { ctl("down"); } catch {}
  rmSync(dir, { recursive: true, force: true });
}
console.log(failures.length ? `${failures.length} failed` : "all passed");
process.exit(failures.length ? 1 : 0);
