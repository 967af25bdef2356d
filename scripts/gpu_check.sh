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
#   The wgmma attention passes' tests (*WgmmaForward*, *WgmmaDq*, *WgmmaDkdv*) run first, each in a process of its
#     own (tests_wgmma_*.log); the rest runs with LONGLORA_ATTENTION_WGMMA set to the passes that held
#   BEFORE=dir (an earlier commit's tree): its bench_cuda runs the attention and e2e benchmarks right after ours
#   BASELINE=ckpt|both|none (full mode): the PyTorch baseline with checkpointing (default), also without, or not at all
#   SKIP="name ..." leaves steps out: a benchmark's name (attention, e2e_offload, lora, ...), apps (demo, train, eval),
#     torch_attention (PyTorch's flash attention on the same shapes), tests
#   NCU=1: Nsight Compute counters of the attention kernels at 8k (forward, dQ, dK/dV; ncu --clock-control none)
#
# Without Debian packages on the machine (no apt there): carry .gpudeps/ (../shared/gpu/README.md: the .debs of
# scripts/gpu_check.sh's list) — it is unpacked to /opt/deps and the build uses DEPS=/opt/deps (scripts/gpu_env.sh,
# shared with scripts/gpu_ranks_check.sh: also Open MPI from the .debs and NCCL from PyTorch's wheel).
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
. scripts/gpu_env.sh  # card, arch, make_vars (DEPS, NCCL_HOME), stamp, settle_build; unpacks .gpudeps when needed
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
say "card: $card | sm_$arch | nvcc: $(nvcc --version 2>/dev/null | tail -1) | commit $commit | mode $mode"

# BEFORE=dir: the source tree of an earlier commit (e.g. `git archive <commit> | tar -x -C dir`), whose bench_cuda is
# built alongside and run right after ours on the same card, for before/after ratios.
before_pid=
if [ -n "${BEFORE:-}" ] && [ -f "$BEFORE/Makefile" ]; then
  (cd "$BEFORE" && make -j"$(nproc)" CUDA_ARCH="$arch" "${make_vars[@]}" build/bench_cuda) > "$out/build_before.log" 2>&1 &
  before_pid=$!
fi

settle_build  # clean unless build/ came from this same configuration
link_nccl_wheel

start=$SECONDS
# -k: whatever can be built is built (bench_cuda and train do not need GoogleTest).
make -k -j"$(nproc)" CUDA_ARCH="$arch" "${make_vars[@]}" build/test_all build/bench_cuda build/train build/eval > "$out/build.log" 2>&1
rc=$?
# MPI (unpacked from .gpudeps) and NCCL (PyTorch's wheel) are new on these machines: should either break the build
# (libmpi or the wheel's nccl.h), the kernels still get verified by a clean rebuild without multi-rank support.
if [ "$rc" -ne 0 ] && [ ! -x build/test_all ] && command -v mpicxx >/dev/null; then
  say "build with MPI/NCCL failed (exit $rc; build.log); rebuilding without them (MPI=0) into a clean build/"
  mv "$out/build.log" "$out/build_mpi.log"
  settle_build MPI=0  # the stamp says MPI=0: always a clean build/ here
  make_vars+=(MPI=0)
  make -k -j"$(nproc)" CUDA_ARCH="$arch" "${make_vars[@]}" build/test_all build/bench_cuda build/train build/eval > "$out/build.log" 2>&1
  rc=$?
fi
say "build: exit $rc after $((SECONDS - start)) s; built: $(ls build/test_all build/bench_cuda build/train build/eval 2>/dev/null | tr '\n' ' ')"
[ "$rc" -eq 0 ] || { grep -E 'error|Error' "$out/build.log" | head -20 | sed 's/^/    /' | tee -a "$out/summary.txt"; }

skipped() { [[ " ${SKIP:-} " == *" $1 "* ]]; }

