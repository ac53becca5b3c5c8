#!/usr/bin/env bash
# Measures dd2-coordinator with simulated workers at 100 and 1,000 workers and prints a table.
# Usage: bench/coordinator.sh [build-dir]   (builds what it needs; ops/install-deps.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
[ -f "$BUILD/build.ninja" ] || cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" --target coordinator_bench dd2-coordinator >/dev/null
echo "coordinator_bench on $(nproc) cores, $(date -u +%F), SQLite WAL synchronous=NORMAL"
echo
echo "| workers | registered | heartbeats/s | hb p50 ms | hb p99 ms | jobs | transitions/s | finish p50 ms | finish p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in 100 1000; do
  "$BUILD/bin/coordinator_bench" --workers "$n" --jobs 2000 --seconds 5 --bin-dir "$BUILD/bin"
done
