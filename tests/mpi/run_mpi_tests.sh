#!/usr/bin/env bash
# Runs build/test_mpi under mpirun with 1, 2 and 4 CPU ranks (oversubscribed), then the fault cases, each run with
# its own GoogleTest-style summary: scripts/run_tests.sh adds up every summary block, so each (test, rank count) pair
# counts as one test. A run that ends non-zero without reporting a failed test adds a "[  FAILED  ] 1 test" line.
set -u
bin=${MPI_TEST_BIN:-build/test_mpi}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
status=0
for np in 1 2 4; do
  echo "--- mpirun -np $np $bin"
  log=$(mktemp)
  timeout 900 mpirun --oversubscribe --bind-to none -np "$np" "$bin" --gtest_color=no 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    status=1
    grep -q '^\[  FAILED  \] [0-9]' "$log" ||
      echo "[  FAILED  ] 1 test: mpirun -np $np $bin exited with code $rc without reporting a failed test"
  fi
  rm -f "$log"
done
passed=0 failed=0
# Faults: one failing or hanging rank must end every rank, non-zero, with a message naming it, in bounded time.
train=${TRAIN_BIN:-$(dirname "$bin")/train}
work=$(mktemp -d)
for i in $(seq 3000); do printf '\x05\x00\x07\x00'; done > "$work/tokens.bin"
fault_flags=()  # extra flags of the fault cases
fault_case() {  # name, expected message, extra env...
  local name=$1 expect=$2; shift 2
  local start=$SECONDS
  out=$(env "$@" LONGLORA_FAIL_STEP=2 timeout 120 mpirun --oversubscribe --bind-to none -np 2 "$train" \
        --model_config demo --data_path "$work/tokens.bin" --model_max_length 64 --max_steps 6 --save_steps 0 \
        --output_dir "$work/$name" --comm_timeout_sec 5 "${fault_flags[@]}" 2>&1)
  local rc=$? took=$((SECONDS - start))
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && echo "$out" | grep -q "$expect" && [ "$took" -lt 60 ]; then
    echo "[       OK ] Faults.$name (exit $rc after ${took}s)"; passed=$((passed + 1))
  else
    echo "$out" | tail -20
    echo "[  FAILED  ] Faults.$name (exit $rc after ${took}s; expected a non-zero exit naming the rank within 60s)"
    failed=$((failed + 1))
  fi
}
fault_case FailingRankEndsAllRanks "rank 1 of 2 failed: train: error: injected failure" LONGLORA_FAIL_RANK=1
fault_case HangingRankEndsAllRanks "did not complete within 5 s" LONGLORA_HANG_RANK=1
# The same through StagedComm (host stager, 256-byte chunks): a peer failing or hanging mid-collective leaves the
# other rank inside a chunk's MPI call, which MpiComm's watchdog ends.
fault_flags=(--comm mpi --comm_chunk_bytes 256)
fault_case StagedFailingRankEndsAllRanks "rank 1 of 2 failed: train: error: injected failure" LONGLORA_FAIL_RANK=1 \
  LONGLORA_COMM_STAGE_HOST=1
