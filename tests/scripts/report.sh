# shellcheck shell=bash
# Sourced by the shell tests in tests/scripts/: GoogleTest-style reporting, so scripts/run_tests.sh counts them.
#   expect NAME COMMAND...   one test: passes when COMMAND succeeds, else prints what was captured in $out
#   finish                   prints the summary block and exits 0 / 1
# Output of the code under test goes only into $out, indented, so its own summary lines never count here.
passed=0 failed=0 failed_names=()
out=""
expect() {
  local name=$1; shift
  if "$@"; then
    echo "[       OK ] $name"
    passed=$((passed + 1))
  else
    echo "[  FAILED  ] $name: $*"
    printf '%s\n' "$out" | sed 's/^/    | /'
    failed=$((failed + 1))
    failed_names+=("$name")
  fi
}
finish() {
  echo "[  PASSED  ] $passed tests."
  if [ "$failed" -gt 0 ]; then
    echo "[  FAILED  ] $failed tests, listed below:"
    printf '[  FAILED  ] %s\n' "${failed_names[@]}"
    exit 1
  fi
  exit 0
}
has() { grep -qF -- "$1" <<< "$out"; }             # the captured output contains this text
lacks() { ! grep -qF -- "$1" <<< "$out"; }
last_line_is() { [ "$(tail -n1 <<< "$out")" = "$1" ]; }
