#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine (packages, configure, build) and runs the whole
# test suite, then the fuzz targets for 15 s each (ops/fuzz.sh: clang, ASan, UBSan). Exits
# non-zero on any failure. Extra arguments go to ctest (e.g. -L unit) and skip the fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh
ops/build.sh
(cd "${DD2_BUILD:-build}" && ctest --output-on-failure -j "$(nproc)" "$@")
if [ $# -eq 0 ]; then ops/fuzz.sh 15; fi
