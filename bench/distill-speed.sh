#!/usr/bin/env bash
# Distillation speed against a base commit, on this machine, in one run: builds the base's
# dd2-train (a git worktree under build/, cached; default 70752a9, the code before the speed
# work) and this tree's, then runs the same `distill` job (the quality configuration: K = 4,
# m = 2, batch 32, lr 3e-4) with each, alternating, and prints generator updates per second.
#   bench/distill-speed.sh --from ARTIFACTS_DIR   # a run's artifacts with tokenizer, teacher
#                                                 # and tune (e.g. $DD2_HOME/artifacts/fmnist-quick-1)
#   options: --base COMMIT  --steps N (default 40)  --rounds N (default 2)  --threads "1 2"
# Nothing is written under ARTIFACTS_DIR: the jobs run in a temporary run folder whose
# tokenizer, teacher and tune are links to it.
set -euo pipefail
cd "$(dirname "$0")/.."
base=70752a9
from=""
steps=40
rounds=2
threads="1 2"
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "usage: bench/distill-speed.sh --from ARTIFACTS_DIR [--base COMMIT] [--steps N] [--rounds N] [--threads \"1 2\"]" >&2; exit 2 ;;
  esac
done
for job in tokenizer teacher tune; do
  [ -f "$from/$job/final.pt" ] || { echo "bench/distill-speed.sh: --from $from has no $job/final.pt (give a run's artifacts folder after its tune job)" >&2; exit 2; }
done
from=$(cd "$from" && pwd)
ops/build.sh --target dd2-train >/dev/null
base_dir=build/base-$base
if [ ! -x "$base_dir/build/bin/dd2-train" ]; then
  echo "building $base's dd2-train in $base_dir (once; a cold LibTorch build takes minutes)" >&2
  [ -d "$base_dir/src" ] || git worktree add --detach "$base_dir/src" "$base" >/dev/null
  DD2_BUILD="$PWD/$base_dir/build" "$base_dir/src/ops/build.sh" --target dd2-train >"$base_dir/build.log" 2>&1 ||
    { tail -20 "$base_dir/build.log"; exit 1; }
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for job in tokenizer teacher tune; do ln -s "$from/$job" "$tmp/$job"; done
params="{\"steps\":$steps,\"k\":4,\"m\":2,\"batch\":32,\"lr\":3e-4,\"guidance_lr\":3e-4,\"checkpoint_every\":0,\"cfg\":2.0,\"seed\":1}"
# Updates per second of one distill job: the rate its last progress line reports.
rate() {  # BINARY THREADS
  rm -rf "$tmp/bench-distill"
  OMP_NUM_THREADS=$2 "$1" job-run --type distill --params "$params" --attempt-id bench --work-dir "$tmp" \
    --run-dir "$tmp" --job-name bench-distill 2>&1 | sed -n 's/.*steps_per_s=\([0-9.]*\).*/\1/p' | tail -n1
}
echo "| code | threads | generator updates/s (each round) | mean | vs $base at 1 thread |"
echo "|---|---|---|---|---|"
declare -A mean
for t in $threads; do
  for code in "$base" "this tree"; do
    bin=build/bin/dd2-train
    [ "$code" = "$base" ] && bin=$base_dir/build/bin/dd2-train
    rates=()
    for _ in $(seq "$rounds"); do rates+=("$(rate "$bin" "$t")"); done
    m=$(printf '%s\n' "${rates[@]}" | awk '{s += $1} END {printf "%.3f", s / NR}')
    mean["$code/$t"]=$m
    ref=${mean["$base/1"]:-$m}
    echo "| $code | $t | ${rates[*]} | $m | $(awk -v a="$m" -v b="$ref" 'BEGIN {printf "%.2fx", a / b}') |"
  done
done
