#!/usr/bin/env bash
# Where the time goes: builds profile_bench and prints its tables (the machine's OpenBLAS kernel
# and matmul GFLOP/s; one distillation update phase by phase with its counted matmul FLOPs and
# achieved GFLOP/s; batch-1 sampling of the teacher and DD2 one-step side by side) at each
# thread count. Default sizes: examples/fmnist.yaml's quality configuration.
#   bench/profile.sh                      # 1 and 2 intra-op threads
#   bench/profile.sh --threads 1 [ARGS]   # one thread count; ARGS go to profile_bench
#                                         # (--head-width 64: the quick configuration's head)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="1 2"
if [ "${1:-}" = "--threads" ]; then threads=$2; shift 2; fi
ops/build.sh --target profile_bench >/dev/null
for t in $threads; do
  "${DD2_BUILD:-build}/bin/profile_bench" --threads "$t" "$@"
  echo
done
