# longlora build. `make` builds the library, the binaries and the test suite into $(BUILD)/.
#   make demo     build and run the embedded CPU demo (build/train with no flags)
#   make test     build and run the tests (normal build)
#   make asan     build and run the tests under AddressSanitizer + UndefinedBehaviorSanitizer (CPU only, -Og -g1)
#   make fuzz     build the libFuzzer target for the safetensors parser (clang) and run it for FUZZ_SECONDS (30)
#   make check    all three plus the SASS check, the MPI and the scripts' tests, with one "N passed, M failed"
#                 summary (what CI runs; the fuzz run and the SASS check count as one test each); CHECK_JOBS (2)
#                 test binaries at once
#   make sass     disassemble the attention kernels (cuobjdump -sass) and fail unless HMMA is there for every arch
#   CUDA=0|1      force the CUDA translation units off/on (default: on when nvcc is found)
#   CUDA_ARCH     space-separated SM versions to compile for (default: 80 90)
#   MPI=0|1       force multi-rank support off/on (default: on when mpicxx is found); build/test_mpi runs under mpirun
#   NCCL=0|1      force the NCCL communicator off/on (default: on with CUDA=1, MPI=1 and $(CUDA_HOME)/include/nccl.h,
#                 or NCCL_HOME/include/nccl.h); links -lnccl from $(NCCL_HOME)/lib or $(CUDA_HOME)/lib64
#   DEPS=PREFIX   the Debian libraries unpacked under PREFIX (dpkg -x) instead of installed: GPU machines without apt

BUILD     ?= build
CXX       ?= g++
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(shell command -v nvcc 2>/dev/null || { test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc; })
CUDA      ?= $(if $(NVCC),1,0)
CUDA_ARCH ?= 80 90
SAN       ?= 0

CPPFLAGS  := -Isrc -I. -MMD -MP
# OPT: optimisation and debug information. The sanitizer build (SAN=1) uses -Og -g1 (line tables: file:line in every
# report): ASan + UBSan at -O2 -g made that build the slowest step of `make check` (a test file compiled 4× slower
# than at -Og -g1, and 3.4× slower than in the normal build), and optimising only removes accesses the sanitizers
# would check. TEST_OPT: the test sources (tests/), which check the library rather than being it, compile at -Og in
# both builds (a test file 1.6-3× faster than at -O2; the library's code and results do not change).
OPT       := $(if $(filter 1,$(SAN)),-Og -g1,-O2 -g)
TEST_OPT  := $(if $(filter 1,$(SAN)),-Og -g1,-Og -g)
# -ffp-contract=off: no fused multiply-adds the source does not write, so the CPU kernels compiled per instruction
# set (src/cpu/vector_math.h, LL_VECTOR_CLONES) give the same bits on AVX-512, AVX2 and baseline x86-64 machines.
CXXFLAGS   = -std=c++17 $(OPT) -Wall -Wextra -fopenmp -ffp-contract=off
LDFLAGS   := -fopenmp
# OpenBLAS built on OpenMP shares our OpenMP thread pool; the pthread build's threads would fight libgomp's
# spinning workers for the cores (measured: 80% of CPU time spent spinning). Fall back to the default build.
# DEPS=/opt/deps: the Debian libraries unpacked under a prefix instead of installed (a GPU machine without a package
# registry; ../shared/gpu/README.md and scripts/gpu_check.sh).
DEPS      ?=
DEPS_LIB  := $(DEPS)/usr/lib/x86_64-linux-gnu
ifneq ($(DEPS),)
  CPPFLAGS += -I$(DEPS)/usr/include
  LDFLAGS  += -L$(DEPS_LIB) -Wl,-rpath,$(DEPS_LIB)
endif
OPENBLAS_OMP := $(DEPS_LIB)/openblas-openmp
ifneq ($(wildcard $(OPENBLAS_OMP)/libopenblas.so),)
  BLAS_LIBS := -L$(OPENBLAS_OMP) -Wl,-rpath,$(OPENBLAS_OMP) -lopenblas
  CPPFLAGS  += -I$(DEPS)/usr/include/x86_64-linux-gnu/openblas-openmp
else
  BLAS_LIBS := -lopenblas
endif
# PCRE2 (8-bit, with its JIT) and utf8proc: tokenizer.json regexes and Unicode normalization (src/data/regex.h, unicode.h).
LDLIBS    := -lsentencepiece_train -lsentencepiece -lpcre2-8 -lutf8proc $(BLAS_LIBS) -lpthread
ifeq ($(SAN),1)
  CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS  += -fsanitize=address,undefined
endif

