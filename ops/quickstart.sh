#!/usr/bin/env bash
# The README's first command: installs the Debian packages, builds dd2, starts a local
# coordinator and two workers (home: ./.dd2, or $DD2_HOME), and runs the embedded default:
# the quick DD2 pipeline on Fashion-MNIST (examples/fmnist-quick.yaml, CPU). Prints the results
# table (teacher vs set prediction) and the sample-grid paths.
# The cluster keeps running afterwards; stop it with `build/bin/dd2ctl down`.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh
ops/build.sh
DD2CTL=${DD2_BUILD:-build}/bin/dd2ctl
"$DD2CTL" up --workers 2
out=$("$DD2CTL" submit examples/fmnist-quick.yaml --wait) || { echo "$out"; exit 1; }
echo "$out"
run=$(echo "$out" | sed -n 's/^submitted run \([^ ]*\).*/\1/p' | head -n1)
echo
"$DD2CTL" results "$run"
echo
echo "Done. Dashboard: $("$DD2CTL" dashboard)"
echo "Try: $DD2CTL status $run   |   $DD2CTL logs $run/teacher   |   $DD2CTL down"
