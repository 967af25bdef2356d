#!/usr/bin/env bash
# scripts/gpu_ranks_check.sh with CPU ranks (DEVICE=cpu, a subset of its matrix: about 45 s on two cores) and
# scripts/compare_runs.py on made-up runs: what agrees, what differs, what is missing. Needs build/train and mpirun;
# without them it reports one skipped test. Arguments are ignored (run_tests.sh passes --gtest_color=no).
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/scripts/report.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive

# --- compare_runs.py: a run folder with 3 logged losses and checkpoint-3/trainable.safetensors (two f32 tensors) ---
fake_run() {  # folder, losses (comma-separated), the second tensor's values (comma-separated)
  mkdir -p "$1/checkpoint-3"
  python3 - "$1" "$2" "$3" <<'EOF'
import json, struct, sys
folder, losses, values = sys.argv[1], [float(x) for x in sys.argv[2].split(",")], [float(x) for x in sys.argv[3].split(",")]
with open(f"{folder}/metrics.jsonl", "w") as f:
    for i, loss in enumerate(losses):
        f.write(json.dumps({"step": i + 1, "loss": loss}) + "\n")
a, b = struct.pack("<2f", 1.0, 2.0), struct.pack(f"<{len(values)}f", *values)
header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F32", "shape": [len(values)], "data_offsets": [8, 8 + len(b)]}}).encode()
with open(f"{folder}/checkpoint-3/trainable.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + a + b)
EOF
}
fake_run "$dir/ref" 3.0,2.5,2.0 1,1,1,1
fake_run "$dir/same" 3.0,2.5,2.0 1,1,1,1
fake_run "$dir/near" 3.0,2.5,2.001 1,1,1,1.01
compare() { out=$(python3 scripts/compare_runs.py "$@" 2>&1); rc=$?; }
compare train "$dir/same" "$dir/ref" --steps 3 --exact
expect CompareRuns.IdenticalRunsAreBitIdentical eval '[ "$rc" = 0 ] && has "(bit-identical); weights" && has "0 over 2 tensors (bit-identical)"'
compare train "$dir/near" "$dir/ref" --steps 3 --exact
expect CompareRuns.ExactFailsOnAnyDifference eval '[ "$rc" = 1 ] && has "not bit-identical"'
compare train "$dir/near" "$dir/ref" --steps 3 --loss_rel 1e-3 --weights_rel 1e-2
# loss 2.001 vs 2.0: 5e-4 relative; weights: 0.01 / sqrt(1+4+4) = 3.3e-3 relative L2
expect CompareRuns.WithinTheBoundsPasses eval '[ "$rc" = 0 ] && has "max relative difference 0.0005" && has "relative L2 0.00333"'
compare train "$dir/near" "$dir/ref" --steps 3 --loss_rel 1e-4 --weights_rel 1e-2
expect CompareRuns.OutsideTheLossBoundFails eval '[ "$rc" = 1 ]'
compare train "$dir/near" "$dir/ref" --steps 4 --exact
expect CompareRuns.AMissingStepIsNamed eval '[ "$rc" = 2 ] && has "near/metrics.jsonl: 3 steps logged, expected 4"'
rm "$dir/near/checkpoint-3/trainable.safetensors"
compare train "$dir/near" "$dir/ref" --steps 3 --exact
expect CompareRuns.AMissingCheckpointIsNamed eval '[ "$rc" = 2 ] && has "near/checkpoint-3/trainable.safetensors"'
echo '{"perplexity": 12.5, "perplexity_token_weighted": 12.4, "loss": 2.5, "accuracy": 0.5, "num_windows": 4, "tokens_scored": 100, "world_size": 1}' > "$dir/one.json"
sed 's/"world_size": 1/"world_size": 2/' "$dir/one.json" > "$dir/two.json"
sed 's/"world_size": 1/"world_size": 2/; s/12.5/12.6/' "$dir/one.json" > "$dir/other.json"
compare eval "$dir/two.json" "$dir/one.json" --world_size 2
expect CompareRuns.EvalEqualOnTwoRanks eval '[ "$rc" = 0 ] && has "equal, world_size 2"'
compare eval "$dir/other.json" "$dir/one.json" --world_size 2
expect CompareRuns.EvalDifferenceIsNamed eval '[ "$rc" = 1 ] && has "perplexity 12.6 vs 12.5"'
compare eval "$dir/one.json" "$dir/one.json" --world_size 2
expect CompareRuns.EvalWrongWorldSizeIsNamed eval '[ "$rc" = 1 ] && has "world_size 1 (expected 2)"'

# --- the check script itself ---
out=$(DEVICE=gpu scripts/gpu_ranks_check.sh 2>&1); rc=$?
expect GpuRanksCheck.AnUnknownDeviceIsNamed eval '[ "$rc" = 2 ] && has "DEVICE must be cuda or cpu, got gpu"'
if [ ! -x build/train ] || ! command -v mpirun >/dev/null; then
  echo "[  SKIPPED ] 1 test: GpuRanksCheck.CpuRanks needs build/train and mpirun"
  finish
fi
check() { out=$(env DEVICE=cpu BUILD=0 OUT="$dir/out" "$@" scripts/gpu_ranks_check.sh 2>&1); rc=$?; }
# COMM= : CPU ranks communicate over MPI whatever --comm says.
check COMM= CHECKS="ranks offload repeat faults eval" RANKS=2 STAGES="0 3" MODES=full OFFLOADS="off on" FAULT_TIMEOUT=10
expect GpuRanksCheck.CpuRanksMatchOneRankBitIdenticalWhereTheyShould eval '[ "$rc" = 0 ] &&
  has "PASS ranks: 2 ranks ZeRO-3 full offload on vs 1 rank" && has "PASS offload: 2 ranks ZeRO-0 full on == off" &&
  has "PASS repeat: 2 ranks ZeRO-3 full offload off twice, bit-identical" && has "12 passed, 0 failed, 0 skipped"'
expect GpuRanksCheck.FaultsEndTheJob eval 'has "PASS faults: failing_rank" && has "PASS faults: hanging_rank" &&
  has "PASS faults: killed_rank"'
expect GpuRanksCheck.EvalOnTwoRanksEqualsOneRank eval 'has "PASS eval: mpirun -np 2 build/eval perplexity == -np 1"'
expect GpuRanksCheck.SummaryFirstAndEveryLogInTheArchive eval '[ "$(head -1 "$dir/out/summary.txt")" = "PASS/FAIL/SKIP lines:" ] &&
  [ "$(sed -n 2p "$dir/out/summary.txt" | cut -c1-5)" = "PASS " ] && [ "$(ls "$dir/out" | tr "\n" " ")" = "ranks-check.tgz summary.txt " ] &&
  tar -tzf "$dir/out/ranks-check.tgz" | grep -qx logs/np2_z3_full_on.log &&
  tar -tzf "$dir/out/ranks-check.tgz" | grep -qx runs/single_full_off/metrics.jsonl'
# A run that cannot start fails its check, naming the run and its error, and the script exits non-zero.
check COMM=nonsense CHECKS=ranks RANKS=2 STAGES=0 MODES=lora OFFLOADS=off
expect GpuRanksCheck.AFailedRunFailsItsCheck eval '[ "$rc" = 1 ] &&
  has "FAIL ranks: 2 ranks ZeRO-0 lora offload off vs 1 rank | run np2_z0_lora_off exited" && has "0 passed, 1 failed"'
finish
