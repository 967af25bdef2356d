#!/usr/bin/env bash
# Runs build/test_mpi under mpirun with 1, 2 and 4 CPU ranks (oversubscribed) and prints one GoogleTest-style
# summary for scripts/run_tests.sh: each (test, rank count) pair counts as one test.
set -u
bin=${MPI_TEST_BIN:-build/test_mpi}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
passed=0 failed=0
for np in 1 2 4; do
  echo "--- mpirun -np $np $bin"
  log=$(mktemp)
  timeout 900 mpirun --oversubscribe --bind-to none -np "$np" "$bin" --gtest_color=no 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n1)
  rm -f "$log"
  if [ "$rc" -ne 0 ] && [ -z "$f" ]; then f=1; fi
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
done
echo "[  PASSED  ] $passed tests."
if [ "$failed" -gt 0 ]; then echo "[  FAILED  ] $failed tests, listed above."; exit 1; fi
