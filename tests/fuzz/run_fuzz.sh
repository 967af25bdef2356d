#!/usr/bin/env bash
# Runs the safetensors libFuzzer target for a fixed time and reports the result the way a GoogleTest binary does
# ("[  PASSED  ] 1 test." / "[  FAILED  ] 1 test"), so scripts/run_tests.sh counts it as one test (`make check`).
# Arguments are ignored (run_tests.sh passes --gtest_color=no); settings come from the environment:
#   FUZZ_BIN      the fuzzer (default build/fuzz/fuzz_safetensors, built by `make fuzz-build`)
#   FUZZ_SECONDS  how long to fuzz (default 30)
#   FUZZ_WORK     scratch directory (default build/fuzz/run): the seed corpus is COPIED there, so
#                 tests/fuzz/corpus_safetensors/ is never written; the full log and any crash input land there too.
set -u
cd "$(dirname "$0")/../.."
bin=${FUZZ_BIN:-build/fuzz/fuzz_safetensors}
seconds=${FUZZ_SECONDS:-30}
work=${FUZZ_WORK:-build/fuzz/run}

echo "[==========] libFuzzer: $bin for ${seconds}s on a copy of tests/fuzz/corpus_safetensors"
if [ ! -x "$bin" ]; then
  echo "fuzzer $bin was not built (needs clang++ and libclang-rt-14-dev, which scripts/setup.sh installs; build it with make fuzz-build)"
  echo "[  FAILED  ] 1 test, listed below:"
  exit 1
fi
rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts" || exit 1
cp tests/fuzz/corpus_safetensors/* "$work/corpus/"
log="$work/fuzz.log"
"$bin" -max_total_time="$seconds" -dict=tests/fuzz/safetensors.dict -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" >"$log" 2>&1
rc=$?
grep -E '^(INFO: seed corpus|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|stat::peak_rss_mb)' "$log"
if [ "$rc" -eq 0 ]; then
  echo "[  PASSED  ] 1 test."
  exit 0
fi
echo "--- fuzzer exit code $rc; last lines of $log:"
tail -n 60 "$log"
echo "--- reproduce with: $bin $work/artifacts/<crash-file>"
ls -l "$work/artifacts/"
echo "[  FAILED  ] 1 test, listed below:"
exit 1
