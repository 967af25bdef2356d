#!/usr/bin/env bash
# Runs GoogleTest binaries and ends with one line "N passed, M failed" (skipped tests are listed above it).
# Exits non-zero when any test fails or a binary crashes.
set -u
passed=0 failed=0 skipped=0 status=0
for bin in "$@"; do
  echo "=== $bin"
  log=$(mktemp)
  "$bin" --gtest_color=no 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n1)
  s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -n1)
  rm -f "$log"
  if [ -z "$p" ] && [ -z "$f" ]; then
    echo "!!! $bin did not finish (exit code $rc): counted as one failure"
    f=1
  fi
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
  [ "$rc" -ne 0 ] && status=1
done
[ "$failed" -gt 0 ] && status=1
echo "$skipped skipped (each skip prints its reason above)"
echo "$passed passed, $failed failed"
exit $status
