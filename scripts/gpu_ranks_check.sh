#!/usr/bin/env bash
# Several ranks on one GPU, in one command (issue 20): ZeRO-0/2/3 with 2 and 4 CUDA ranks over the host-staged MPI
# communicator (--comm mpi) against one GPU rank with the same global batch, LoRA+ and full fine-tuning, offloaded
# checkpoints on and off; NCCL at world size 1; a failing, a hanging and a killed rank; `mpirun -np 2 build/eval
# perplexity` against -np 1. Every check prints one PASS, FAIL or SKIP line. $OUT gets two files (the device tool
# brings back few): summary.txt (the PASS/FAIL/SKIP lines first, then the timed log) and ranks-check.tgz (logs/ with
# every run's output, runs/NAME/metrics.jsonl of every training run). About 3 minutes of GPU time after the build
# (estimated: not run on a GPU yet).
#
#   OUT=dir scripts/gpu_ranks_check.sh          (default OUT: gpu-ranks-out)
#   DEVICE=cuda|cpu   cpu: CPU ranks on this machine, no GPU (exercises the script; NCCL checks skip)
#   COMM=mpi          the --comm value of the multi-rank runs; COMM= (empty) passes no --comm flag
#   CHECKS="stager ranks offload repeat nccl faults eval"   the groups to run (default all)
#   RANKS="2 4" STAGES="0 2 3" MODES="lora full" OFFLOADS="off on"   the training matrix
#   JOBS (runs at once; default 3 on cuda, 1 on cpu), BUILD=0 (use build/ as it is), RUN_TIMEOUT (s, default 240),
#   FAULT_TIMEOUT (the faults' --comm_timeout_sec, default 20)
#
# On a lent GPU machine (no apt, no MPI): carry .gpudeps/ made by ../shared/gpu/fetch-debs.sh (it holds Open MPI);
# scripts/gpu_env.sh unpacks it, finds NCCL in PyTorch's wheel, and reuses build/ from scripts/gpu_check.sh when it
# was built the same way.
#
# What must agree, and why (docs/scaling.md, "One GPU, several ranks"):
# - N ranks vs one rank, same global batch: within a bound, not bit for bit. The ranks multiply matrices of fewer
#   rows (cuBLASLt picks other algorithms, bf16 outputs round differently) and sum gradients over ranks in another
#   order than one rank sums over its rows. Bounds: CUDA bf16 as tests/mpi/test_nccl.cpp's (losses 1e-2 relative,
#   weights 2e-2 relative L2); CPU fp32 as tests/mpi's CPU ranks (1e-5 both).
# - offloaded checkpoints on vs off, a run repeated, NCCL at one rank vs no communicator: bit-identical. The same
#   products and reductions in the same order (offloading only copies saved layer inputs to host memory and back;
#   one rank's collectives are copies).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out=${OUT:-gpu-ranks-out}
device=${DEVICE:-cuda}
comm=${COMM-mpi}
checks=${CHECKS:-stager ranks offload repeat nccl faults eval}
case "$device" in cuda|cpu) ;; *) echo "gpu_ranks_check.sh: DEVICE must be cuda or cpu, got $device" >&2; exit 2 ;; esac
global=4  # rows per micro-batch over all ranks: each rank count must divide it (the same global batch as one rank)
for n in ${RANKS:-2 4}; do
  case $n in 1|2|4) ;; *) echo "gpu_ranks_check.sh: RANKS must be among 1, 2 and 4 (dividing the global batch of $global rows), got $n" >&2; exit 2 ;; esac
done
mkdir -p "$out"
: > "$out/summary.txt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
logs=$work/logs
mkdir -p "$logs"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$out/summary.txt"; }
passed=0 failed=0 skipped=0
result() {  # PASS|FAIL|SKIP, check name, detail
  echo "$1 $2${3:+ | $3}" | tee -a "$out/summary.txt"
  case $1 in PASS) passed=$((passed + 1)) ;; FAIL) failed=$((failed + 1)) ;; *) skipped=$((skipped + 1)) ;; esac
}
wanted() { [[ " $checks " == *" $1 "* ]]; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Open MPI's shared-memory transport reads other ranks' memory with process_vm_readv (CMA), which containers and
# sandboxes (the lent machines run under gVisor) often refuse mid-run; copy through the shared segment instead.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}

# --- set-up: MPI (from .gpudeps when mpirun is absent), NCCL, the build ---
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ "$device" = cuda ]; then
  command -v nvidia-smi >/dev/null || { say "no nvidia-smi: not a GPU machine (DEVICE=cpu runs CPU ranks)"; exit 2; }
  . scripts/gpu_env.sh  # card, arch, make_vars, stamp, settle_build
  say "card: $card | sm_$arch | commit $commit | DEVICE=cuda COMM=${comm:-none}"
  make_args=(CUDA_ARCH="$arch")
  [ "${BUILD:-1}" = 0 ] || settle_build ""  # no note: the build gpu_check.sh makes too
  link_nccl_wheel
  make_args+=("${make_vars[@]}")
  jobs_at_once=${JOBS:-3}
