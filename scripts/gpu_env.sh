# shellcheck shell=bash disable=SC2034  # sets variables for the sourcing script
# Sourced (not run) by scripts/gpu_check.sh and scripts/gpu_ranks_check.sh on a GPU machine (nvidia-smi found), from
# the project root, after `say` is defined. Sets:
#   card       the first GPU's name, driver and memory (nvidia-smi), for the summary's first line
#   arch       its SM version (90 for sm_90): the build's CUDA_ARCH
#   make_vars  the make variables the build needs here: DEPS=/opt/deps when the Debian libraries came as .debs
#              (no sentencepiece header on the machine), NCCL_HOME when nccl.h is not under CUDA_HOME but the
#              NCCL wheel (nvidia-nccl-cu13, PyTorch's) is importable
#   stamp      what build/ was built for: the two scripts reuse each other's build/ when it matches, and start
#              clean when it does not (objects built with other flags or headers have failed to link)
# and unpacks .gpudeps (../shared/gpu/unpack-debs.sh: the libraries and Open MPI) into /opt/deps when the
# sentencepiece header or mpirun is missing, exporting the environment it prints (PATH gets mpicxx/mpirun).
card=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
make_vars=()
if { [ ! -f /usr/include/sentencepiece_processor.h ] || ! command -v mpirun >/dev/null; } && [ -d .gpudeps ]; then
  eval "$(bash .gpudeps/unpack-debs.sh)"
  say "Debian libraries unpacked from .gpudeps into /opt/deps; mpirun: $(command -v mpirun || echo none)"
fi
[ -f /usr/include/sentencepiece_processor.h ] || [ ! -d /opt/deps/usr/include ] || make_vars+=(DEPS=/opt/deps)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # the lent machines run commands as root

# NCCL from the wheel: the Makefile wants NCCL_HOME/include/nccl.h and NCCL_HOME/lib/libnccl.so (the wheel ships
# only libnccl.so.2), so the build links to a folder of symbolic links made below, after build/ is settled.
nccl_wheel=
if [ ! -f "${CUDA_HOME:-/usr/local/cuda}/include/nccl.h" ]; then
  header=
  for d in $(python3 -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null); do  # a namespace package
    [ -n "$header" ] || header=$(find "$d" -name nccl.h -path '*include*' 2>/dev/null | head -1)
  done
  [ -n "$header" ] && nccl_wheel=$(dirname "$(dirname "$header")")
fi
stamp="sm_$arch ${make_vars[*]:-system} mpi:$(command -v mpicxx >/dev/null && echo yes || echo no) nccl:${nccl_wheel:-cuda}"

# build/ as the build wants it: kept when it was built for this configuration (`stamp`, then the optional note,
# e.g. MPI=0), else removed — a warm machine keeps build/ between calls, and objects built with other flags or
# headers (another session's run without DEPS, say) have failed to link against these (nlohmann's ABI namespace
# differs between versions). Then records what it is built for.
settle_build() {  # [note]
  local want="$stamp${1:+ $1}"
  [ "$(cat build/.gpu_check_stamp 2>/dev/null)" = "$want" ] || rm -rf build
  mkdir -p build && echo "$want" > build/.gpu_check_stamp
}

# Call after build/ is settled (it may have been removed for a stale stamp).
link_nccl_wheel() {
  [ -n "$nccl_wheel" ] || return 0
  local lib
  lib=$(find "$nccl_wheel" -name 'libnccl.so*' | head -1)
  [ -n "$lib" ] || { say "NCCL wheel at $nccl_wheel has no libnccl.so: building without NCCL"; return 0; }
  mkdir -p build/nccl-wheel/lib
  ln -sfn "$nccl_wheel/include" build/nccl-wheel/include
  ln -sfn "$lib" build/nccl-wheel/lib/libnccl.so
  ln -sfn "$lib" build/nccl-wheel/lib/libnccl.so.2
  make_vars+=(NCCL_HOME="$PWD/build/nccl-wheel")
  say "NCCL from the Python wheel: $nccl_wheel"
}
