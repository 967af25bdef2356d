#!/usr/bin/env bash
# scripts/setup.sh against stand-ins for id, dpkg-query, apt-get, sudo, nvcc and python3/pip on a PATH that holds
# nothing else (plus the few coreutils the scripts use): what it installs, as whom, and that it does nothing — not
# even apt-get update — when everything is there. Arguments are ignored (run_tests.sh passes --gtest_color=no).
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/scripts/report.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin" "$dir/cuda"

for tool in bash env dirname ls cat grep sed mkdir chmod touch; do ln -s "$(command -v "$tool")" "$dir/bin/$tool"; done
stub() {  # name, body; every call is logged as "name args" to $dir/calls
  printf '#!%s\necho "%s $*" >> "%s/calls"\n%s\n' "$(command -v bash)" "$1" "$dir" "$2" > "$dir/bin/$1"
  chmod +x "$dir/bin/$1"
}
stub id '[ "$1" = -u ] && echo "${FAKE_UID:-0}"'
# dpkg-query -W -f=... PACKAGE: "installed" unless the package is listed in $FAKE_MISSING
stub dpkg-query 'p=${!#}; [[ " ${FAKE_MISSING:-} " == *" $p "* ]] && exit 1; printf installed'
stub apt-get 'exit 0'
# python3 -m pip --version | install ... --target DIR ...: the wheels' layout; python3 - (find_cuobjdump.sh): no wheels
stub python3 'if [ "$1" = - ]; then cat > /dev/null; exit 0; fi
[ "$1 $2" = "-m pip" ] || exit 2
[ "$3" = --version ] && { [ -n "${FAKE_NO_PIP:-}" ] && exit 1; exit 0; }
while [ $# -gt 0 ]; do [ "$1" = --target ] && target=$2; shift; done
mkdir -p "$target/nvidia/cu13/bin" && touch "$target/nvidia/cu13/bin/cuobjdump" "$target/nvidia/cu13/bin/nvdisasm" &&
chmod +x "$target/nvidia/cu13/bin/cuobjdump" "$target/nvidia/cu13/bin/nvdisasm"'
sudo_stub() { stub sudo 'exec "$@"'; }
nvcc_stub() { stub nvcc 'exit 0'; }

setup() {  # runs scripts/setup.sh with the stand-ins; $out: its output, $rc, $calls: the commands it ran
  rm -f "$dir/calls"
  out=$(env -i PATH="$dir/bin" HOME="$dir" CUDA_HOME="$dir/cuda" LONGLORA_TOOLS="$dir/tools" "$@" \
        "$(command -v bash)" scripts/setup.sh 2>&1)
  # shellcheck disable=SC2034  # read by the expectations (eval)
  rc=$?
  calls=$(grep -v '^\(id \|dpkg-query \|python3 -$\)' "$dir/calls" 2>/dev/null)
  out="$out
--- commands run:
$calls"
}
ran() { grep -qxF -- "$1" <<< "$calls"; }
ran_none() { ! grep -q "^$1" <<< "$calls"; }

setup
expect Setup.NothingMissingRunsNoAptGetAtAll eval '[ "$rc" = 0 ] && has "nothing to install" && [ -z "$calls" ]'

setup FAKE_MISSING="libgtest-dev clang"
expect Setup.AsRootInstallsWhatIsMissingWithoutSudo \
  eval '[ "$rc" = 0 ] && ran "apt-get update" && ran_none sudo &&
        ran "apt-get install -y --no-install-recommends libgtest-dev clang"'

setup FAKE_MISSING="clang" FAKE_UID=1000
expect Setup.NotRootWithoutSudoSaysWhatToDo \
  eval '[ "$rc" != 0 ] && has "run this script as root" && has "clang" && ran_none apt-get'

sudo_stub
setup FAKE_MISSING="clang" FAKE_UID=1000
expect Setup.NotRootUsesSudo \
  eval '[ "$rc" = 0 ] && ran "sudo apt-get update" && ran "apt-get update" &&
        ran "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang"'
setup FAKE_UID=1000
expect Setup.NotRootNothingMissingRunsNoSudo eval '[ "$rc" = 0 ] && [ -z "$calls" ]'
rm -f "$dir/bin/sudo"

nvcc_stub
setup
expect Setup.WithNvccInstallsTheDisassemblerWheelsIntoTheToolsDirectory \
  eval '[ "$rc" = 0 ] && ran_none apt-get && grep -q "^python3 -m pip install .*--target $dir/tools nvidia-cuda-cuobjdump" <<< "$calls" &&
        [ -x "$dir/tools/nvidia/cu13/bin/cuobjdump" ]'
setup
expect Setup.WithNvccAndTheWheelsInstalledDoesNothing eval '[ "$rc" = 0 ] && has "nothing to install" && [ -z "$calls" ]'
rm -rf "$dir/tools"
setup FAKE_NO_PIP=1 FAKE_MISSING=python3-pip
expect Setup.WithNvccAndNoPipInstallsPipFirst \
  eval '[ "$rc" = 0 ] && ran "apt-get install -y --no-install-recommends python3-pip" && grep -q "^python3 -m pip install" <<< "$calls"'
finish
