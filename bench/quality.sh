#!/usr/bin/env bash
# Sample quality and speed of every sampler of a `pipeline: dd2` run, as one table:
# FID, teacher NLL, IS, precision, recall, class accuracy, sampling steps, latency at batch 1 and 256.
#   bench/quality.sh                      # run examples/fmnist.yaml (the quality configuration) on a
#                                         # local cluster of 2 workers, then report
#   bench/quality.sh --yaml FILE          # another pipeline file (examples/fmnist-quick.yaml: quick)
#   bench/quality.sh --run RUN            # report a finished run only
# Uses $DD2_HOME (default ./.dd2) and build/bin/dd2ctl.
set -euo pipefail
cd "$(dirname "$0")/.."
DD2CTL=${DD2_BUILD:-build}/bin/dd2ctl
yaml=examples/fmnist.yaml
run=""
while [ $# -gt 0 ]; do
  case "$1" in
    --yaml) yaml=$2; shift 2 ;;
    --run) run=$2; shift 2 ;;
    *) echo "usage: bench/quality.sh [--yaml FILE | --run RUN]" >&2; exit 2 ;;
  esac
done
if [ -z "$run" ]; then
  ops/build.sh >/dev/null
  "$DD2CTL" up --workers 2 >/dev/null
  start=$(date +%s)
  out=$("$DD2CTL" submit "$yaml" --wait) || { echo "$out"; exit 1; }
  run=$(echo "$out" | sed -n 's/^submitted run \([^ ]*\).*/\1/p' | head -n1)
  echo "run $run finished in $(( $(date +%s) - start )) s"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$DD2CTL" status "$run" --json > "$tmp/status.json"
"$DD2CTL" results "$run" --json > "$tmp/results.json"
python3 - "$tmp/results.json" <<'PY'
import json, sys
evals = {e["job"]: e for e in json.load(open(sys.argv[1]))["evals"]}
tokens = 49
rows = [("teacher (AR, KV cache)", "eval-teacher", str(tokens)),
        ("stage-1 model (Euler)", "eval-stage1", None),
        ("DD2 one-step", "eval-dd2", "1"),
        ("DD2 multi-step k=2", "eval-dd2-k2", "2"),
        ("DD2 multi-step k=4", "eval-dd2-k4", "4"),
        ("set prediction", "eval-set-prediction", "1")]
print("| sampler | FID | teacher NLL | IS | precision | recall | class acc. | steps | ms/img @1 | ms/img @256 | speed-up @1 | token speed-up @1 |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for label, job, steps in rows:
    e = evals.get(job)
    if e is None or e["state"] != "succeeded":
        state = e["state"] if e else "no such job"
        print(f"| {label} | no result ({state}) |")
        continue
    m = e["metrics"]
    if steps is None:
        steps = f"{tokens} x Euler"
    def f(key, digits=3):
        return f"{m[key]:.{digits}f}" if key in m else "-"
    print(f"| {label} | {f('fid', 2)} | {f('teacher_nll', 2)} | {f('inception_score', 2)} | {f('precision')} | {f('recall')} | "
          f"{f('class_accuracy')} | {steps} | {f('latency_ms_b1', 2)} | {f('latency_ms_b256', 3)} | "
          f"{f('speedup_vs_teacher_b1', 1)} | {f('token_speedup_vs_teacher_b1', 1)} |")
PY
