#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, ASan and UBSan in ${DD2_FUZZ_BUILD:-build-fuzz}
# and runs each for SECONDS (default 15) from its seed corpus (tests/fuzz/corpus/<target>: seeds
# and inputs that once failed; run_yaml also reads examples/ and tests/data, frames the message
# sequences frames_seeds writes). Fails on any crash, leak,
# sanitizer report or timeout, keeping the input that caused it under <build>/findings/.
# Prints executions per second and coverage (libFuzzer's cov: edges) per target.
#   ops/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
BUILD=${DD2_FUZZ_BUILD:-build-fuzz}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DDD2_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "${launcher[@]}" >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc)" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/frames-seeds" tests/fuzz/corpus/{envelope,frames,run_yaml,files,http}
"$BUILD/bin/frames_seeds" "$work/frames-seeds"  # real message sequences, written by this build
mkdir -p "$BUILD/findings"
printf '| target | seconds | runs | exec/s | coverage (edges) | corpus | findings |\n|---|---|---|---|---|---|---|\n'
status=0
for t in envelope frames run_yaml files http; do
  seeds=("tests/fuzz/corpus/$t")
  [ "$t" = run_yaml ] && seeds+=(examples tests/data/bad_run_yaml tests/data/bad_sweep_yaml)
  [ "$t" = frames ] && seeds+=("$work/frames-seeds")
  mkdir -p "$work/$t"
  log="$work/$t.log"
  if "$BUILD/bin/${t}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$BUILD/findings/$t-" "$work/$t" "${seeds[@]}" >"$log" 2>&1; then
    found=0
  else
    found=1
    status=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
  corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$seconds" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${corpus:-?}" "$found"
  if [ "$found" -ne 0 ]; then
    echo "ops/fuzz.sh: $t found a problem; its input is under $BUILD/findings/. The log ends with:"
    tail -n 40 "$log"
  fi
done
exit "$status"
