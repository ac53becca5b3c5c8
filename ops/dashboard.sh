#!/usr/bin/env bash
# Builds the dashboard (dashboard/: uPlot, bundled by esbuild) into OUT (default
# build/bin/dashboard, where dd2-coordinator looks for it). Installs the npm packages of
# dashboard/package-lock.json with `npm ci` when they are missing or older than the lock file.
#   ops/dashboard.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../dashboard"
out=${1:-../build/bin/dashboard}
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node build.mjs "$out"
