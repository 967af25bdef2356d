#!/usr/bin/env bash
# Runs test binaries — GoogleTest binaries, or scripts that report like one — and ends with one line
# "N passed, M failed" (skipped tests are counted on the line above it, each skip prints its reason in the log).
# Every summary block a binary prints counts: wrappers such as tests/mpi/run_mpi_tests.sh run a binary several times,
# so the numbers of all its "[  PASSED  ] N tests", "[  FAILED  ] N tests" and "[  SKIPPED ] N tests" lines add up.
# Besides failed tests, one failure is counted, with a line "!!! ..." naming the binary, for a binary that
#   - runs longer than TEST_TIMEOUT seconds (default 1200): stopped with SIGTERM, SIGKILL 30 s later;
#   - exits non-zero although it reported no failed test (a crash after the summary, a failed teardown, ...);
#   - prints no summary at all.
# Exits non-zero when anything failed.
#
# An argument is a binary, optionally preceded by environment assignments for it, in one word-split string:
#   scripts/run_tests.sh build/test_all "GTEST_TOTAL_SHARDS=2 GTEST_SHARD_INDEX=0 build/asan/test_all"
# TEST_JOBS=N (default 1) runs up to N of them at once; each one's output is printed in one piece when it ends.
# Each binary gets a scratch directory of its own as TEST_TMPDIR (GoogleTest's TempDir()), removed afterwards, so
# binaries running at once never share a test's fixed scratch path. Stopping this script (SIGINT, SIGTERM) stops the
# binaries too (`timeout` runs each in a process group of its own, which the terminal's Ctrl-C does not reach).
set -u
timeout_s=${TEST_TIMEOUT:-1200}
jobs=${TEST_JOBS:-1}
work=$(mktemp -d)
stop_binaries() {  # $work/N.pid: the process group of a running binary's `timeout`
  local f pid
  for f in "$work"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  done
}
trap 'rm -rf "$work"' EXIT
trap 'stop_binaries; exit 130' INT
trap 'stop_binaries; exit 143' TERM

# run_one INDEX SPEC STREAM: runs one binary, its output into $work/INDEX.log (also shown as it comes when STREAM is
# 1); writes "passed failed skipped" to $work/INDEX.counts.
run_one() {
  local i=$1 spec=$2 stream=$3
  local log="$work/$i.log" tmp="$work/$i.tmp" rc p f s summaries
  local -a words
  read -r -a words <<< "$spec"
  note() { echo "$*" >> "$log"; if [ "$stream" = 1 ]; then echo "$*"; fi; }
  : > "$log"
  mkdir -p "$tmp"
  note "=== $spec"
  timeout --signal=TERM --kill-after=30 "$timeout_s" env TEST_TMPDIR="$tmp/" "${words[@]}" --gtest_color=no \
    >> "$log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$work/$i.pid"
  # Shown as it comes: line 1 (the header) is out already. In the background, so that a signal's trap runs at once.
  if [ "$stream" = 1 ]; then tail -s 0.2 -n +2 -f --pid="$pid" "$log" & fi
  wait "$pid"
  rc=$?
  if [ "$stream" = 1 ]; then wait $!; fi  # tail ends within 0.2 s of the binary
  rm -f "$work/$i.pid"
  count() { sed -n "s/^\[  $1 *\] \([0-9][0-9]*\) test.*/\1/p" "$log" | awk '{n += $1} END {print n + 0}'; }
  p=$(count PASSED) f=$(count FAILED) s=$(count SKIPPED)
  summaries=$(grep -c -E '^\[  (PASSED|FAILED) +\] [0-9]+ test' "$log")
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    note "!!! $spec ran past TEST_TIMEOUT=${timeout_s}s and was stopped (exit code $rc): counted as one failure"
    f=$((f + 1))
  elif [ "$summaries" -eq 0 ]; then
    note "!!! $spec printed no test summary (exit code $rc): counted as one failure"
    f=$((f + 1))
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    note "!!! $spec exited with code $rc although it reported no failed test: counted as one failure"
    f=1
  fi
  rm -rf "$tmp"
  echo "$p $f $s" > "$work/$i.counts"
}

i=0
running=0
for spec in "$@"; do
  i=$((i + 1))
  if [ "$jobs" -le 1 ]; then
    run_one "$i" "$spec" 1
  else
    run_one "$i" "$spec" 0 &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  fi
done
if [ "$jobs" -gt 1 ]; then
  wait
  for n in $(seq "$i"); do cat "$work/$n.log"; done
fi

passed=0 failed=0 skipped=0
for n in $(seq "$i"); do
  read -r p f s < "$work/$n.counts"
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
echo "$skipped skipped (each skip prints its reason above)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
