#!/usr/bin/env bash
# SASS check: disassembles the attention object (cuobjdump -sass) for every architecture it was built for and fails
# unless each tensor-core attention kernel (forward, dQ, dK/dV; head dims 64 and 128) contains HMMA instructions,
# and, where the archs include 90, unless the wgmma forward (SASS_WGMMA_OBJ, sm_90a) contains HGMMA instructions.
# Reports like a one-test GoogleTest binary ("[  PASSED  ] 1 test." / "[  FAILED  ] 1 test"), so
# scripts/run_tests.sh counts it in `make check`. Arguments are ignored (run_tests.sh passes --gtest_color=no).
#   SASS_OBJ    the object to check (default build/obj/cuda/attention.o)
#   SASS_ARCHS  SM versions it must hold, space-separated (default "80 90")
#   SASS_CUDA   0: this build has no CUDA, the check is skipped (reported as skipped)
#   SASS_WGMMA_OBJ  the wgmma forward's object (default: attention_wgmma.o next to SASS_OBJ)
#   CUOBJDUMP   the cuobjdump binary (default: the one scripts/find_cuobjdump.sh finds — PATH, $CUDA_HOME/bin, or
#               NVIDIA's PyPI wheels, which scripts/setup.sh installs when nvcc is present)
set -u
cd "$(dirname "$0")/.."
obj=${SASS_OBJ:-build/obj/cuda/attention.o}
archs=${SASS_ARCHS:-80 90}

echo "[==========] SASS check: HMMA in the tensor-core attention kernels of $obj (sm: $archs)"
if [ "${SASS_CUDA:-1}" = "0" ]; then
  echo "[  SKIPPED ] this build has no CUDA (nvcc not found): no kernels to disassemble"
  echo "[  SKIPPED ] 1 test"
  echo "[  PASSED  ] 0 tests."
  exit 0
fi

fail() {
  echo "$1"
  echo "[  FAILED  ] 1 test, listed below:"
  echo "[  FAILED  ] SassCheck.HmmaInTensorCoreAttention"
  exit 1
}

cuobjdump=$(scripts/find_cuobjdump.sh) ||
  fail "cuobjdump + nvdisasm not found: run scripts/setup.sh (installs NVIDIA's wheels nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm), or set CUOBJDUMP"
# cuobjdump -sass runs nvdisasm; the wheels put both in one directory.
export PATH="$(dirname "$cuobjdump"):$PATH"
[ -f "$obj" ] || fail "$obj does not exist: build first (make all)"
echo "cuobjdump: $cuobjdump ($("$cuobjdump" --version 2>/dev/null | tail -n1))"

kernels="attention_forward_tc_kernelILi64 attention_forward_tc_kernelILi128 attention_dq_tc_kernelILi64 \
attention_dq_tc_kernelILi128 \
attention_dkdv_tc_kernelILi64 attention_dkdv_tc_kernelILi128"
problems=""
for arch in $archs; do
  sass=$("$cuobjdump" -sass -arch "sm_$arch" "$obj" 2>&1) || fail "cuobjdump -sass -arch sm_$arch failed: $sass"
  # HMMA count per function ("Function : <mangled name>" starts each one).
  counts=$(printf '%s\n' "$sass" | awk '/Function : /{fn=$NF} /HMMA/{n[fn]++} END{for (f in n) print f, n[f]}')
  total=$(printf '%s\n' "$sass" | grep -c 'HMMA')
  echo "sm_$arch: $total HMMA instructions in $(basename "$obj")"
  for k in $kernels; do
    c=$(printf '%s\n' "$counts" | awk -v k="$k" 'index($1, k) {s += $2} END {print s + 0}')
    echo "  sm_$arch ${k%ILi*} (Dh ${k##*ILi}): $c HMMA"
    [ "$c" -gt 0 ] || problems="$problems sm_$arch:${k%ILi*}/Dh${k##*ILi}"
  done
done
wgmma_obj=${SASS_WGMMA_OBJ:-$(dirname "$obj")/attention_wgmma.o}
if [[ " $archs " == *" 90 "* ]]; then
  sass=$("$cuobjdump" -sass -arch sm_90a "$wgmma_obj" 2>&1) || fail "cuobjdump -sass -arch sm_90a $wgmma_obj failed: $sass"
  c=$(printf '%s\n' "$sass" | grep -c 'HGMMA')
  echo "sm_90a: $c HGMMA instructions in $(basename "$wgmma_obj") (the wgmma forward and dQ pass)"
  [ "$c" -gt 0 ] || problems="$problems sm_90a:attention_wgmma.o"
fi
[ -z "$problems" ] || fail "no tensor-core instructions in:$problems"
echo "[  PASSED  ] 1 test."
exit 0