fault_case StagedHangingRankEndsAllRanks "did not complete within 5 s" LONGLORA_HANG_RANK=1 LONGLORA_COMM_STAGE_HOST=1
fault_flags=()
# --comm: a value other than auto/nccl/mpi, and nccl on CPU ranks, stop every rank before training, naming the flag.
for bad in "gloo|--comm: expected auto, nccl or mpi, got \`gloo\`" "nccl|--comm nccl: NCCL moves device buffers"; do
  value=${bad%%|*} expect=${bad#*|}
  out=$(timeout 120 mpirun --oversubscribe --bind-to none -np 2 "$train" --model_config demo \
        --data_path "$work/tokens.bin" --model_max_length 64 --max_steps 2 --output_dir "$work/comm_$value" \
        --comm "$value" 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && echo "$out" | grep -qF -- "$expect" && [ ! -e "$work/comm_$value/metrics.jsonl" ]; then
    echo "[       OK ] Faults.CommFlag_$value (exit $rc)"; passed=$((passed + 1))
  else
    echo "$out" | tail -20
    echo "[  FAILED  ] Faults.CommFlag_$value (exit $rc; expected a non-zero exit naming --comm, before training)"
    failed=$((failed + 1))
  fi
done
# DeepSpeed's train_batch_size must be micro batch × accumulation × world size: 4 = 1 × 4 × 1 is wrong on 2 ranks.
echo '{"train_batch_size": 4}' > "$work/batch4.json"
out=$(timeout 120 mpirun --oversubscribe --bind-to none -np 2 "$train" --model_config demo \
      --data_path "$work/tokens.bin" --model_max_length 64 --max_steps 2 --output_dir "$work/batch4" \
      --gradient_accumulation_steps 4 --deepspeed "$work/batch4.json" 2>&1)
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ ! -e "$work/batch4/metrics.jsonl" ] && echo "$out" | grep -qF -- \
   "train_batch_size: 4 is not micro batch 1 × gradient accumulation 4 × world size 2 = 8"; then
  echo "[       OK ] Faults.DeepSpeedTrainBatchSizeOn2Ranks (exit $rc)"; passed=$((passed + 1))
else
  echo "$out" | tail -20
  echo "[  FAILED  ] Faults.DeepSpeedTrainBatchSizeOn2Ranks (exit $rc; expected a non-zero exit naming" \
       "train_batch_size, its three factors and the world size 2, before training)"
  failed=$((failed + 1))
fi
# Ranks started with different flags (an MPMD launch) stop before training, every rank naming the first difference.
start=$SECONDS
args=(--model_config demo --data_path "$work/tokens.bin" --model_max_length 64 --max_steps 6 --save_steps 0
      --output_dir "$work/mpmd" --comm_timeout_sec 5)
out=$(timeout 120 mpirun --oversubscribe --bind-to none -np 1 "$train" "${args[@]}" --learning_rate 0.001 : \
      -np 1 "$train" "${args[@]}" --learning_rate 0.002 2>&1)
rc=$? took=$((SECONDS - start))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ ! -e "$work/mpmd/metrics.jsonl" ] &&
   echo "$out" | grep -q -- "--learning_rate is 0.002 on rank 1 but 0.001 on rank 0"; then
  echo "[       OK ] Faults.RanksWithDifferentFlagsStop (exit $rc after ${took}s)"; passed=$((passed + 1))
else
  echo "$out" | tail -20
  echo "[  FAILED  ] Faults.RanksWithDifferentFlagsStop (exit $rc after ${took}s; expected a non-zero exit naming" \
       "--learning_rate and both values, before any training)"
  failed=$((failed + 1))
fi
# LongLoRA's fine-tuning command (torchrun --nproc_per_node=N fine-tune.py → mpirun -np N build/train, the demo
# model, --max_steps 2): the ZeRO stage of each ds_configs file on 2 ranks, LongLoRA's notes printed once (rank 0).
train_path=$(realpath "$train")
mkdir -p "$work/ds_configs" && cp "$(dirname "$0")/../fixtures/ds_configs/"stage[23].json "$work/ds_configs/"
for stage in 2 3; do
  out=$(cd "$work" && timeout 300 mpirun --oversubscribe --bind-to none -np 2 "$train_path" \
        --model_config demo --data_path tokens.bin --bf16 True --output_dir "ft$stage" --cache_dir path_to_cache \
        --model_max_length 64 --use_flash_attn True --low_rank_training False --num_train_epochs 1 \
        --per_device_train_batch_size 1 --per_device_eval_batch_size 2 --gradient_accumulation_steps 8 \
        --evaluation_strategy "no" --save_strategy "steps" --save_steps 1000 --save_total_limit 2 \
        --learning_rate 2e-5 --weight_decay 0.0 --warmup_steps 20 --lr_scheduler_type "constant_with_warmup" \
        --logging_steps 1 --deepspeed "ds_configs/stage$stage.json" --tf32 True --max_steps 2 2>&1)
  rc=$?
  if [ "$rc" -eq 0 ] && echo "$out" | grep -q "on 2 ranks (mpi, ZeRO stage $stage" &&
     [ "$(echo "$out" | grep -c -- "--tf32 True: ignored")" -eq 1 ] && [ -e "$work/ft$stage/model/config.json" ]; then
    echo "[       OK ] LongLoraCommands.FineTuneOn2RanksWithStage$stage"; passed=$((passed + 1))
  else
    echo "$out" | tail -20
    echo "[  FAILED  ] LongLoraCommands.FineTuneOn2RanksWithStage$stage (exit $rc; expected ZeRO stage $stage on 2" \
         "ranks, one note per ignored flag, the full model exported)"
    failed=$((failed + 1))
  fi
