#!/usr/bin/env bash
# Peak memory of a LlamaGen-architecture distillation step on the CPU (256 tokens, 16,384 codes,
# K = 4, m = 2, random weights: the upstream jobs take a step), at a few widths, depths and
# batches: the measurements behind the README's LlamaGen-L memory estimate. One thread per job;
# about 20 minutes on 2 cores (each teacher job's final test NLL over 16,384 codes is most of it).
# tcmalloc's aggressive decommit is on, or peak RSS would measure tcmalloc's cache of freed spans.
#   bench/llamagen-memory.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export TCMALLOC_AGGRESSIVE_DECOMMIT=true
T=${1:-build}/bin/dd2-train
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
job() { "$T" job-run --type "$1" --params "$3" --attempt-id "$2#1" --run-dir "$D" --job-name "$2" >"$D/$2.log" 2>&1; }
job tokenizer tok '{"device": "cpu", "steps": 1, "batch": 8, "grid": 16, "codebook_size": 16384, "train_limit": 64, "threads": 1}'
printf '| width | layers | heads | batch | peak RSS MiB |\n|---|---|---|---|---|\n'
for spec in "128 2 8" "256 2 8" "256 4 8" "256 4 16" "512 2 8"; do
  read -r w l b <<<"$spec"
  h=$((w / 64)); [ "$h" -lt 2 ] && h=2
  job teacher "t$w-$l" "{\"device\": \"cpu\", \"steps\": 1, \"batch\": 8, \"tokenizer\": \"tok\", \"arch\": \"llamagen\", \"width\": $w, \"layers\": $l, \"heads\": $h, \"train_limit\": 16, \"threads\": 1}"
  job tune "u$w-$l" "{\"device\": \"cpu\", \"steps\": 1, \"head_steps\": 0, \"batch\": 4, \"pool\": 4, \"tokenizer\": \"tok\", \"teacher\": \"t$w-$l\", \"head_width\": $w, \"threads\": 1}"
  kb=$( { /usr/bin/time -f "%M" "$T" job-run --type distill --attempt-id "d$w-$l-$b#1" --run-dir "$D" --job-name "d$w-$l-$b" \
          --params "{\"device\": \"cpu\", \"steps\": 2, \"k\": 4, \"m\": 2, \"batch\": $b, \"checkpoint_every\": 0, \"tokenizer\": \"tok\", \"teacher\": \"t$w-$l\", \"init\": \"u$w-$l\", \"threads\": 1}" \
          >/dev/null; } 2>&1 | tail -1)
  printf '| %s | %s | %s | %s | %s |\n' "$w" "$l" "$h" "$b" "$((kb / 1024))"
done
