#!/usr/bin/env bash
# The CUDA/NCCL check (issue 5): builds the LibTorch side of dd2 (training/, the job-child
# registry, their tests; CMake option DD2_TRAINING_ONLY) against python3's CUDA torch on a GPU
# machine that has CUDA, cmake, ninja and PyTorch but none of our Debian packages and no
# network, runs the GPU tests (tests/training/gpu_test.cc, ctest label gpu: the NCCL group of
# one rank, every job type on the GPU, GPU vs CPU losses; full log in build-gpu/gpu_test.log), then a few distill steps on the GPU and the CPU with a table of step
# times, and a LlamaGen-B-sized distill step's time and peak GPU memory.
#
#   ops/gpu-check.sh bundle [DIR]   here (Debian, after ops/install-deps.sh): copies into DIR
#                                   (default .gpu-bundle, git-ignored) what that machine lacks:
#                                   headers and shared libraries of abseil, libcrypto, zlib and
#                                   libpng, the header-only nlohmann-json and CLI11, GoogleTest's
#                                   sources and Fashion-MNIST, in Debian's /usr layout.
#   ops/gpu-check.sh run [DIR]      there, from the repository root: builds into build-gpu/ and
#                                   checks (DD2_GPU_CHECK_TABLE=0: no step-time table). Exit
#                                   status 0 only when every GPU test passed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
BUNDLE=$(realpath -m "${2:-.gpu-bundle}")

# Debian packages whose files the torch-side build needs (headers, libraries, CMake configs).
PACKAGES=(libabsl-dev libabsl20220623 nlohmann-json3-dev libcli11-dev libssl-dev libssl3 zlib1g-dev zlib1g
          libpng-dev libpng16-16 googletest dataset-fashion-mnist)

