#!/usr/bin/env bash
# GPU verification on a lent machine, in one command: build for the card's architecture, run the whole test suite
# (the GPU tests compare every kernel with the CPU reference; 20 training steps follow the CPU; two GPU runs are
# bit-identical), the demo on the GPU, and the benchmarks. Everything it prints and writes goes under $OUT
# (default gpu-out/): summary.txt first, then build.log, tests.log + tests.json, demo.log, bench/*.json.
# Record card, commit and results in docs/gpu-log.md afterwards.
#
#   OUT=dir scripts/gpu_check.sh [quick|full]
#     quick: build, tests, attention and end-to-end benchmarks
#     full:  also the GEMM benchmark, the demo, the longest-context search and, when torch is importable, the
#            PyTorch baseline side by side
#   TEST_FILTER (GoogleTest filter, default all), TEST_TIMEOUT (s, default 240)
#
# Without Debian packages on the machine (no apt there): carry .gpudeps/ (../shared/gpu/README.md: the .debs of
# scripts/gpu_check.sh's list) — it is unpacked to /opt/deps and the build uses DEPS=/opt/deps.
# COMMIT=<hash> names the commit when the tree travels without .git.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mode=${1:-full}
case "$mode" in quick|full) ;; *) echo "gpu_check.sh: mode must be quick or full, got $mode" >&2; exit 2 ;; esac
mkdir -p "$out/bench"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$out/summary.txt"; }
section_tail() { tail -n "$2" "$1" | sed 's/^/    /' | tee -a "$out/summary.txt"; }

command -v nvidia-smi >/dev/null || { say "no nvidia-smi: not a GPU machine"; exit 2; }
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
card=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
say "card: $card | sm_$arch | nvcc: $(nvcc --version 2>/dev/null | tail -1) | commit $commit | mode $mode"

deps=()
if [ ! -f /usr/include/sentencepiece_processor.h ] && [ -d .gpudeps ]; then
  eval "$(bash .gpudeps/unpack-debs.sh)"
  deps=(DEPS=/opt/deps)
  say "Debian libraries unpacked from .gpudeps into /opt/deps"
fi

start=$SECONDS
# -k: whatever can be built is built (bench_cuda and train do not need GoogleTest).
make -k -j"$(nproc)" CUDA_ARCH="$arch" "${deps[@]}" build/test_all build/bench_cuda build/train > "$out/build.log" 2>&1
rc=$?
say "build: exit $rc after $((SECONDS - start)) s; built: $(ls build/test_all build/bench_cuda build/train 2>/dev/null | tr '\n' ' ')"
[ "$rc" -eq 0 ] || { grep -E 'error|Error' "$out/build.log" | head -20 | sed 's/^/    /' | tee -a "$out/summary.txt"; }

if [ -x build/test_all ]; then
  start=$SECONDS
  timeout "${TEST_TIMEOUT:-240}" build/test_all --gtest_color=no --gtest_filter="${TEST_FILTER:-*}" \
    --gtest_output="json:$out/tests.json" > "$out/tests.log" 2>&1
  rc=$?
  say "tests (${TEST_FILTER:-*}): exit $rc after $((SECONDS - start)) s"
  grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$out/tests.log" | sed 's/^/    /' | tee -a "$out/summary.txt"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$out/tests.log" | head -40 | sed 's/^/    /' | tee -a "$out/summary.txt"
  grep -E '^\[  SKIPPED \] .*Cuda' "$out/tests.log" | head -5 | sed 's/^/    /' | tee -a "$out/summary.txt"
fi

bench() {  # name, timeout, args...
  local name=$1 limit=$2; shift 2
  [ -x build/bench_cuda ] || return
  local s=$SECONDS
  timeout "$limit" build/bench_cuda "$@" --json "$out/bench/$name.json" > "$out/bench/$name.log" 2>&1
  say "bench $name: exit $? after $((SECONDS - s)) s"
  section_tail "$out/bench/$name.log" 25
}
# In order of what matters most: whatever had run when the time ran out is kept.
bench attention 120 attention
bench e2e 150 e2e --profile  # + one profiled step: where the time goes, op by op
bench e2e_no_recompute 90 e2e --checkpointing false  # what --gradient_checkpointing auto picks when it fits
bench lora 60 lora
bench memory 60 memory

if [ "$mode" = full ]; then
  bench gemm 60 gemm
  if [ -x build/train ]; then
    s=$SECONDS
    LONGLORA_DEMO_DEVICE=cuda timeout 240 build/train > "$out/demo.log" 2>&1
    say "demo on the GPU: exit $? after $((SECONDS - s)) s"
    section_tail "$out/demo.log" 14
    # build/train on the GPU with the defaults (auto checkpointing decided from the memory plan) and the op profiler
    if [ -f demo_output/train.bin ]; then
      s=$SECONDS
      timeout 120 build/train --device cuda --model_config demo --tokenizer demo_output/tokenizer.model \
        --data_path demo_output/train.bin --model_max_length 256 --max_steps 30 --save_steps 0 \
        --output_dir "$out/train_auto" --profile_ops true > "$out/train_auto.log" 2>&1
      say "train --device cuda (auto checkpointing, --profile_ops): exit $? after $((SECONDS - s)) s"
      grep -E "gradient checkpointing|^step 30" "$out/train_auto.log" | sed 's/^/    /' | tee -a "$out/summary.txt"
    fi
  fi
  bench e2e_max_context 240 e2e --max_context
  if python3 -c 'import torch, transformers, peft' 2>/dev/null; then
    s=$SECONDS
    timeout 600 python3 scripts/bench_hf_baseline.py --seq_len 8192 --ours "$out/bench/e2e.json" \
      --json "$out/bench/hf_baseline.json" > "$out/bench/hf_baseline.log" 2>&1
    say "PyTorch baseline: exit $? after $((SECONDS - s)) s"
    section_tail "$out/bench/hf_baseline.log" 15
  else
    say "PyTorch baseline skipped: torch/transformers/peft not importable here"
  fi
fi
say "done"
