#!/usr/bin/env bash
# Runs the CUDA benchmarks (build/bench_cuda) and keeps their JSON: attention fwd+bwd (full and S2, 8k/16k/32k, Dh 128),
# cuBLASLt GEMMs on Llama-2-7B shapes, and the end-to-end 7B-shaped LoRA+S2 step at 8k (with the longest context
# that fits when --max_context is given). Each benchmark prints its own table.
#   scripts/bench_cuda.sh [attention|gemm|e2e|all] [--out DIR] [--max_context] [--profile] [--peak_tflops X] [--with_hf]
# --profile times one more e2e step op by op (ProfilingBackend) and adds the table and JSON "profile".
# --with_hf also runs scripts/bench_hf_baseline.py (PyTorch + transformers + PEFT, same recipe) on the same GPU
# right after our e2e step and prints the ratio.
# Results: DIR/<benchmark>.json (default DIR: bench-results/<UTC timestamp>). Record card, commit and numbers in
# docs/gpu-log.md.
set -euo pipefail
cd "$(dirname "$0")/.."
what=all
out=""
extra_e2e=()
peak=()
with_hf=0
while [ $# -gt 0 ]; do
  case "$1" in
    attention|gemm|e2e|all) what=$1 ;;
    --out) out=$2; shift ;;
    --max_context) extra_e2e+=(--max_context) ;;
    --profile) extra_e2e+=(--profile) ;;
    --peak_tflops) peak=(--peak_tflops "$2"); shift ;;
    --with_hf) with_hf=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "bench_cuda.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
bin=${BENCH_BIN:-build/bench_cuda}
[ -x "$bin" ] || { echo "bench_cuda.sh: $bin is missing; run make first" >&2; exit 2; }
out=${out:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv
run() {
  echo
  echo "== $1"
  "$bin" "$@" --json "$out/$1.json"
}
case "$what" in
  attention) run attention ;;
  gemm) run gemm ;;
  e2e) run e2e "${peak[@]}" "${extra_e2e[@]}" ;;
  all) run attention; run gemm; run e2e "${peak[@]}" "${extra_e2e[@]}" ;;
esac
if [ "$with_hf" = 1 ] && [ -f "$out/e2e.json" ]; then
  echo
  echo "== PyTorch + transformers + PEFT baseline"
  python3 scripts/bench_hf_baseline.py --seq_len "$(python3 -c "import json;print(json.load(open('$out/e2e.json'))['results']['seq_len'])")" \
    --ours "$out/e2e.json" --json "$out/hf_baseline.json"
fi
echo
echo "results in $out/"
