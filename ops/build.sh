#!/usr/bin/env bash
# Configures and builds dd2 into ${DD2_BUILD:-build} (Ninja, Release, ccache when present).
# Extra arguments are passed to `cmake --build` (e.g. --target dd2ctl).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${DD2_BUILD:-build}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}"
fi
cmake --build "$BUILD" -j "$(nproc)" "$@"
