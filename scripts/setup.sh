#!/usr/bin/env bash
# Installs what building and testing needs, and does nothing (no apt-get update either) when all of it is there:
#  - the Debian packages, with apt-get (through sudo only when not root);
#  - when nvcc is present: cuobjdump + nvdisasm for the SASS check of `make check`, from NVIDIA's PyPI wheels
#    (pip --target $LONGLORA_TOOLS, default .tools/; scripts/find_cuobjdump.sh finds them there), unless a usable
#    cuobjdump is already installed. The CUDA toolkit itself is not installed here.
# README's set-up command and .ci/run both run it.
#   SETUP_DRY_RUN=1   print the commands instead of running them
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential make libopenblas-openmp-dev nlohmann-json3-dev libgtest-dev libsentencepiece-dev sentencepiece
          libpcre2-dev libutf8proc-dev  # tokenizer.json files: their regexes (PCRE2, JIT) and Unicode normalization
          poppler-utils                 # pdftotext: PDF input to the tokenize job and eval generate --material
          libcpp-httplib-dev            # build/serve's HTTP server (cpp-httplib)
          chromium python3              # the web page's test in a real browser (headless Chromium, driven from Python)
          clang libclang-rt-14-dev     # clang + libFuzzer runtime: the safetensors fuzz target of `make check`
          libopenmpi-dev openmpi-bin)  # multi-rank support and its tests under mpirun
sass_wheels=(nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37)
tools=${LONGLORA_TOOLS:-$PWD/.tools}

say() { echo "setup: $*"; }
run() {
  if [ "${SETUP_DRY_RUN:-0}" = 1 ]; then echo "+ $*"; else "$@"; fi
}
as_root() {  # a command that needs root: directly as root, else through sudo
  if [ "$(id -u)" -eq 0 ]; then
    run "$@"
  elif command -v sudo >/dev/null 2>&1; then
    run sudo "$@"
  else
    say "installing needs root and sudo is not installed: run this script as root, or install yourself: ${missing[*]}" >&2
    exit 1
  fi
}
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
have_nvcc() { command -v nvcc >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; }

need_sass_tools=0
if have_nvcc && ! scripts/find_cuobjdump.sh >/dev/null 2>&1; then
  need_sass_tools=1
  command -v python3 >/dev/null 2>&1 || packages+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
else
  say "no dpkg here: cannot check the Debian packages (${packages[*]}); on a machine without apt see DEPS= in README.md" >&2
fi
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || { say "apt-get not found; install yourself: ${missing[*]}" >&2; exit 1; }
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [ "$need_sass_tools" = 1 ]; then
  say "installing cuobjdump + nvdisasm for the SASS check into $tools: ${sass_wheels[*]}"
  # --target installs outside any Python environment (also where the system Python is externally managed).
  run env PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$tools" "${sass_wheels[@]}"
  if [ "${SETUP_DRY_RUN:-0}" != 1 ] && ! scripts/find_cuobjdump.sh >/dev/null; then
    say "cuobjdump + nvdisasm still not found after installing the wheels into $tools" >&2
    exit 1
  fi
fi

if [ "${#missing[@]}" -eq 0 ] && [ "$need_sass_tools" = 0 ]; then say "nothing to install"; fi