else
  say "DEVICE=cpu: CPU ranks | commit $commit | COMM=${comm:-none}"
  make_args=()
  jobs_at_once=${JOBS:-1}
fi
say "mpirun: $(command -v mpirun || echo none) $(mpirun --version 2>/dev/null | head -1)"
if [ "${BUILD:-1}" != 0 ]; then
  start=$SECONDS
  make -k -j"$(nproc)" "${make_args[@]}" build/train build/eval build/test_mpi > "$logs/build.log" 2>&1
  say "build: exit $? after $((SECONDS - start)) s; built: $(ls build/train build/eval build/test_mpi 2>/dev/null | tr '\n' ' ')"
fi
command -v mpirun >/dev/null || say "no mpirun: every multi-rank check fails (carry .gpudeps with Open MPI)"

# --- the model and data: 4 layers (offloading keeps all but the last two on the host), 8-row global batch ---
if [ "$device" = cuda ]; then hidden=256 inter=688 seq=128; else hidden=64 inter=176 seq=64; fi  # head dim 64 / 16
cat > "$work/config.json" <<EOF
{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": $hidden, "intermediate_size": $inter,
 "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 4, "vocab_size": 512,
 "max_position_embeddings": $seq, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu"}
EOF
python3 - "$work/tokens.bin" <<'EOF'
import random, struct, sys
r, t, out = random.Random(0), 1, []
while len(out) < 40000:  # a learnable sequence with random restarts, uint16
    t = (t * 5 + 3) % 509 if r.random() < 0.9 else r.randrange(509)
    out.append(t)
open(sys.argv[1], "wb").write(struct.pack(f"<{len(out)}H", *out))
EOF
steps=6
common=(--device "$device" --model_config "$work/config.json" --data_path "$work/tokens.bin" --model_max_length "$seq"
        --max_steps "$steps" --save_steps "$steps" --learning_rate 5e-3 --warmup_steps 2 --lr_scheduler_type linear
        --weight_decay 0.01 --gradient_accumulation_steps 2 --bf16 true --gradient_checkpointing true --seed 7)
comm_flag=(); [ -n "$comm" ] && comm_flag=(--comm "$comm")
mode_flags() { case $1 in lora) echo "--low_rank_training true" ;; full) echo "--low_rank_training false" ;; esac; }
offload_flags() { case $1 in on) echo "--offload_checkpoints true" ;; off) echo "--offload_checkpoints false" ;; esac; }
if [ "$device" = cuda ]; then loss_rel=1e-2 weights_rel=2e-2; else loss_rel=1e-5 weights_rel=1e-5; fi

# run NAME NP ARGS...: build/train (NP 0: without mpirun) into $work/NAME; log logs/NAME.log; rc in $work/NAME.rc
run() {
  local name=$1 np=$2; shift 2
  local launch=(); [ "$np" -gt 0 ] && launch=(mpirun --oversubscribe --bind-to none -np "$np")
  local s=$SECONDS
  timeout "${RUN_TIMEOUT:-240}" "${launch[@]}" build/train "${common[@]}" --comm_timeout_sec 60 \
    --output_dir "$work/$name" "$@" \
    > "$logs/$name.log" 2>&1
  local rc=$?
  echo "$rc" > "$work/$name.rc"
  echo "exit $rc after $((SECONDS - s)) s: ${launch[*]} build/train ${common[*]} --output_dir $work/$name $*" \
    >> "$logs/$name.log"
}
spawn() {  # run, at most $jobs_at_once at a time
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_at_once" ]; do wait -n; done
  run "$@" &
}
ran_ok() {  # NAME...: each run exited 0, or the reason it did not (for the check's FAIL line)
  local name rc
  for name in "$@"; do
    rc=$(cat "$work/$name.rc" 2>/dev/null || echo "none")
    [ "$rc" = 0 ] && continue
    why="run $name exited $rc: $(grep -E 'error|rror:|failed' "$logs/$name.log" | head -1 | cut -c1-220) (logs/$name.log)"
    return 1
  done
}
compare() {  # check name, run, reference, compare_runs.py options...
  local check=$1 a=$2 b=$3; shift 3
  if ! ran_ok "$a" "$b"; then result FAIL "$check" "$why"; return; fi
  local line
  line=$(python3 scripts/compare_runs.py train "$work/$a" "$work/$b" --steps "$steps" "$@")
  if [ $? -eq 0 ]; then result PASS "$check" "$line"; else result FAIL "$check" "$line"; fi
}
started() { say "$1: started"; section_start=$SECONDS; }
finished() { say "$1: done after $((SECONDS - section_start)) s"; }

