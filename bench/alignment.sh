#!/usr/bin/env bash
# Performance alignment versus none (paper Tab. 9) on the same budget of generator updates,
# starting from a finished `pipeline: dd2` run's tokenizer, teacher, feature net and tune output:
#   none:  distill N updates (K = 4)
#   align: distill 2N/3 (K = 4) -> align 100 guidance updates -> distill N/3 (K = 2),
#          continuing Adam moments and the EMA step count (carry_state)
# or, with --from JOB (a finished distill job of the run: align after it has trained):
#   none:  distill N more updates (K = 4) from JOB
#   align: align 100 from JOB -> distill N (K = 2)
# then a DD2 one-step eval of each (FID, class accuracy, ...), as one table.
#   bench/alignment.sh --run RUN [--from JOB] [--steps N] [--samples S] [--k-after K]
#   (N 600, S 1000; K: guidance updates per generator update after the alignment, default 2)
# Uses $DD2_HOME (default ./.dd2) for the run's artifacts; writes only to a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${DD2_BUILD:-build}/bin/dd2-train
HOME_DIR=${DD2_HOME:-.dd2}
run=""
from=""
k_after=2
steps=600
samples=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --run) run=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --k-after) k_after=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    *) echo "usage: bench/alignment.sh --run RUN [--from JOB] [--steps N] [--samples S] [--k-after K]" >&2; exit 2 ;;
  esac
done
[ -n "$run" ] || { echo "bench/alignment.sh: --run RUN is required" >&2; exit 2; }
src="$HOME_DIR/artifacts/$run"
for job in tokenizer teacher featurenet tune $from; do
  [ -f "$src/$job/final.pt" ] || { echo "bench/alignment.sh: $src/$job/final.pt is missing" >&2; exit 3; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
job() {  # type name params
  "$TRAIN" job-run --type "$1" --params "$3" --attempt-id "$2#1" --run-dir "$tmp/run" --job-name "$2" >"$tmp/$2.log" 2>&1 ||
    { echo "bench/alignment.sh: job $2 failed:"; tail -n 20 "$tmp/$2.log"; exit 1; }
}
mkdir -p "$tmp/run"
for j in tokenizer teacher featurenet tune $from; do cp -r "$src/$j" "$tmp/run/$j"; done
common='"batch": 32, "m": 2, "lr": 3e-4, "guidance_lr": 3e-4, "checkpoint_every": 0'
first=$(( steps * 2 / 3 ))
init=tune
if [ -n "$from" ]; then first=0; init=$from; fi
start=$(date +%s)
# The two schedules run side by side, half the cores each.
threads=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
(
  export OMP_NUM_THREADS=$threads
  job distill none "{\"steps\": $steps, \"k\": 4, \"init\": \"$init\", $common}"
  job eval eval-none "{\"sampler\": \"dd2\", \"generator\": \"none\", \"samples\": $samples}"
) &
arm=$!
(
  export OMP_NUM_THREADS=$threads
  before=$init
  if [ "$first" -gt 0 ]; then
    job distill first "{\"steps\": $first, \"k\": 4, \"init\": \"$init\", $common}"
    before=first
  fi
  job align aligned "{\"steps\": 100, \"init\": \"$before\", \"batch\": 32, \"m\": 2, \"guidance_lr\": 3e-4, \"checkpoint_every\": 0}"
  job distill second "{\"steps\": $(( steps - first )), \"k\": $k_after, \"init\": \"aligned\", $common}"
  job eval eval-second "{\"sampler\": \"dd2\", \"generator\": \"second\", \"samples\": $samples}"
)
wait $arm
metric() { python3 -c "import json,sys; print('%.4g' % json.load(open(sys.argv[1]))[sys.argv[2]])" "$tmp/run/eval-$1/metrics.json" "$2"; }
echo "alignment vs none, $steps generator updates each, from $run's $init output; $samples samples; $(( $(date +%s) - start )) s"
echo
echo "| schedule | FID | IS | precision | recall | class acc. |"
echo "|---|---|---|---|---|---|"
for g in none second; do
  if [ "$g" = none ]; then
    name="distill $steps (K=4)"
  elif [ "$first" -gt 0 ]; then
    name="distill $first (K=4) -> align 100 -> distill $(( steps - first )) (K=$k_after)"
  else
    name="align 100 -> distill $steps (K=$k_after)"
  fi
  echo "| $name | $(metric $g fid) | $(metric $g inception_score) | $(metric $g precision) | $(metric $g recall) | $(metric $g class_accuracy) |"
done
