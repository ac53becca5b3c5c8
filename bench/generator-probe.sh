#!/usr/bin/env bash
# What the backbone of a DD2 run's stage-1 model and generator carries, read with noise prefixes:
# how much each position's features change with the class (four bands of positions, relative to
# their spread over the noise), how well they give the row and the column of the token the
# position produces (held-out R² of a least-squares fit), and how much the run's teacher (CFG 2)
# changes with the class on the model's own one-step samples. One table, two rows per run.
#   bench/generator-probe.sh HOME/artifacts/RUN [more runs]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/generator-probe.sh ARTIFACTS/RUN [...]" >&2; exit 2; }
ops/build.sh --target generator_probe >/dev/null
echo "| run | model | class change by position band | row R² | column R² | teacher class KL on its samples |"
echo "|---|---|---|---|---|---|"
for run in "$@"; do "${DD2_BUILD:-build}/bin/generator_probe" --run "$run"; done