# --- ZeRO-0/2/3 on N ranks vs one rank, and offloaded checkpoints on vs off ---
if wanted ranks || wanted offload || wanted repeat; then
  started "training runs (${MODES:-lora full} × offload ${OFFLOADS:-off on} × ranks ${RANKS:-2 4} × ZeRO ${STAGES:-0 2 3})"
  for mode in ${MODES:-lora full}; do
    for off in ${OFFLOADS:-off on}; do
      # shellcheck disable=SC2046  # the flag pairs split into words
      spawn "single_${mode}_$off" 0 --per_device_train_batch_size "$global" $(mode_flags "$mode") $(offload_flags "$off")
      for n in ${RANKS:-2 4}; do
        for s in ${STAGES:-0 2 3}; do
          # shellcheck disable=SC2046
          spawn "np${n}_z${s}_${mode}_$off" "$n" "${comm_flag[@]}" --zero_stage "$s" \
            --per_device_train_batch_size $((global / n)) $(mode_flags "$mode") $(offload_flags "$off")
        done
      done
    done
  done
  if wanted repeat; then  # the run with the most collectives, once more
    rep_m=$(echo ${MODES:-lora full} | awk '{print $NF}') rep_n=$(echo ${RANKS:-2 4} | awk '{print $NF}')
    rep_s=$(echo ${STAGES:-0 2 3} | awk '{print $NF}') rep_o=$(echo ${OFFLOADS:-off on} | awk '{print $1}')
    rep="np${rep_n}_z${rep_s}_${rep_m}_${rep_o}"
    # shellcheck disable=SC2046
    spawn "${rep}_again" "$rep_n" "${comm_flag[@]}" --zero_stage "$rep_s" \
      --per_device_train_batch_size $((global / rep_n)) $(mode_flags "$rep_m") $(offload_flags "$rep_o")
  fi
  wait
  finished "training runs"
  for mode in ${MODES:-lora full}; do
    for off in ${OFFLOADS:-off on}; do
      for n in ${RANKS:-2 4}; do
        for s in ${STAGES:-0 2 3}; do
          wanted ranks && compare "ranks: $n ranks ZeRO-$s $mode offload $off vs 1 rank" \
            "np${n}_z${s}_${mode}_$off" "single_${mode}_$off" --loss_rel "$loss_rel" --weights_rel "$weights_rel"
        done
      done
    done
    if wanted offload && [[ " ${OFFLOADS:-off on} " == *" on "* && " ${OFFLOADS:-off on} " == *" off "* ]]; then
      compare "offload: 1 rank $mode on == off" "single_${mode}_on" "single_${mode}_off" --exact
      for n in ${RANKS:-2 4}; do
        for s in ${STAGES:-0 2 3}; do
          compare "offload: $n ranks ZeRO-$s $mode on == off" "np${n}_z${s}_${mode}_on" "np${n}_z${s}_${mode}_off" --exact
        done
      done
    fi
  done
  wanted repeat && compare "repeat: $rep_n ranks ZeRO-$rep_s $rep_m offload $rep_o twice, bit-identical" \
    "${rep}_again" "$rep" --exact
fi

# --- the CUDA stager: StagedComm's device collectives against MpiComm on host copies, ranks sharing the GPU ---
if wanted stager; then
  if [ "$device" != cuda ]; then
    result SKIP "stager: StagedCommOnGpu" "needs a GPU (DEVICE=cpu; the host stager is in build/test_mpi's StagedComm*)"
  else
    for n in 2 4; do
      log="$logs/test_staged_gpu_np$n.log"
      timeout 300 mpirun --oversubscribe --bind-to none -np "$n" build/test_mpi --gtest_color=no \
        --gtest_filter='StagedCommOnGpu*' > "$log" 2>&1
      rc=$?
      ran=$(grep -oE '^\[  PASSED  \] [0-9]+' "$log" | head -1 | grep -oE '[0-9]+$')
      if [ "$rc" -eq 0 ] && [ "${ran:-0}" -gt 0 ] && ! grep -q '^\[  SKIPPED \] [A-Za-z]' "$log"; then
        result PASS "stager: mpirun -np $n build/test_mpi --gtest_filter='StagedCommOnGpu*'" "$ran tests passed"
      else
        result FAIL "stager: mpirun -np $n build/test_mpi --gtest_filter='StagedCommOnGpu*'" \
          "exit $rc, ${ran:-0} passed: $(grep -m1 -E 'Failure|rror|SKIPPED \]' "$log") (logs/test_staged_gpu_np$n.log)"
      fi
    done
  fi