bundle() {
  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE/usr"
  local pkg f rel
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W "$pkg" >/dev/null 2>&1 || { echo "gpu-check: package $pkg is missing: run ops/install-deps.sh" >&2; exit 1; }
    while IFS= read -r f; do
      case "$f" in
        /usr/share/doc/* | /usr/share/man/* | /usr/share/lintian/* | */bin/* | *.a | */engines-3/* | */ossl-modules/*) continue ;;
      esac
      [ -f "$f" ] || [ -L "$f" ] || continue
      [ -d "$f" ] && [ ! -L "$f" ] && continue
      rel=${f#/usr}             # /lib/... (merged /usr) and /usr/lib/... land in the same place
      mkdir -p "$BUNDLE/usr$(dirname "$rel")"
      cp -a "$f" "$BUNDLE/usr$rel"
    done < <(dpkg -L "$pkg")
  done
  echo "gpu-check: bundle in $BUNDLE ($(du -sh "$BUNDLE" | cut -f1)); carry it to the GPU machine and run: ops/gpu-check.sh run $BUNDLE"
}

# Seconds per step between the first and the last progress line of a dd2-train job's output
# (steps_per_s there is cumulative from the job's start, so this leaves out the first steps'
# warm-up).
step_ms() {
  awk '/^step [0-9]+\/[0-9]+/ {
         split($2, s, "/"); n = s[1];
         for (i = 3; i <= NF; ++i) if ($i ~ /^steps_per_s=/) { sub("steps_per_s=", "", $i); r = $i }
         if (first == "") { first = n; t_first = n / r }
         last = n; t_last = n / r
       }
       END { if (last > first) printf "%.1f", 1000 * (t_last - t_first) / (last - first); else print "n/a" }'
}

run() {
  [ -d "$BUNDLE/usr/include" ] || { echo "gpu-check: no bundle at $BUNDLE (make one with: ops/gpu-check.sh bundle)" >&2; exit 1; }
  local torch_prefix site nccl_h nvcc
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  site=$(python3 -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  python3 -c 'import torch; print("gpu-check: torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0))'
  nccl_h=$(find "$site/nvidia" /usr/local/cuda*/include /usr/include -name nccl.h 2>/dev/null | head -1 || true)
  nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
  echo "gpu-check: nccl.h: ${nccl_h:-not found}; nvcc: ${nvcc:-not found}; $(c++ --version | head -1); $(cmake --version | head -1)"
  configure() {  # configure EXTRA-ARGS...: into build-gpu/, log in build-gpu.configure.log
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDD2_TRAINING_ONLY=ON -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
      -DCMAKE_PREFIX_PATH="$torch_prefix;$BUNDLE/usr" -DDD2_GTEST_SOURCE_DIR="$BUNDLE/usr/src/googletest" \
      ${nvcc:+-DCUDAToolkit_ROOT="$(dirname "$(dirname "$nvcc")")" -DCMAKE_CUDA_COMPILER="$nvcc"} \
      ${nccl_h:+-DDD2_NCCL_INCLUDE_DIR="$(dirname "$nccl_h")"} "$@" >build-gpu.configure.log 2>&1 &&
      { grep -E "dd2:" build-gpu.configure.log || true; }
  }
  local t0=$SECONDS
  # The NCCL group needs c10d's NCCL headers to compile here; without them the GPU jobs still
  # build (their NCCL test then fails and says so).
  if ! configure -DDD2_NCCL=ON || ! cmake --build build-gpu -j "$(nproc)" >build-gpu.build.log 2>&1; then
    grep -hE "rror|FAILED" build-gpu.configure.log build-gpu.build.log 2>/dev/null | head -30 || true
    echo "gpu-check: the build with NCCL failed (above); building without the NCCL process group"
    configure -DDD2_NCCL=OFF || { tail -40 build-gpu.configure.log; exit 1; }
    cmake --build build-gpu -j "$(nproc)" >build-gpu.build.log 2>&1 ||
      { grep -E "rror|FAILED" build-gpu.build.log | head -30; exit 1; }
  fi
  echo "gpu-check: built in $((SECONDS - t0)) s"
  export DD2_FASHION_MNIST_DIR="$BUNDLE/usr/share/datasets/fashion-mnist"
  # The carried abseil libraries find each other here (they have no run path of their own).
  export LD_LIBRARY_PATH="$BUNDLE/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local status=0  # each test in its own process, as in the suite
  ctest --test-dir build-gpu -L gpu --output-on-failure -V >build-gpu/gpu_test.log 2>&1 || status=1
  grep -E "\[ +(OK|FAILED|SKIPPED) +\]|Skipped|loss: cpu|Failure|Expected|Which is|SEGFAULT|Exception|tests passed|tests failed" \
    build-gpu/gpu_test.log || true
  [ "${DD2_GPU_CHECK_TABLE:-1}" = 1 ] || return "$status"  # DD2_GPU_CHECK_TABLE=0: the tests alone

  # A few distill steps at the quality configuration's sizes (examples/fmnist.yaml: teacher
  # width 64, 2 layers; m = 2, K = 4), after short upstream stages (their quality is not the point).
  local train=build-gpu/bin/dd2-train dir
  dir=$(mktemp -d)
  job() {  # job TYPE NAME PARAMS-JSON (device and data dir added)
    "$train" job-run --type "$1" --params "${3%\}}, \"data_dir\": \"$DD2_FASHION_MNIST_DIR\"}" \
      --attempt-id "$2#1" --run-dir "$dir" --job-name "$2"
  }
  job tokenizer tokenizer '{"device": "cuda", "steps": 100, "batch": 64}' >/dev/null || echo "gpu-check: tokenizer failed"
  job teacher teacher '{"device": "cuda", "steps": 100, "batch": 64, "width": 64, "layers": 2, "heads": 4}' >/dev/null ||
    echo "gpu-check: teacher failed"
  job tune tune '{"device": "cuda", "steps": 20, "head_steps": 10, "batch": 32, "pool": 250}' >/dev/null ||
    echo "gpu-check: tune failed"
  # noise: cpu draws every random number on the CPU and copies it over (the default, the same
  # numbers on any device); device draws them on the GPU (the `noise: device` param).
  printf '\n| device | threads | noise | batch | K | m | timed steps | ms per generator step | sequences/s |\n|---|---|---|---|---|---|---|---|---|\n'
  local device batch steps noise ms threads
  for spec in "cuda 32 50 cpu" "cuda 256 50 cpu" "cuda 32 50 device" "cuda 256 50 device" "cpu 32 20 cpu"; do
    read -r device batch steps noise <<<"$spec"
    threads=$([ "$device" = cpu ] && nproc || echo 1)
    ms=$(job distill "distill-$device-$batch-$noise" "{\"device\": \"$device\", \"threads\": $threads, \"noise\": \"$noise\", \"steps\": $steps, \"k\": 4, \"m\": 2, \"batch\": $batch, \"checkpoint_every\": 0}" |
         step_ms || true)
    printf '| %s | %s | %s | %s | 4 | 2 | %s | %s | %s |\n' "$device" "$threads" "$noise" "$batch" "$((steps - 10))" "$ms" \
      "$(awk -v b="$batch" -v ms="$ms" 'BEGIN { if (ms + 0 > 0) printf "%.0f", 1000 * b / ms; else print "n/a" }')"
  done
  # A LlamaGen-B-sized distillation step (issue 16): LlamaGen's GPT-B (width 768, 12 layers, 12
  # heads) as the teacher over 256 tokens and 16,384 codes; random weights (the upstream jobs take
  # a step or two: their quality is not the point). Peak GPU memory polled with nvidia-smi.
  job tokenizer tok-b '{"device": "cuda", "steps": 1, "batch": 8, "grid": 16, "codebook_size": 16384, "train_limit": 64}' \
    >/dev/null || echo "gpu-check: LlamaGen-B tokenizer failed"
  job teacher gpt-b '{"device": "cuda", "steps": 1, "batch": 8, "tokenizer": "tok-b", "arch": "llamagen", "width": 768, "layers": 12, "heads": 12, "train_limit": 64}' \
    >/dev/null || echo "gpu-check: LlamaGen-B teacher failed"
  job tune tune-b '{"device": "cuda", "steps": 2, "head_steps": 1, "batch": 8, "pool": 16, "tokenizer": "tok-b", "teacher": "gpt-b", "head_width": 768}' \
    >/dev/null || echo "gpu-check: LlamaGen-B tune failed"
  printf '\n| LlamaGen-B distill | batch | K | m | timed steps | ms per generator step | peak GPU MiB |\n|---|---|---|---|---|---|---|\n'
  local peak_file pid
  for batch in 8 32; do
    peak_file=$(mktemp)
    (peak=0; while sleep 0.5; do
       used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 || echo 0)
       [ "${used:-0}" -gt "$peak" ] && peak=$used && echo "$peak" >"$peak_file"
     done) &
    pid=$!
    ms=$(job distill "distill-b-$batch" "{\"device\": \"cuda\", \"noise\": \"device\", \"steps\": 20, \"k\": 4, \"m\": 2, \"batch\": $batch, \"checkpoint_every\": 0, \"tokenizer\": \"tok-b\", \"teacher\": \"gpt-b\", \"init\": \"tune-b\"}" |
         step_ms || true)
    kill "$pid" 2>/dev/null || true
    printf '| GPT-B, 256 tokens | %s | 4 | 2 | 10 | %s | %s |\n' "$batch" "$ms" "$(cat "$peak_file" 2>/dev/null || echo n/a)"
    rm -f "$peak_file"
  done
  rm -rf "$dir"
  [ "$status" -eq 0 ] && echo "gpu-check: all GPU tests passed" || echo "gpu-check: GPU tests FAILED"
  return "$status"
}

case "$mode" in
  bundle) bundle ;;
  run) run ;;
  *) echo "usage: ops/gpu-check.sh bundle [DIR] | run [DIR]" >&2; exit 2 ;;
esac