if [ -x build/test_all ] && ! skipped tests; then
  # The wgmma passes first, each in a process of its own (a kernel fault there takes nothing else down); the rest
  # runs with LONGLORA_ATTENTION_WGMMA naming the passes that held (unset when all did: the default, auto).
  isolated='*Wgmma*'
  held=()
  for pass in Forward:fwd Dq:dq Dkdv:dkdv; do
    start=$SECONDS
    log="$out/tests_wgmma_${pass#*:}.log"
    timeout "${TEST_TIMEOUT:-240}" build/test_all --gtest_color=no --gtest_filter="*Wgmma${pass%%:*}*" > "$log" 2>&1
    rc=$?
    say "wgmma ${pass#*:} tests (*Wgmma${pass%%:*}*): exit $rc after $((SECONDS - start)) s"
    grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$log" | sed 's/^/    /' | tee -a "$out/summary.txt"
    grep -E '^\[  FAILED  \] [A-Za-z]|Failure|rror' "$log" | head -12 | sed 's/^/    /' | tee -a "$out/summary.txt"
    [ "$rc" -eq 0 ] && held+=("${pass#*:}")
  done
  if [ "${#held[@]}" -lt 3 ] && [ -z "${LONGLORA_ATTENTION_WGMMA:-}" ]; then
    LONGLORA_ATTENTION_WGMMA=$(IFS=,; echo "${held[*]:-none}")
    export LONGLORA_ATTENTION_WGMMA
    say "not every wgmma pass held: everything below runs with LONGLORA_ATTENTION_WGMMA=$LONGLORA_ATTENTION_WGMMA"
  fi
  start=$SECONDS
  filter="${TEST_FILTER:-*}"
  if [ -n "$isolated" ]; then  # exclude them: a gtest filter has one '-' before its negative patterns
    if [[ "$filter" == *-* ]]; then filter="$filter:$isolated"; else filter="$filter-$isolated"; fi
  fi
  timeout "${TEST_TIMEOUT:-240}" build/test_all --gtest_color=no --gtest_filter="$filter" \
    --gtest_output="json:$out/tests.json" > "$out/tests.log" 2>&1
  rc=$?
  say "tests ($filter): exit $rc after $((SECONDS - start)) s"
  grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$out/tests.log" | sed 's/^/    /' | tee -a "$out/summary.txt"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$out/tests.log" | head -40 | sed 's/^/    /' | tee -a "$out/summary.txt"
  grep -E '^\[  SKIPPED \] .*Cuda' "$out/tests.log" | head -5 | sed 's/^/    /' | tee -a "$out/summary.txt"
fi

bench_with() {  # binary, name, timeout, args...
  local bin=$1 name=$2 limit=$3; shift 3
  [ -x "$bin" ] || return
  skipped "$name" && { say "bench $name: skipped (SKIP)"; return; }
  local s=$SECONDS
  timeout "$limit" "$bin" "$@" --json "$out/bench/$name.json" > "$out/bench/$name.log" 2>&1
  say "bench $name: exit $? after $((SECONDS - s)) s"
  section_tail "$out/bench/$name.log" 25
}
bench() { bench_with build/bench_cuda "$@"; }
before() {  # the same benchmark with BEFORE's binary
  [ -n "$before_pid" ] || return
  if [ "$before_pid" != built ]; then  # the first call waits for its build
    wait "$before_pid" && say "BEFORE ($BEFORE) built" || say "BEFORE ($BEFORE) failed to build: build_before.log"
    before_pid=built
  fi
  bench_with "$BEFORE/build/bench_cuda" "before_$1" "${@:2}"
}
# In order of what matters most: whatever had run when the time ran out is kept.
bench attention 120 attention
before attention 120 attention
if ! skipped torch_attention && python3 -c 'import torch' 2>/dev/null; then  # FlashAttention-2 as torch ships it
  s=$SECONDS
  timeout 120 python3 scripts/bench_torch_attention.py --ours "$out/bench/attention.json" \
    --json "$out/bench/torch_attention.json" > "$out/bench/torch_attention.log" 2>&1
  say "PyTorch SDPA flash attention, same shapes: exit $? after $((SECONDS - s)) s"
  section_tail "$out/bench/torch_attention.log" 9
fi
bench attention_mma 60 attention --attention_wgmma none  # every pass on mma.sync (the default before Hopper)
bench attention_wgmma 60 attention --attention_wgmma fwd,dq,dkdv  # explicit: timed even when a pass failed above
bench e2e 150 e2e --profile  # + one profiled step: where the time goes, op by op
before e2e 150 e2e
bench e2e_no_recompute 90 e2e --checkpointing false  # what --gradient_checkpointing auto picks when it fits
before e2e_no_recompute 90 e2e --checkpointing false
bench e2e_offload 120 e2e --offload_checkpoints true  # inputs of layers 0..29 in pinned host memory
bench e2e_mma 60 e2e --attention_wgmma none  # the 7B step with the mma.sync kernels
# GPT-NeoX at Pythia-1.4b's shapes (random weights; LoRA on query_key_value,dense + embed,norm, S2, PI from 2048):
# issue 14's step benchmark beside the Llama-7B figures above (head dim 128: the wgmma attention kernels apply)
bench e2e_pythia_8k 120 e2e --model pythia-1.4b --seq_len 8192
bench e2e_pythia_32k 240 e2e --model pythia-1.4b --seq_len 32768
# Issue 19's step benchmarks at the released shapes (random weights): Llama-3.1-8B (128k vocabulary: the chunked
# loss matters; GQA 8) and Qwen2.5-7B (q/k/v biases, GQA 4, 152k vocabulary), 8k and 32k, recomputing every layer
bench e2e_llama3_8k 150 e2e --model llama3.1-8b --seq_len 8192
bench e2e_llama3_32k 300 e2e --model llama3.1-8b --seq_len 32768
bench e2e_qwen25_8k 150 e2e --model qwen2.5-7b --seq_len 8192
bench e2e_qwen25_32k 300 e2e --model qwen2.5-7b --seq_len 32768
bench lora 60 lora
bench memory 60 memory
bench e2e_qlora 150 e2e --load_in_4bit true  # QLoRA: NF4 (double-quantized) base, dequantized per product
bench decode_4bit 60 decode  # batch-1 products: bf16 weights against the fused 4-bit matrix-vector kernel

