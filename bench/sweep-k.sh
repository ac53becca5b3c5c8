#!/usr/bin/env bash
# The K sweep: runs examples/sweep-k.yaml (or --yaml FILE) on a local cluster of 2 one-thread
# workers and prints, per point and as mean ± std over seeds, the one-step generator's FID, precision and
# recall, distill's final guidance loss, its wall time, and FID at equal generator updates (the
# committed checkpoints' evals) and at equal wall time (at each K's mean distill time, each
# point's newest eval made by then, the final one counting at the distill's end). Then writes
# plots and report.md with dd2ctl report.
#   bench/sweep-k.sh [--yaml FILE] [--out DIR]    # submit, wait, report
#   bench/sweep-k.sh --sweep SWEEP [--out DIR]    # report a sweep already run
# Uses $DD2_HOME (default ./.dd2) and build/bin/dd2ctl.
set -euo pipefail
cd "$(dirname "$0")/.."
DD2CTL=${DD2_BUILD:-build}/bin/dd2ctl
yaml=examples/sweep-k.yaml
sweep=""
out=sweep-k-report
while [ $# -gt 0 ]; do
  case "$1" in
    --yaml) yaml=$2; shift 2 ;;
    --sweep) sweep=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bench/sweep-k.sh [--yaml FILE | --sweep SWEEP] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$sweep" ]; then
  ops/build.sh >/dev/null
  "$DD2CTL" up --workers 2 --threads 1 >/dev/null  # two points at once, one core each
  start=$(date +%s)
  # --wait --json ends with the finished sweep's status document; the fixed id makes a rerun of
  # this script reattach to the same sweep instead of adding one.
  sweep=$( ("$DD2CTL" submit "$yaml" --id "bench-$(basename "$yaml")" --wait --json || true) |
          python3 -c 'import json,sys; print(json.load(sys.stdin)["sweep"]["id"])')
  echo "sweep $sweep finished in $(( $(date +%s) - start )) s"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$DD2CTL" sweep status "$sweep" --json > "$tmp/sweep.json"
for run in $(python3 -c 'import json,sys; [print(p["run"]) for p in json.load(open(sys.argv[1]))["sweep"]["point_rows"]]' "$tmp/sweep.json"); do
  "$DD2CTL" jobs "$run" --json > "$tmp/jobs-$run.json"
  "$DD2CTL" ckpt ls "$run" --json > "$tmp/ckpt-$run.json"
done
python3 - "$tmp" <<'PY'
import json, math, os, sys
tmp = sys.argv[1]
sweep = json.load(open(os.path.join(tmp, "sweep.json")))["sweep"]
rows = []
for p in sweep["point_rows"]:
    run = p["run"]
    jobs = {j["name"]: j for j in json.load(open(os.path.join(tmp, f"jobs-{run}.json")))["jobs"]}
    d = jobs.get("distill", {})
    att = [a for a in d.get("attempts_detail", []) if a["state"] == "succeeded"]
    started = att[-1]["started_ms"] if att else None
    wall = (att[-1]["finished_ms"] - started) / 1000 if att else None
    ckpts = [c for c in json.load(open(os.path.join(tmp, f"ckpt-{run}.json")))["checkpoints"] if c["job"] == "distill"]
    evals = sorted((c["step"], c["created_ms"], c["metrics"].get("fid")) for c in ckpts if "fid" in c["metrics"])
    final = p["final"]
    rows.append(dict(k=p["values"].get("distill.k"), seed=p["values"].get("seed", 0), state=p["state"],
                     fid=final.get("fid"), precision=final.get("precision"), recall=final.get("recall"),
                     gloss=d.get("metrics", {}).get("guidance_loss"), wall=wall, started=started, evals=evals))
def f(x, d=3):
    return "-" if x is None else f"{x:.{d}f}"
# Equal wall time: each point's FID at a budget of distill seconds is its newest eval made within
# the budget (the checkpoint evals at their commit time, the final eval at the distill's end).
# One budget per K: that K's mean distill time.
for r in rows:
    r["timeline"] = [((t - r["started"]) / 1000, fid) for (_, t, fid) in r["evals"] if r["started"]]
    if r["wall"] is not None and r["fid"] is not None:
        r["timeline"].append((r["wall"], r["fid"]))
budgets = []
for k in sorted({r["k"] for r in rows}):
    walls = [r["wall"] for r in rows if r["k"] == k and r["wall"]]
    if walls:
        budgets.append(sum(walls) / len(walls))
def at_budget(r, b):
    within = [fid for (t, fid) in sorted(r["timeline"]) if t <= b + 0.5]
    return within[-1] if within else None
steps = sorted({s for r in rows for (s, _, _) in r["evals"]})
print("| K | seed | state | FID | precision | recall | guidance loss | distill s | " +
      " | ".join(f"FID @{s} updates" for s in steps) + " | " + " | ".join(f"FID @{b:.0f} s" for b in budgets) + " |")
print("|---|---|---|---|---|---|---|---|" + "---|" * (len(steps) + len(budgets)))
for r in rows:
    at = {s: fid for (s, _, fid) in r["evals"]}
    print(f"| {r['k']} | {r['seed']} | {r['state']} | {f(r['fid'], 2)} | {f(r['precision'])} | {f(r['recall'])} | "
          f"{f(r['gloss'], 4)} | {f(r['wall'], 0)} | " + " | ".join(f(at.get(s), 2) for s in steps) + " | " +
          " | ".join(f(at_budget(r, b), 2) for b in budgets) + " |")
print()
print("| K | n | FID | precision | recall | guidance loss | distill s | " +
      " | ".join(f"FID @{b:.0f} s" for b in budgets) + " |")
print("|---|---|---|---|---|---|---|" + "---|" * len(budgets))
def ms(xs, d):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return f"{m:.{d}f} ± {s:.{d}f}"
for k in sorted({r["k"] for r in rows}):
    g = [r for r in rows if r["k"] == k and r["state"] == "succeeded"]
    print(f"| {k} | {len(g)} | {ms([r['fid'] for r in g], 2)} | {ms([r['precision'] for r in g], 3)} | "
          f"{ms([r['recall'] for r in g], 3)} | {ms([r['gloss'] for r in g], 4)} | {ms([r['wall'] for r in g], 0)} | " +
          " | ".join(ms([at_budget(r, b) for r in g], 2) for b in budgets) + " |")
PY
"$DD2CTL" report "$sweep" --out "$out"
