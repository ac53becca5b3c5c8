#!/usr/bin/env bash
# Data-parallel scaling of a distill job on this machine: steps per second at 1 and 2 ranks
# (c10d Gloo on 127.0.0.1) with the gradient all-reduce time per step, as one table.
# The models have the quick configuration's sizes (teacher width 64, 2 layers; head width 128);
# their upstream jobs are trained for a few steps only: speed does not depend on their quality.
#   bench/scaling.sh [--steps N] [--batch B]   # B: the per-rank batch (default 32), K = 5, m = 2
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${DD2_BUILD:-build}/bin/dd2-train
steps=40
batch=32
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    *) echo "usage: bench/scaling.sh [--steps N] [--batch B]" >&2; exit 2 ;;
  esac
done
ops/build.sh >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {  # type job params [extra flags...]
  local type=$1 job=$2 params=$3
  shift 3
  "$TRAIN" job-run --type "$type" --params "$params" --attempt-id "$job#1" --run-dir "$tmp/run" --job-name "$job" "$@"
}
run tokenizer tokenizer '{"steps": 20, "batch": 64, "train_limit": 2000}' >/dev/null
run teacher teacher '{"steps": 20, "batch": 64, "width": 64, "layers": 2, "heads": 4, "train_limit": 2000}' >/dev/null
run tune tune '{"steps": 10, "head_steps": 5, "batch": 32, "pool": 200, "m": 2}' >/dev/null
params() { echo "{\"steps\": $steps, \"k\": 5, \"m\": 2, \"batch\": $1, \"checkpoint_every\": 0}"; }
last_metric() {  # file key
  grep -o "$2=[0-9.e+-]*" "$1" | tail -n1 | cut -d= -f2
}
two_ranks() {  # log threads_per_rank
  rm -rf "$tmp/run/distill"
  local port=$(( 30000 + RANDOM % 20000 ))
  OMP_NUM_THREADS=$2 run distill distill "$(params "$batch")" --rank 0 --world-size 2 --rendezvous "tcp://127.0.0.1:$port" >"$1" &
  local r0=$!
  OMP_NUM_THREADS=$2 run distill distill "$(params "$batch")" --rank 1 --world-size 2 --rendezvous "tcp://127.0.0.1:$port" >/dev/null
  wait $r0
}
cores=$(nproc)
rm -rf "$tmp/run/distill"
OMP_NUM_THREADS=$cores run distill distill "$(params "$batch")" >"$tmp/one.log"
two_ranks "$tmp/two.log" "$cores"
two_ranks "$tmp/two-split.log" $(( cores / 2 > 0 ? cores / 2 : 1 ))
echo "distill, per-rank batch $batch, K = 5, m = 2, $steps generator steps, $cores cores, one machine"
echo "(all-reduce ms/step includes waiting for the slower rank; sequences/s counts the K guidance"
echo " updates and the generator update of each step: 6 batches)"
echo
echo "| ranks | threads per rank | global batch | generator steps/s | sequences/s | all-reduce ms/step |"
echo "|---|---|---|---|---|---|"
row() {  # ranks threads log
  awk -v r="$1" -v t="$2" -v b="$batch" -v s="$(last_metric "$3" steps_per_s)" -v ar="$(last_metric "$3" allreduce_ms_per_step)" \
    'BEGIN { printf "| %d | %d | %d | %.3f | %.1f | %s |\n", r, t, r * b, s, s * r * b * 6, (ar == "" ? "-" : sprintf("%.1f", ar)) }'
}
row 1 "$cores" "$tmp/one.log"
row 2 "$cores" "$tmp/two.log"
row 2 $(( cores / 2 > 0 ? cores / 2 : 1 )) "$tmp/two-split.log"