# cuda/*.cpp is the CUDA backend's host-side planning and validation: plain C++, built (and tested) with or without nvcc.
LIB_SRCS  := $(filter-out src/bin/%,$(shell find src mpi -name '*.cpp' | sort)) $(sort $(wildcard cuda/*.cpp))
BIN_SRCS  := $(wildcard src/bin/*.cpp)
TEST_SRCS := $(wildcard tests/*.cpp)
CU_SRCS   :=
ifeq ($(CUDA),1)
  CU_SRCS   := $(wildcard cuda/*.cu)
  CPPFLAGS  += -DLONGLORA_WITH_CUDA
  NVCC_COMMON := -std=c++17 -O2 -Isrc -I. -DLONGLORA_WITH_CUDA -lineinfo -MMD -MP -Xcompiler -Wall,-Wextra
  NVCCFLAGS := $(NVCC_COMMON) $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a))
  # wgmma needs Hopper's arch-specific target: attention_wgmma.cu is built for sm_90a where CUDA_ARCH says 90 (its
  # machine code runs on compute capability 9.0 only; the backend checks before choosing it).
$(BUILD)/obj/cuda/attention_wgmma.o: NVCCFLAGS := $(NVCC_COMMON) \
    $(foreach a,$(patsubst 90,90a,$(CUDA_ARCH)),-gencode arch=compute_$(a),code=sm_$(a))
  # cuBLASLt ships as a shared library only; it talks to the driver directly, so it mixes with the static cudart.
  LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcudart_static -ldl -lrt
endif

# MPI: mpi/comm_mpi.cpp and the multi-rank test binary, when Open MPI's compiler wrapper is installed.
MPI       ?= $(if $(shell command -v mpicxx 2>/dev/null),1,0)
MPI_TEST_SRCS := $(wildcard tests/mpi/*.cpp)
ifeq ($(MPI),1)
  CPPFLAGS  += -DLONGLORA_WITH_MPI -DOMPI_SKIP_MPICXX $(shell mpicxx --showme:compile)
  LDLIBS    += $(shell mpicxx --showme:link)
  MPI_TEST_BIN := $(BUILD)/test_mpi
endif

# NCCL: mpi/comm_nccl.cpp (NcclComm), when both CUDA and MPI are on and nccl.h is found. The file is plain C++ that
# includes cuda_runtime.h and nccl.h, so only it gets the CUDA include path.
NCCL_HOME ?= $(CUDA_HOME)
NCCL_LIB  := $(firstword $(wildcard $(NCCL_HOME)/lib/libnccl.so $(NCCL_HOME)/lib64/libnccl.so))
NCCL      ?= $(if $(and $(filter 1,$(CUDA)),$(filter 1,$(MPI)),$(wildcard $(NCCL_HOME)/include/nccl.h)),1,0)
ifeq ($(NCCL),1)
  ifneq ($(CUDA)$(MPI),11)
    $(error NCCL=1 needs CUDA=1 and MPI=1)
  endif
  CPPFLAGS  += -DLONGLORA_WITH_NCCL
  NCCL_LIBDIR := $(if $(NCCL_LIB),$(dir $(NCCL_LIB)),$(CUDA_HOME)/lib64)
  LDLIBS    += -L$(NCCL_LIBDIR) -Wl,-rpath,$(NCCL_LIBDIR) -lnccl
$(BUILD)/obj/mpi/comm_nccl.o: CPPFLAGS += -I$(NCCL_HOME)/include -I$(CUDA_HOME)/include
endif

# cpp-httplib (Debian's libcpp-httplib-dev: a header and a shared library, built with OpenSSL, zlib and Brotli, whose
# macros change its classes: the same three are defined here): build/serve's HTTP layer. Without it build/serve is not
# built and the HTTP tests skip, saying so.
HTTPLIB   ?= $(if $(wildcard $(DEPS)/usr/include/httplib.h),1,0)
ifeq ($(HTTPLIB),1)
  CPPFLAGS  += -DLONGLORA_WITH_HTTPLIB -DCPPHTTPLIB_OPENSSL_SUPPORT -DCPPHTTPLIB_ZLIB_SUPPORT -DCPPHTTPLIB_BROTLI_SUPPORT
  LDLIBS    += -lcpp-httplib
else
  LIB_SRCS  := $(filter-out src/serve/http_server.cpp,$(LIB_SRCS))
  BIN_SRCS  := $(filter-out src/bin/serve.cpp,$(BIN_SRCS))
endif

LIB_OBJS  := $(LIB_SRCS:%.cpp=$(BUILD)/obj/%.o) $(CU_SRCS:%.cu=$(BUILD)/obj/%.o)
BINS      := $(BIN_SRCS:src/bin/%.cpp=$(BUILD)/%)
# Benchmarks of the CUDA backend (plain C++ over the Backend API; they report "unavailable" without a GPU).
BENCH_SRCS := $(wildcard cuda/bench/*.cpp)
BENCHES   := $(BENCH_SRCS:cuda/bench/%.cpp=$(BUILD)/%)
TEST_BIN  := $(BUILD)/test_all
LIB       := $(BUILD)/liblonglora.a

# libFuzzer target (clang only): the safetensors reader and the sources it needs, with ASan + UBSan.
FUZZ_CXX     ?= clang++
FUZZ_SECONDS ?= 30
FUZZ_BIN     := build/fuzz/fuzz_safetensors
FUZZ_SRCS    := tests/fuzz/fuzz_safetensors.cpp src/io/safetensors.cpp src/util/files.cpp
FUZZ_FLAGS   := -std=c++17 -O1 -g -Isrc -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer

.PHONY: all demo test asan asan-build check check-builds clean fuzz fuzz-build fuzz-build-if-possible sass
.SECONDARY:  # keep object files (they are intermediates of pattern rules) and never delete them afterwards
all: $(LIB) $(BINS) $(BENCHES) $(TEST_BIN) $(MPI_TEST_BIN)

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@
$(BUILD)/obj/tests/%.o: OPT = $(TEST_OPT)

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcsP $@ $^  # P: members keep their paths (cpu/attention.o and cuda/attention.o must not collide)

$(BUILD)/%: $(BUILD)/obj/src/bin/%.o $(LIB)
	$(CXX) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/bench_%: $(BUILD)/obj/cuda/bench/bench_%.o $(LIB)
	$(CXX) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/test_mpi: $(MPI_TEST_SRCS:%.cpp=$(BUILD)/obj/%.o) $(LIB)
	$(CXX) $(LDFLAGS) $(filter %.o,$^) $(LIB) -lgtest $(LDLIBS) -o $@

$(TEST_BIN): $(TEST_SRCS:%.cpp=$(BUILD)/obj/%.o) $(LIB)
	$(CXX) $(LDFLAGS) $(filter %.o,$^) $(LIB) -lgtest -lgtest_main $(LDLIBS) -o $@

demo: all
	$(BUILD)/train

test: all
	scripts/run_tests.sh $(TEST_BIN)

# The sanitizer build holds only what its tests run: the test binary, build/asan/eval (which
# EvalPerplexity.BinaryWritesTheSameJson runs from beside the test binary) and build/asan/serve (the HTTP tests).
ASAN_RUN := ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
asan-build:
	$(MAKE) BUILD=build/asan SAN=1 CUDA=0 MPI=0 build/asan/test_all build/asan/eval $(if $(filter 1,$(HTTPLIB)),build/asan/serve)

asan: asan-build
	$(ASAN_RUN) scripts/run_tests.sh build/asan/test_all

$(FUZZ_BIN): $(FUZZ_SRCS) src/io/safetensors.h src/core/tensor.h src/util/error.h src/util/files.h
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $(FUZZ_SRCS) -o $@

fuzz-build: $(FUZZ_BIN)
fuzz-build-if-possible:  # without clang, run_fuzz.sh reports the missing fuzzer as one failed test
	-$(MAKE) fuzz-build

# Fuzzes a scratch copy of tests/fuzz/corpus_safetensors (build/fuzz/run/); fails on any finding.
fuzz: $(FUZZ_BIN)
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run_fuzz.sh

# Tensor-core instructions in the attention kernels, for every CUDA_ARCH (needs cuobjdump + nvdisasm, which .ci/run
# installs from PyPI; see scripts/check_sass.sh). Reports like a one-test GoogleTest binary.
SASS_ENV := SASS_OBJ=$(BUILD)/obj/cuda/attention.o SASS_ARCHS="$(CUDA_ARCH)" SASS_CUDA=$(CUDA)
sass: all
	$(SASS_ENV) scripts/check_sass.sh

# make -j2 check: the normal, sanitizer and fuzzer builds at once (make's -j slots are shared by the three), then every
# test binary, CHECK_JOBS at a time (scripts/run_tests.sh; the summary line stays last): the multi-rank tests, the
# fuzz run (FUZZ_SECONDS on one core), the sanitizer run in two shards, the normal run, the SASS check and the tests of
# the scripts (test_gpu_ranks_check.sh: scripts/gpu_ranks_check.sh with CPU ranks, ~45 s), longest first so the two
# cores stay busy. The fuzz run and the SASS check count as one test each.
CHECK_JOBS ?= 2
CHECK_RUNS := $(if $(MPI_TEST_BIN),tests/mpi/run_mpi_tests.sh) tests/fuzz/run_fuzz.sh \
              "$(ASAN_RUN) GTEST_TOTAL_SHARDS=2 GTEST_SHARD_INDEX=0 build/asan/test_all" \
              "$(ASAN_RUN) GTEST_TOTAL_SHARDS=2 GTEST_SHARD_INDEX=1 build/asan/test_all" \
              $(TEST_BIN) scripts/check_sass.sh tests/scripts/test_run_tests.sh tests/scripts/test_setup.sh \
              tests/scripts/test_gpu_ranks_check.sh
check-builds: all asan-build fuzz-build-if-possible
check: check-builds
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} TEST_JOBS=$(CHECK_JOBS) FUZZ_SECONDS=$(FUZZ_SECONDS) $(SASS_ENV) \
	  scripts/run_tests.sh $(CHECK_RUNS)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
