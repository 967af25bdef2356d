#!/usr/bin/env bash
# Prints the path of a cuobjdump that has nvdisasm beside it or on PATH (cuobjdump -sass runs nvdisasm), or exits 1.
# Looked for, in order: $CUOBJDUMP, PATH, $CUDA_HOME/bin, the wheels scripts/setup.sh installs under
# $LONGLORA_TOOLS (default .tools/ in the repository), and NVIDIA's PyPI wheels in python3's environment
# (nvidia-cuda-cuobjdump + nvidia-cuda-nvdisasm put both into nvidia/cu*/bin/).
# Used by scripts/setup.sh (install the wheels only when none is found) and scripts/check_sass.sh.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
tools=${LONGLORA_TOOLS:-$root/.tools}

if [ -n "${CUOBJDUMP:-}" ]; then  # chosen explicitly: that one or nothing
  [ -x "$CUOBJDUMP" ] && [ ! -d "$CUOBJDUMP" ] && echo "$CUOBJDUMP" && exit 0
  echo "CUOBJDUMP=$CUOBJDUMP is not an executable file" >&2
  exit 1
fi

candidates() {
  command -v cuobjdump 2>/dev/null
  echo "${CUDA_HOME:-/usr/local/cuda}/bin/cuobjdump"
  ls "$tools"/nvidia/cu*/bin/cuobjdump 2>/dev/null
  local py
  for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    "$py" - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
for base in nvidia.__path__:
    for p in sorted(glob.glob(os.path.join(base, "cu*", "bin", "cuobjdump"))):  # cu13/, cuda_cuobjdump/
        print(p)
PY
  done
}

while IFS= read -r c; do
  [ -n "$c" ] && [ -x "$c" ] && [ ! -d "$c" ] || continue
  if [ -x "$(dirname "$c")/nvdisasm" ] || command -v nvdisasm >/dev/null 2>&1; then
    echo "$c"
    exit 0
  fi
done < <(candidates)
exit 1