fi

# --- NCCL at world size 1: every collective (test_nccl), training equal to no communicator, the abort path ---
if wanted nccl; then
  if [ "$device" != cuda ]; then
    result SKIP "nccl: world size 1" "needs a GPU (DEVICE=cpu)"
  else
    started "NCCL at world size 1"
    log="$logs/test_nccl_np1.log"
    timeout 300 mpirun --oversubscribe --bind-to none -np 1 build/test_mpi --gtest_color=no --gtest_filter='Nccl*' \
      > "$log" 2>&1
    rc=$?
    ran=$(grep -oE '^\[  PASSED  \] [0-9]+' "$log" | grep -oE '[0-9]+$')
    skips=$(grep -cE '^\[  SKIPPED \] [A-Za-z]' "$log")
    # The training comparisons need 2 ranks and skip saying so; any other reason to skip fails the check.
    other=$(grep 'NCCL tests: ' "$log" | grep -v 'needs at least 2 ranks' | head -1)
    if [ "$rc" -eq 0 ] && [ "${ran:-0}" -gt 0 ] && [ -z "$other" ]; then
      result PASS "nccl: mpirun -np 1 build/test_mpi --gtest_filter='Nccl*'" \
        "$ran tests passed; $skips skipped (they need 2 ranks)"
    else
      result FAIL "nccl: mpirun -np 1 build/test_mpi --gtest_filter='Nccl*'" \
        "exit $rc, ${ran:-0} passed, $skips skipped: ${other:-$(grep -m1 -E 'Failure|rror' "$log")} (logs/test_nccl_np1.log)"
    fi
    for s in 0 2 3; do
      run "nccl_np1_z$s" 1 --comm nccl --zero_stage "$s" --per_device_train_batch_size "$global"
      run "nocomm_z$s" 0 --zero_stage "$s" --per_device_train_batch_size "$global"
      compare "nccl: -np 1 --comm nccl ZeRO-$s == no communicator" "nccl_np1_z$s" "nocomm_z$s" --exact
    done
    s0=$SECONDS
    LONGLORA_FAIL_RANK=0 LONGLORA_FAIL_STEP=2 run nccl_abort_np1 1 --comm nccl --zero_stage 2 \
      --per_device_train_batch_size "$global"
    rc=$(cat "$work/nccl_abort_np1.rc") took=$((SECONDS - s0))
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "injected failure" "$logs/nccl_abort_np1.log" && [ "$took" -lt 60 ]; then
      result PASS "nccl: a failing rank aborts the communicator (-np 1)" "exit $rc after ${took}s"
    else
      result FAIL "nccl: a failing rank aborts the communicator (-np 1)" \
        "exit $rc after ${took}s; expected non-zero naming the injected failure within 60 s (logs/nccl_abort_np1.log)"
    fi
    finished "NCCL at world size 1"
  fi
fi