if [ "$mode" = full ]; then
  bench gemm 60 gemm
  if [ -x build/train ] && ! skipped apps; then
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
    # build/eval on the GPU against the CPU: the demo's LongLoRA adapter on its pretrained base
    if [ -d demo_output/pretrain/model ] && [ -x build/eval ]; then
      for dev in cuda cpu; do
        s=$SECONDS
        timeout 120 build/eval perplexity --device "$dev" --base_model demo_output/pretrain/model \
          --peft_model demo_output/longlora --data_path demo_output/val.bin --seq_len 256 --progress false \
          --json "$out/eval_$dev.json" > "$out/eval_$dev.log" 2>&1
        say "eval perplexity --device $dev: exit $? after $((SECONDS - s)) s"
        section_tail "$out/eval_$dev.log" 4
      done
    fi
  fi
  if [ "${BASELINE:-ckpt}" = none ]; then
    say "PyTorch baseline skipped: BASELINE=none"
  elif python3 -c 'import torch, transformers, peft' 2>/dev/null; then
    s=$SECONDS
    timeout 600 python3 scripts/bench_hf_baseline.py --seq_len 8192 --ours "$out/bench/e2e.json" \
      --json "$out/bench/hf_baseline.json" > "$out/bench/hf_baseline.log" 2>&1
    say "PyTorch baseline (checkpointing, as LongLoRA runs it): exit $? after $((SECONDS - s)) s"
    section_tail "$out/bench/hf_baseline.log" 15
    if [ "${BASELINE:-ckpt}" = both ]; then  # like for like with our run without recomputation
      s=$SECONDS
      timeout 600 python3 scripts/bench_hf_baseline.py --seq_len 8192 --no_checkpointing \
        --ours "$out/bench/e2e_no_recompute.json" --json "$out/bench/hf_baseline_nockpt.json" \
        > "$out/bench/hf_baseline_nockpt.log" 2>&1
      say "PyTorch baseline without checkpointing: exit $? after $((SECONDS - s)) s"
      section_tail "$out/bench/hf_baseline_nockpt.log" 15
    fi
  else
    say "PyTorch baseline skipped: torch/transformers/peft not importable here"
  fi
fi
if [ "${NCU:-0}" = 1 ] && [ -x build/bench_cuda ]; then
  ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  if [ -n "$ncu_bin" ]; then  # the first forward, dQ and dK/dV launches at 8k causal, as the defaults choose them
    s=$SECONDS
    timeout 180 "$ncu_bin" --clock-control none -k 'regex:attention_(forward|dq|dkdv)_(tc|wgmma)' -c 3 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy \
      --section LaunchStats --section MemoryWorkloadAnalysis \
      build/bench_cuda attention --warmup 0 --iters 1 > "$out/ncu_attention.log" 2>&1
    say "ncu attention kernels: exit $? after $((SECONDS - s)) s (ncu_attention.log)"
    grep -E 'attention_|Compute \(SM\) Throughput|highest-utilized|SM Active Cycles|Elapsed Cycles|Duration|Registers Per|Achieved Occupancy|Warp Cycles Per Issued' \
      "$out/ncu_attention.log" | head -40 | sed 's/^/    /' | tee -a "$out/summary.txt"
  else
    say "ncu: not found"
  fi
fi
if [ "$mode" = full ]; then  # last: one step at the longest context takes a minute or more
  bench e2e_max_context 240 e2e --max_context
  bench e2e_max_context_offload 240 e2e --max_context --offload_checkpoints true
  # The MLP over row tiles as well: the plan predicts 483,328 tokens (282,624 without; docs/architecture.md).
  bench e2e_max_context_mlp_tiles 420 e2e --max_context --offload_checkpoints true --mlp_tile_rows 8192
fi
# Everything in one archive as well (some transports bring back only a few files).
tar -czf "$out/gpu-check.tgz" --exclude=gpu-check.tgz -C "$out" . 2>/dev/null
say "done"
