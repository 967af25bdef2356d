#!/usr/bin/env bash
# GPU verification on a lent machine, in one command: build for the card's architecture, run the whole test suite
# (the GPU tests compare every kernel with the CPU reference; 20 training steps follow the CPU; two GPU runs are
# bit-identical), the demo on the GPU, and the benchmarks. Everything it prints and writes goes under $OUT
# (default gpu-out/): summary.txt first, then build.log, tests.log + tests.json, demo.log, bench/*.json.
# Record card, commit and results in docs/gpu-log.md afterwards.
#
#   OUT=dir scripts/gpu_check.sh [quick|full]
#     quick: build, tests, attention benchmark (about 5 minutes on 16 cores)
#     full:  also the demo, the GEMM and end-to-end benchmarks (with the longest context search) and, when torch is
#            importable, the PyTorch baseline side by side
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
if ! make -j"$(nproc)" CUDA_ARCH="$arch" "${deps[@]}" build/test_all build/bench_cuda build/train \
     > "$out/build.log" 2>&1; then
  say "build FAILED after $((SECONDS - start)) s:"
  section_tail "$out/build.log" 40
  exit 1
fi
say "build: $((SECONDS - start)) s"

start=$SECONDS
timeout 600 build/test_all --gtest_color=no --gtest_output="json:$out/tests.json" > "$out/tests.log" 2>&1
rc=$?
say "tests: exit $rc after $((SECONDS - start)) s"
grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/tests.log" | sort | uniq -c | head -5 | sed 's/^/    /' | tee -a "$out/summary.txt"
grep -E '^\[  FAILED  \] [A-Za-z]' "$out/tests.log" | head -40 | sed 's/^/    /' | tee -a "$out/summary.txt"
grep -E '^\[  SKIPPED \] .*Cuda' "$out/tests.log" | head -5 | sed 's/^/    /' | tee -a "$out/summary.txt"

bench() {  # name, timeout, args...
  local name=$1 limit=$2; shift 2
  local s=$SECONDS
  timeout "$limit" build/bench_cuda "$@" --json "$out/bench/$name.json" > "$out/bench/$name.log" 2>&1
  say "bench $name: exit $? after $((SECONDS - s)) s"
  section_tail "$out/bench/$name.log" 25
}
bench attention 240 attention

if [ "$mode" = full ]; then
  s=$SECONDS
  LONGLORA_DEMO_DEVICE=cuda timeout 600 build/train > "$out/demo.log" 2>&1
  say "demo on the GPU: exit $? after $((SECONDS - s)) s"
  section_tail "$out/demo.log" 12
  bench gemm 180 gemm
  bench e2e 420 e2e --max_context
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