# --- faults on 2 ranks: each must end the whole job, non-zero, within --comm_timeout_sec ---
if wanted faults; then
  started "faults"
  limit=${FAULT_TIMEOUT:-20}
  fault() {  # name, expected message, seconds allowed, env...
    local name=$1 expect=$2 allowed=$3; shift 3
    local s=$SECONDS
    env "$@" LONGLORA_FAIL_STEP=2 timeout $((limit + 120)) mpirun --oversubscribe --bind-to none -np 2 build/train \
      "${common[@]}" --comm_timeout_sec "$limit" --output_dir "$work/$name" "${comm_flag[@]}" --zero_stage 2 \
      --per_device_train_batch_size 2 > "$logs/$name.log" 2>&1
    local rc=$? took=$((SECONDS - s))
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "$expect" "$logs/$name.log" && [ "$took" -le "$allowed" ]; then
      result PASS "faults: $name" "exit $rc after ${took}s (--comm_timeout_sec $limit)"
    else
      result FAIL "faults: $name" "exit $rc after ${took}s; expected non-zero with \"$expect\" within ${allowed}s (logs/$name.log)"
    fi
  }
  # The whole run, start-up included, within the timeout; a hang is noticed after the timeout itself, so start-up
  # and the steps before it (30 s, generously) come on top.
  fault failing_rank "rank 1 of 2 failed" "$limit" LONGLORA_FAIL_RANK=1
  fault hanging_rank "did not complete within $limit s" $((limit + 30)) LONGLORA_HANG_RANK=1
  # A rank killed (SIGKILL) while training: the job must end without waiting for anything. Rank 1 is found by its
  # environment (a marker of this run and Open MPI's rank variable): the GPU images have no pgrep.
  name=killed_rank marker="LL_RANKS_CHECK_RUN=$$-$RANDOM"
  env "$marker" timeout $((limit + 120)) mpirun --oversubscribe --bind-to none -np 2 build/train "${common[@]}" \
    --max_steps 100000 --save_steps 0 --comm_timeout_sec "$limit" --output_dir "$work/$name" "${comm_flag[@]}" \
    --zero_stage 2 --per_device_train_batch_size 2 > "$logs/$name.log" 2>&1 &
  launcher=$!
  victim=
  for _ in $(seq 600); do  # up to 60 s for two logged steps
    if [ -f "$work/$name/metrics.jsonl" ] && [ "$(wc -l < "$work/$name/metrics.jsonl")" -ge 2 ]; then
      for e in /proc/[0-9]*/environ; do
        vars=$(tr '\0' '\n' 2>/dev/null < "$e") || continue  # processes come and go; some are not ours to read
        if grep -qx "$marker" <<< "$vars" && grep -qx 'OMPI_COMM_WORLD_RANK=1' <<< "$vars"; then
          victim=${e#/proc/}; victim=${victim%/environ}
        fi
      done
      break
    fi
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$victim" ]; then
    kill -- "$launcher" 2>/dev/null; wait "$launcher"
    result FAIL "faults: $name" "no rank 1 process found after two logged steps (logs/$name.log)"
  else
    s=$SECONDS
    kill -9 "$victim"
    wait "$launcher"
    rc=$? took=$((SECONDS - s))
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$took" -le "$limit" ]; then
      result PASS "faults: $name" "SIGKILL to rank 1 (pid $victim): the job ended, exit $rc, ${took}s later"
    else
      result FAIL "faults: $name" "SIGKILL to rank 1 (pid $victim): exit $rc ${took}s later; expected non-zero within ${limit}s (logs/$name.log)"
    fi
  fi
  finished "faults"
fi

# --- build/eval perplexity on 2 ranks: exactly the one-rank result ---
if wanted eval; then
  started "eval"
  model="$work/single_full_off/model"
  [ -f "$model/config.json" ] || run eval_model 0 --per_device_train_batch_size "$global" --low_rank_training false
  [ -f "$model/config.json" ] || model="$work/eval_model/model"
  for np in 1 2; do
    timeout 300 mpirun --oversubscribe --bind-to none -np "$np" build/eval perplexity --device "$device" \
      --base_model "$model" --data_path "$work/tokens.bin" --seq_len "$seq" --sliding_window "$seq" --max_windows 24 \
      --progress false --json "$work/ppl_np$np.json" > "$logs/eval_np$np.log" 2>&1
    echo "exit $?" >> "$logs/eval_np$np.log"
  done
  line=$(python3 scripts/compare_runs.py eval "$work/ppl_np2.json" "$work/ppl_np1.json" --world_size 2)
  if [ $? -eq 0 ]; then result PASS "eval: mpirun -np 2 build/eval perplexity == -np 1" "$line"
  else result FAIL "eval: mpirun -np 2 build/eval perplexity == -np 1" "$line (logs/eval_np*.log)"; fi
  finished "eval"
fi

say "$passed passed, $failed failed, $skipped skipped"
{ echo "PASS/FAIL/SKIP lines:"; grep -E '^(PASS|FAIL|SKIP) ' "$out/summary.txt"; echo; cat "$out/summary.txt"; } \
  > "$work/summary" && mv "$work/summary" "$out/summary.txt"
mkdir -p "$work/runs"
for m in "$work"/*/metrics.jsonl; do
  [ -f "$m" ] && mkdir -p "$work/runs/$(basename "$(dirname "$m")")" && cp "$m" "$work/runs/$(basename "$(dirname "$m")")/"
done
tar -czf "$out/ranks-check.tgz" -C "$work" logs runs
[ "$failed" -eq 0 ]
