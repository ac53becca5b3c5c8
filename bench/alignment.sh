#!/usr/bin/env bash
# Performance alignment versus none (paper Tab. 9) on the same budget of generator updates,
# starting from a finished `pipeline: dd2` run's tokenizer, teacher, feature net and tune output:
#   none:  distill N updates (K = 4)
#   align: distill 2N/3 (K = 4) -> align 100 guidance updates -> distill N/3 (K = 2),
#          continuing Adam moments and the EMA step count (carry_state)
# then a DD2 one-step eval of each (FID, class accuracy, ...), as one table.
#   bench/alignment.sh --run RUN [--steps N] [--samples S]     (N default 600, S default 1000)
# Uses $DD2_HOME (default ./.dd2) for the run's artifacts; writes only to a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${DD2_BUILD:-build}/bin/dd2-train
HOME_DIR=${DD2_HOME:-.dd2}
run=""
steps=600
samples=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --run) run=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    *) echo "usage: bench/alignment.sh --run RUN [--steps N] [--samples S]" >&2; exit 2 ;;
  esac
done
[ -n "$run" ] || { echo "bench/alignment.sh: --run RUN is required" >&2; exit 2; }
src="$HOME_DIR/artifacts/$run"
for job in tokenizer teacher featurenet tune; do
  [ -f "$src/$job/final.pt" ] || { echo "bench/alignment.sh: $src/$job/final.pt is missing" >&2; exit 3; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
job() {  # type name params
  "$TRAIN" job-run --type "$1" --params "$3" --attempt-id "$2#1" --run-dir "$tmp/run" --job-name "$2" >"$tmp/$2.log" 2>&1 ||
    { echo "bench/alignment.sh: job $2 failed:"; tail -n 20 "$tmp/$2.log"; exit 1; }
}
mkdir -p "$tmp/run"
for j in tokenizer teacher featurenet tune; do cp -r "$src/$j" "$tmp/run/$j"; done
common='"batch": 32, "m": 2, "lr": 3e-4, "guidance_lr": 3e-4, "checkpoint_every": 0'
first=$(( steps * 2 / 3 ))
start=$(date +%s)
# The two schedules run side by side, half the cores each.
threads=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
(
  export OMP_NUM_THREADS=$threads
  job distill none "{\"steps\": $steps, \"k\": 4, \"init\": \"tune\", $common}"
  job eval eval-none "{\"sampler\": \"dd2\", \"generator\": \"none\", \"samples\": $samples}"
) &
arm=$!
(
  export OMP_NUM_THREADS=$threads
  job distill first "{\"steps\": $first, \"k\": 4, \"init\": \"tune\", $common}"
  job align aligned '{"steps": 100, "init": "first", "batch": 32, "m": 2, "guidance_lr": 3e-4, "checkpoint_every": 0}'
  job distill second "{\"steps\": $(( steps - first )), \"k\": 2, \"init\": \"aligned\", $common}"
  job eval eval-second "{\"sampler\": \"dd2\", \"generator\": \"second\", \"samples\": $samples}"
)
wait $arm
metric() { python3 -c "import json,sys; print('%.4g' % json.load(open(sys.argv[1]))[sys.argv[2]])" "$tmp/run/eval-$1/metrics.json" "$2"; }
echo "alignment vs none, $steps generator updates each, from $run's tune output; $samples samples; $(( $(date +%s) - start )) s"
echo
echo "| schedule | FID | IS | precision | recall | class acc. |"
echo "|---|---|---|---|---|---|"
for g in none second; do
  name=$([ "$g" = none ] && echo "distill $steps (K=4)" || echo "distill $first (K=4) -> align 100 -> distill $(( steps - first )) (K=2)")
  echo "| $name | $(metric $g fid) | $(metric $g inception_score) | $(metric $g precision) | $(metric $g recall) | $(metric $g class_accuracy) |"
done
