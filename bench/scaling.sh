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
rm -rf "$tmp/run/distill"
run distill distill "$(params "$batch")" >"$tmp/one.log"
rm -rf "$tmp/run/distill"
port=$(( 30000 + RANDOM % 20000 ))
run distill distill "$(params "$batch")" --rank 0 --world-size 2 --rendezvous "tcp://127.0.0.1:$port" >"$tmp/two.log" &
r0=$!
run distill distill "$(params "$batch")" --rank 1 --world-size 2 --rendezvous "tcp://127.0.0.1:$port" >"$tmp/two1.log"
wait $r0
one=$(last_metric "$tmp/one.log" steps_per_s)
two=$(last_metric "$tmp/two.log" steps_per_s)
ar=$(last_metric "$tmp/two.log" allreduce_ms_per_step)
echo "distill, per-rank batch $batch, K = 5, m = 2, $steps generator steps; $(nproc) cores"
echo
echo "| ranks | global batch | generator steps/s | sequences/s | all-reduce ms/step |"
echo "|---|---|---|---|---|"
awk -v b="$batch" -v s1="$one" -v s2="$two" -v ar="$ar" 'BEGIN {
  printf "| 1 | %d | %.3f | %.1f | - |\n", b, s1, s1 * b * 6;
  printf "| 2 | %d | %.3f | %.1f | %.1f |\n", 2 * b, s2, s2 * 2 * b * 6, ar;
}'
echo
echo "(sequences/s counts the K guidance updates and the generator update of each step: 6 batches)"
