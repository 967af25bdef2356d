#!/usr/bin/env bash
# scripts/run_tests.sh on fake test binaries: how it counts, when it counts a failure of its own, the last line.
# Arguments are ignored (run_tests.sh passes --gtest_color=no).
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/scripts/report.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

fake() {  # name, exit code, body (shell lines printing what the binary prints)
  printf '#!/usr/bin/env bash\n%s\nexit %s\n' "$3" "$2" > "$dir/$1"
  chmod +x "$dir/$1"
}
fake ok 0 'echo "[==========] 3 tests ran."; echo "[  PASSED  ] 3 tests."'
fake skips 0 'echo "[  PASSED  ] 2 tests."; echo "[  SKIPPED ] 1 test, listed below:"; echo "[  SKIPPED ] A.b"'
# Three runs of one binary (as tests/mpi/run_mpi_tests.sh does for 1, 2 and 4 ranks), 7 skips in each.
fake three_runs 0 'for np in 1 2 4; do echo "[  PASSED  ] 4 tests."; echo "[  SKIPPED ] 7 tests, listed below:"; done'
fake fails 1 'echo "[  PASSED  ] 5 tests."; echo "[  FAILED  ] 2 tests, listed below:"; echo "[  FAILED  ] A.b"'
fake exits_3 3 'echo "[  PASSED  ] 6 tests."'
fake crashes 139 'echo "[ RUN      ] A.b"'
fake hangs 0 'echo "[ RUN      ] A.b"; sleep 60'
fake tmpdir 0 'd=${TEST_TMPDIR%/}; [ -d "$d" ] && [ -z "$(ls -A "$d")" ] && touch "$d/used" && echo "$d" >> '"$dir"'/tmpdirs &&
  echo "[  PASSED  ] 1 test."'
fake sleeper 0 'echo $$ > '"$dir"'/sleeper.pid; exec sleep 60'
fake args 0 'if [ "$1" = --gtest_color=no ] && [ "${SHARD:-}" = 1 ]; then echo "[  PASSED  ] 1 test."; fi'

run() { out=$(TEST_TIMEOUT=${TIMEOUT:-60} scripts/run_tests.sh "$@" 2>&1); rc=$?; }

run "$dir/ok" "$dir/skips"
expect RunTests.AddsUpBinaries eval '[ "$rc" = 0 ] && last_line_is "5 passed, 0 failed" && has "1 skipped"'
run "$dir/three_runs"
expect RunTests.CountsEverySummaryBlockOfABinary eval 'has "21 skipped" && last_line_is "12 passed, 0 failed"'
run "$dir/ok" "$dir/fails"
expect RunTests.FailedTestsFailTheRun eval '[ "$rc" != 0 ] && last_line_is "8 passed, 2 failed"'
run "$dir/exits_3"
expect RunTests.ANonZeroExitWithoutFailedTestsIsOneFailure \
  eval '[ "$rc" != 0 ] && last_line_is "6 passed, 1 failed" && has "$dir/exits_3 exited with code 3"'
run "$dir/crashes" "$dir/ok"
expect RunTests.NoSummaryIsOneFailure \
  eval '[ "$rc" != 0 ] && last_line_is "3 passed, 1 failed" && has "$dir/crashes printed no test summary (exit code 139)"'
start=$SECONDS
TIMEOUT=1 run "$dir/hangs" "$dir/ok"
expect RunTests.ABinaryPastTheTimeoutIsStoppedAndOneFailure \
  eval '[ "$rc" != 0 ] && [ $((SECONDS - start)) -lt 30 ] && last_line_is "3 passed, 1 failed" &&
        has "$dir/hangs ran past TEST_TIMEOUT=1s"'
run "SHARD=1 $dir/args"
expect RunTests.EnvironmentAssignmentsBeforeTheBinary eval '[ "$rc" = 0 ] && last_line_is "1 passed, 0 failed"'
out=$(TEST_JOBS=2 TEST_TIMEOUT=60 scripts/run_tests.sh "$dir/fails" "$dir/three_runs" "$dir/ok" 2>&1); rc=$?
expect RunTests.ParallelJobsPrintEachLogInOrderAndTheSummaryLast \
  eval '[ "$rc" != 0 ] && last_line_is "20 passed, 2 failed" && has "21 skipped" &&
        [ "$(grep "^=== " <<< "$out" | tr "\n" " ")" = "=== $dir/fails === $dir/three_runs === $dir/ok " ]'
rm -f "$dir/tmpdirs"
out=$(TEST_JOBS=2 scripts/run_tests.sh "$dir/tmpdir" "$dir/tmpdir" 2>&1); rc=$?
expect RunTests.EachBinaryGetsAnEmptyScratchDirectoryOfItsOwnRemovedAfterwards \
  eval '[ "$rc" = 0 ] && [ "$(sort -u "$dir/tmpdirs" | wc -l)" = 2 ] && ! ls -d $(cat "$dir/tmpdirs") 2>/dev/null'
for jobs in 1 2; do
  rm -f "$dir/sleeper.pid"
  TEST_JOBS=$jobs scripts/run_tests.sh "$dir/sleeper" > /dev/null 2>&1 &
  runner=$!
  for _ in $(seq 100); do [ -s "$dir/sleeper.pid" ] && break; sleep 0.1; done
  start=$SECONDS
  kill -TERM "$runner"
  wait "$runner"
  rc=$?
  took=$((SECONDS - start))
  sleep 0.5
  out="runner exit code $rc after ${took}s; sleeper pid $(cat "$dir/sleeper.pid" 2>/dev/null)"
  expect "RunTests.StoppingTheRunnerStopsTheBinary/jobs$jobs" \
    eval '[ "$rc" = 143 ] && [ "$took" -lt 10 ] && [ -s "$dir/sleeper.pid" ] && ! kill -0 "$(cat "$dir/sleeper.pid")" 2>/dev/null'
done
run
expect RunTests.NothingToRun eval '[ "$rc" = 0 ] && last_line_is "0 passed, 0 failed"'
finish