done
# Multi-rank evaluation (eval_distributed.py's role) through the binary: perplexity on 2 and 3 ranks prints and
# writes what one rank does (the JSON's results equal: scripts/compare_runs.py eval; only rank 0 writes), a rank
# that fails ends every rank naming it, and generate refuses several ranks.
eval_bin=$(realpath "$(dirname "$bin")/eval")
mkdir -p "$work/eval/a/model" "$work/eval/b"
cp "$(dirname "$0")/../fixtures/hf_tiny/"* "$work/eval/a/model/"
cp "$(dirname "$0")/../fixtures/ppl_tokens.bin" "$work/eval/a/"
cp "$(dirname "$0")/../fixtures/ppl_tokens.bin" "$work/eval/b/"
ppl_args=(perplexity --base_model model --data_path ppl_tokens.bin --seq_len 64 --sliding_window 100
          --drop_last false --progress false --comm_timeout_sec 30)
eval_case() {  # name, ok (0/1), failure explanation
  if [ "$2" -eq 0 ]; then echo "[       OK ] EvalCommands.$1"; passed=$((passed + 1))
  else echo "$out" | tail -20; echo "[  FAILED  ] EvalCommands.$1 ($3)"; failed=$((failed + 1)); fi
}
compare_runs=$(realpath "$(dirname "$0")/../../scripts/compare_runs.py")  # eval RUN REF --world_size N
one=$(cd "$work/eval/a" && timeout 120 "$eval_bin" "${ppl_args[@]}" --json one.json 2>/dev/null | head -2)
for np in 2 3; do
  out=$(cd "$work/eval/a" && timeout 120 mpirun --oversubscribe --bind-to none -np "$np" "$eval_bin" "${ppl_args[@]}" \
        --json "ranks$np.json" 2>&1)
  rc=$?
  ok=1
  if [ "$rc" -eq 0 ] && [ "$(echo "$out" | grep -A1 '^perplexity  ')" = "$one" ] && [ -n "$one" ] &&
     python3 "$compare_runs" eval "$work/eval/a/ranks$np.json" "$work/eval/a/one.json" --world_size "$np" \
       >/dev/null && [ "$(echo "$out" | grep -c '^perplexity  ')" -eq 1 ]
  then ok=0; fi
  eval_case "PerplexityOn${np}RanksEqualsOneRank" "$ok" "exit $rc; expected rank 0 alone to print and write the \
one-rank numbers with world_size $np"
done
start=$SECONDS
out=$(timeout 120 mpirun --oversubscribe --bind-to none -np 2 -wdir "$work/eval/a" "$eval_bin" "${ppl_args[@]}" \
      --json fail.json : -np 1 -wdir "$work/eval/b" "$eval_bin" "${ppl_args[@]}" --json fail.json 2>&1)
rc=$? took=$((SECONDS - start))
ok=1
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$took" -lt 60 ] && [ ! -e "$work/eval/a/fail.json" ] &&
   echo "$out" | grep -q "rank 2 of 3 failed: eval: error: --base_model \`model\` is not a folder"; then ok=0; fi
eval_case FailingRankEndsAllRanks "$ok" "exit $rc after ${took}s; expected a non-zero exit naming rank 2 and its \
error within 60s, no JSON"
out=$(cd "$work/eval/a" && timeout 120 mpirun --oversubscribe --bind-to none -np 2 "$eval_bin" generate \
      --base_model model --prompt hello 2>&1)
rc=$?
ok=1
if [ "$rc" -ne 0 ] && echo "$out" | grep -q "generate runs on one rank"; then ok=0; fi
eval_case GenerateRefusesSeveralRanks "$ok" "exit $rc; expected an error saying generate runs on one rank"
rm -rf "$work"

echo "[  PASSED  ] $passed tests."
if [ "$failed" -gt 0 ]; then echo "[  FAILED  ] $failed tests, listed above."; status=1; fi
exit $status
