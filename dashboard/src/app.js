// The dd2 dashboard: one page over the coordinator's /api/v1 documents (the same documents as
// `dd2ctl ... --json`), refreshed every second. Views (hash routes):
//   #/                      runs with live progress, sweeps, workers and their attempts
//   #/run/RUN               the run's DAG of jobs, its eval results with sample grids, failures
//   #/run/RUN/job/JOB       the job's metric curves (uPlot), attempts and checkpoints
//   #/sweep/SWEEP           the sweep's points (values, run, progress, objective, halving), the
//                           objective over the first swept key, the mean and spread over seeds
// A ?token=... in the page's URL (keyed coordinators) is sent with every request.
import uPlot from "uplot";

const token = new URLSearchParams(location.search).get("token");
const REFRESH_MS = 1000;
const EVAL_COLUMNS = [
  ["fid", "FID"], ["inception_score", "IS"], ["precision", "Precision"], ["recall", "Recall"],
  ["class_accuracy", "Class acc."], ["teacher_nll", "Teacher NLL"], ["latency_ms_b1", "ms/img @1"],
  ["speedup_vs_teacher_b1", "Speed-up @1"],
];

function api(path) {
  const url = "api/v1/" + path + (token ? (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : "");
  return fetch(url, { cache: "no-store" }).then((r) => {
    if (!r.ok) return r.json().then((e) => Promise.reject(new Error(e.error || r.statusText)), () => Promise.reject(new Error(r.statusText)));
    return r.json();
  });
}

// el("div.class", {attr: v}, children...): DOM without innerHTML, so no string is ever markup.
function el(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") Object.assign(node.style, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const fmt = (v) => (typeof v !== "number" ? (v ?? "–") : Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toPrecision(4));
const when = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–");
const badge = (state) => el("span.badge.s-" + state, {}, state);
const link = (href, text) => el("a", { href }, text);
const enc = encodeURIComponent;

function bar(fraction, label) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return el("div.bar", { title: label || pct.toFixed(0) + "%" },
    el("div.fill", { style: { width: pct.toFixed(1) + "%" } }), el("span", {}, label || pct.toFixed(0) + "%"));
}

function table(headers, rows, cls) {
  return el("table" + (cls ? "." + cls : ""), {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td.muted", { colspan: headers.length }, "none"))));
}

// ---- views ----

// `status`: the runs document refresh() fetched for the header.
async function homeView(status) {
  const [workers, sweeps] = await Promise.all([api("workers"), api("sweeps").catch(() => ({ sweeps: [] }))]);
  const runs = [...status.runs].reverse();
  const runRows = runs.map((r) => {
    const frac = r.progress;
    return el("tr", { "data-run": r.id },
      el("td", {}, link("#/run/" + enc(r.id), r.id)), el("td", {}, r.name), el("td", {}, badge(r.state)),
      el("td.wide", {}, bar(frac, `${r.jobs_succeeded}/${r.jobs_total} jobs · ${(frac * 100).toFixed(0)}%`)),
      el("td.muted", {}, when(r.created_ms)));
  });
  const sweepList = sweeps.sweeps || [];
  const workerRows = workers.workers.map((w) => el("tr", {},
    el("td", {}, w.id), el("td", {}, w.host), el("td", {}, w.device + (w.device === "cuda" ? ":" + w.device_index : "")),
    el("td", {}, badge(w.state)), el("td", {}, `${w.used}/${w.slots}`),
    el("td", {}, w.attempts.map((a) => { const [run, rest] = a.split("/"); return link(`#/run/${enc(run)}/job/${enc(rest.split("#")[0])}`, a); })
      .flatMap((x, i) => (i ? [", ", x] : [x])))));
  return [
    el("section", {}, el("h2", {}, "Runs"), table(["Run", "Name", "State", "Progress", "Submitted"], runRows, "runs")),
    sweepList.length ? el("section", {}, el("h2", {}, "Sweeps"), table(["Sweep", "Name", "Keys", "State", "Points"], sweepList.map((s) => el("tr", {},
      el("td", {}, link("#/sweep/" + enc(s.id), s.id)), el("td", {}, s.name), el("td", {}, (s.keys || []).join(", ")), el("td", {}, badge(s.state)),
      el("td", {}, `${s.points} (${Object.entries(s.point_states || {}).map(([k, v]) => `${v} ${k}`).join(", ")})`))))) : null,
    el("section", {}, el("h2", {}, "Workers"), table(["Worker", "Host", "Device", "State", "Slots used", "Attempts"], workerRows)),
  ];
}

// Columns by depth in the DAG (a job sits right of everything it runs after).
function dagView(run) {
  const byName = new Map(run.jobs.map((j) => [j.name, j]));
  const depth = new Map();
  const depthOf = (j) => {
    if (depth.has(j.name)) return depth.get(j.name);
    depth.set(j.name, 0);
    const d = Math.max(-1, ...(j.after || []).filter((a) => byName.has(a)).map((a) => depthOf(byName.get(a)))) + 1;
    depth.set(j.name, d);
    return d;
  };
  run.jobs.forEach(depthOf);
  const W = 178, H = 58, GX = 56, GY = 14;
  const columns = [];
  for (const j of run.jobs) (columns[depth.get(j.name)] ||= []).push(j);
  const pos = new Map();
  columns.forEach((col, c) => col.forEach((j, r) => pos.set(j.name, { x: c * (W + GX), y: r * (H + GY) })));
  const width = columns.length * (W + GX) - GX, height = Math.max(...columns.map((c) => c.length)) * (H + GY) - GY;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  for (const j of run.jobs) {
    for (const a of j.after || []) {
      if (!pos.has(a)) continue;
      const p = pos.get(a), q = pos.get(j.name);
      const path = document.createElementNS(svgNS, "path");
      const x1 = p.x + W, y1 = p.y + H / 2, x2 = q.x, y2 = q.y + H / 2;
      path.setAttribute("d", `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`);
      path.setAttribute("class", "edge");
      svg.append(path);
    }
  }
  const nodes = run.jobs.map((j) => {
    const p = pos.get(j.name);
    const frac = j.state === "succeeded" ? 1 : j.total > 0 ? j.step / j.total : 0;
    return el("a.node.s-" + j.state, { href: `#/run/${enc(run.id)}/job/${enc(j.name)}`, "data-job": j.name, title: j.failure || j.state,
      style: { left: p.x + "px", top: p.y + "px", width: W + "px", height: H + "px" } },
      el("div.name", {}, j.name), el("div.meta", {}, `${j.type} · ${j.state}${j.attempts > 1 ? " · " + j.attempts + " attempts" : ""}`),
      el("div.mini", {}, el("div", { style: { width: (frac * 100).toFixed(1) + "%" } })));
  });
  return el("div.dag", { style: { width: width + "px", height: height + "px" } }, svg, nodes);
}

async function runView(runId) {
  const [{ run }, jobs] = await Promise.all([api("runs/" + enc(runId)), api("runs/" + enc(runId) + "/jobs")]);
  const frac = run.progress;
  const evals = run.jobs.filter((j) => j.type === "eval");
  const evalRows = evals.map((j) => el("tr", {},
    el("td", {}, link(`#/run/${enc(run.id)}/job/${enc(j.name)}`, j.name)), el("td", {}, badge(j.state)),
    EVAL_COLUMNS.map(([k]) => el("td.num", {}, fmt(j.metrics[k]))),
    el("td", {}, j.state === "succeeded" ? el("img.grid", { src: `api/v1/runs/${enc(run.id)}/jobs/${enc(j.name)}/samples.png${token ? "?token=" + enc(token) : ""}`,
      alt: "samples of " + j.name, loading: "lazy" }) : null)));
  const failures = [];
  for (const j of jobs.jobs) {
    for (const a of j.attempts_detail) {
      if (["failed", "lost", "preempted"].includes(a.state)) {
        failures.push(el("tr", {}, el("td", {}, a.id), el("td", {}, badge(a.state)), el("td", {}, a.workers.join(", ")),
          el("td.muted", {}, when(a.finished_ms)), el("td.cause", {}, a.cause || "–")));
      }
    }
  }
  return [
    el("div.crumbs", {}, link("#/", "runs"), " / ", run.id),
    el("section", {}, el("h2", {}, run.id, " ", badge(run.state)),
      el("p.muted", {}, `${run.name} · submitted ${when(run.created_ms)}${run.finished_ms ? " · finished " + when(run.finished_ms) : ""}`),
      bar(frac, `${run.jobs_succeeded}/${run.jobs_total} jobs · ${(frac * 100).toFixed(0)}%`)),
    el("section", {}, el("h2", {}, "Jobs"), el("div.dagwrap", {}, dagView(run))),
    evals.length ? el("section", {}, el("h2", {}, "Eval results"),
      table(["Eval", "State", ...EVAL_COLUMNS.map(([, h]) => h), "Samples"], evalRows, "evals")) : null,
    el("section", {}, el("h2", {}, "Failures"), table(["Attempt", "Ended", "Workers", "At", "Cause"], failures)),
  ];
}

const valuesText = (v) => (v && typeof v === "object" ? Object.entries(v).map(([k, x]) => `${k}=${fmt(x)}`).join(", ") : fmt(v));

async function sweepView(sweepId) {
  const { sweep } = await api("sweeps/" + enc(sweepId));
  const obj = sweep.objective || {};
  const metric = obj.metric || "";
  const points = sweep.point_rows || [];
  const rows = points.map((p) => el("tr" + (p.best ? ".best" : ""), { "data-point": p.number },
    el("td.num", {}, p.number), el("td", {}, valuesText(p.values)),
    el("td", {}, link("#/run/" + enc(p.run), p.run)), el("td", {}, badge(p.state)),
    el("td.wide", {}, bar(p.progress, `${(100 * (p.progress || 0)).toFixed(0)}%`)),
    el("td.num", {}, fmt((p.final || {})[metric])),
    el("td", {}, p.stopped_at_rung != null ? `stopped at step ${p.stopped_at_rung}` : p.best ? "best" : "")));
  const groupRows = (sweep.grouped || []).filter((g) => g.points.length > 1).map((g) => {
    const s = (g.final || {})[metric];
    return el("tr", {}, el("td", {}, valuesText(g.values)), el("td", {}, g.points.join(", ")),
      el("td.num", {}, s ? `${fmt(s.mean)} ± ${fmt(s.std)} (n=${s.n})` : "–"));
  });
  return [
    el("div.crumbs", {}, link("#/", "runs"), " / sweep ", sweep.id),
    el("section", {}, el("h2", {}, sweep.name, " ", badge(sweep.state)),
      el("p.muted", {}, `${sweep.id} · ${sweep.points} points over ${(sweep.keys || []).join(", ")}` +
        (metric ? ` · objective ${obj.job}.${metric} (${obj.mode || "min"})` : "") +
        (sweep.early_stop ? ` · halving at steps ${sweep.early_stop.rungs.join(", ")}, keeping ${sweep.early_stop.keep}` : ""))),
    metric ? el("section", {}, el("h2", {}, `${metric} by ${(sweep.keys || [])[0] || "point"}`), objectiveChart(points, (sweep.keys || [])[0], metric)) : null,
    el("section", {}, el("h2", {}, "Points"), table(["#", "Values", "Run", "State", "Progress", metric || "objective", ""], rows, "points")),
    groupRows.length ? el("section", {}, el("h2", {}, "Over seeds"), table(["Values", "Points", metric + " mean ± std"], groupRows)) : null,
  ];
}

// The objective of finished points against the first swept key (numeric keys only; else by point).
function objectiveChart(points, key, metric) {
  const xy = points.map((p) => {
    const v = p.values && typeof p.values === "object" ? p.values[key] : undefined;
    return [typeof v === "number" ? v : p.number, (p.final || {})[metric]];
  }).filter(([, y]) => typeof y === "number").sort((a, b) => a[0] - b[0]);
  if (!xy.length) return el("p.muted", {}, "no finished point yet");
  const holder = el("div.chart", { "data-key": "objective" });
  charts.get("objective")?.destroy();
  charts.set("objective", new uPlot({ width: 520, height: 240, legend: { show: false }, scales: { x: { time: false } },
    axes: [{ label: key || "point" }, { label: metric }],
    series: [{}, { label: metric, stroke: "#3b6fd8", width: 1.5, points: { show: true, size: 7 } }] },
  [xy.map(([x]) => x), xy.map(([, y]) => y)], holder));
  return holder;
}

const charts = new Map();  // key -> uPlot, kept across refreshes of the same job page

function curves(rows) {
  const byKey = new Map();
  for (const r of rows) {
    if (!byKey.has(r.key)) byKey.set(r.key, [[], []]);
    const [xs, ys] = byKey.get(r.key);
    xs.push(r.step);
    ys.push(r.value);
  }
  const grid = el("div.charts");
  const keys = [...byKey.keys()].sort();
  for (const k of [...charts.keys()]) if (!byKey.has(k)) { charts.get(k).destroy(); charts.delete(k); }
  for (const key of keys) {
    const data = byKey.get(key);
    let chart = charts.get(key);
    const holder = el("div.chart", { "data-key": key });
    if (chart) {
      chart.setData(data);
      holder.append(chart.root);
    } else {
      chart = new uPlot({ width: 380, height: 210, title: key, legend: { show: false },
        scales: { x: { time: false } }, axes: [{ label: "step" }, {}],
        series: [{}, { label: key, stroke: "#3b6fd8", width: 1.5, points: { show: data[0].length < 40 } }] }, data, holder);
      charts.set(key, chart);
    }
    grid.append(holder);
  }
  return keys.length ? grid : el("p.muted", {}, "no metrics yet");
}

// The scores that evals of this job's checkpoints wrote into them, as curves over the step.
function checkpointEvalRows(ckpts, jobName) {
  const rows = [];
  for (const c of ckpts.checkpoints) {
    if (c.job !== jobName) continue;
    for (const key of ["fid", "class_accuracy", "teacher_nll"]) {
      if (typeof (c.metrics || {})[key] === "number") rows.push({ key: key + " (checkpoint evals)", step: c.step, value: c.metrics[key] });
    }
  }
  return rows.sort((a, b) => a.step - b.step);
}

async function jobView(runId, jobName) {
  const [jobs, series, ckpts] = await Promise.all([api("runs/" + enc(runId) + "/jobs"),
    api(`runs/${enc(runId)}/metrics?job=${enc(jobName)}`), api("runs/" + enc(runId) + "/checkpoints")]);
  const job = jobs.jobs.find((j) => j.name === jobName);
  if (!job) throw new Error(`no job '${jobName}' in run '${runId}'`);
  const attemptRows = job.attempts_detail.map((a) => el("tr", {}, el("td", {}, a.number), el("td", {}, badge(a.state)),
    el("td", {}, a.workers.join(", ")), el("td.muted", {}, when(a.started_ms)), el("td.muted", {}, when(a.finished_ms)),
    el("td.cause", {}, a.cause || "–")));
  const ckptRows = ckpts.checkpoints.filter((c) => c.job === jobName).map((c) => el("tr", {}, el("td.num", {}, c.step),
    el("td", {}, badge(c.state)), el("td.num", {}, (c.bytes / 1e6).toFixed(1) + " MB"),
    el("td.muted", {}, Object.entries(c.metrics || {}).map(([k, v]) => `${k}=${fmt(v)}`).join(" "))));
  const frac = job.state === "succeeded" ? 1 : job.total > 0 ? job.step / job.total : 0;
  return [
    el("div.crumbs", {}, link("#/", "runs"), " / ", link("#/run/" + enc(runId), runId), " / ", jobName),
    el("section", {}, el("h2", {}, jobName, " ", badge(job.state)),
      el("p.muted", {}, `${job.type} · ${job.attempts} attempt(s)${job.failure ? " · " + job.failure : ""}`),
      bar(frac, `step ${job.step}/${job.total}`),
      job.type === "eval" && job.state === "succeeded" ? el("img.grid.big", { src: `api/v1/runs/${enc(runId)}/jobs/${enc(jobName)}/samples.png${token ? "?token=" + enc(token) : ""}`, alt: "samples" }) : null),
    el("section", {}, el("h2", {}, "Metrics"), curves([...series.metrics, ...checkpointEvalRows(ckpts, jobName)])),
    el("section", {}, el("h2", {}, "Attempts"), table(["#", "State", "Workers", "Started", "Finished", "Cause"], attemptRows)),
    el("section", {}, el("h2", {}, "Checkpoints"), table(["Step", "State", "Size", "Metrics"], ckptRows)),
  ];
}

// ---- the loop ----

let refreshing = false;
let shownRoute = "";

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  const route = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const key = route.join("/");
  if (key !== shownRoute) {
    for (const c of charts.values()) c.destroy();
    charts.clear();
  }
  try {
    const status = await api("runs");  // the header's counters, and the home page's runs
    let view;
    if (route[0] === "run" && route[2] === "job") view = await jobView(route[1], route[3]);
    else if (route[0] === "run") view = await runView(route[1]);
    else if (route[0] === "sweep") view = await sweepView(route[1]);
    else view = await homeView(status);
    document.getElementById("main").replaceChildren(...[view].flat().filter(Boolean));
    shownRoute = key;
    const c = status.coordinator, w = c.workers;
    document.getElementById("coordinator").textContent =
      `${c.endpoint} · up ${(c.uptime_ms / 1000).toFixed(0)} s · workers ${w.alive} alive, ${w.suspect} suspect, ${w.lost} lost · ${c.authentication}`;
    document.getElementById("live").className = "live ok";
  } catch (e) {
    document.getElementById("main").replaceChildren(el("p.error", {}, "Cannot load: " + e.message));
    document.getElementById("live").className = "live down";
  } finally {
    refreshing = false;
  }
}

window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
