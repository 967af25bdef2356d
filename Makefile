# longlora build. `make` builds the library, the binaries and the test suite into $(BUILD)/.
#   make demo     build and run the embedded CPU demo (build/train with no flags)
#   make test     build and run the tests (normal build)
#   make asan     build and run the tests under AddressSanitizer + UndefinedBehaviorSanitizer (CPU only)
#   make fuzz     build the libFuzzer target for the safetensors parser (clang) and run it for FUZZ_SECONDS (30)
#   make check    all three plus the SASS check, with one "N passed, M failed" summary (what CI runs; the fuzz run
#                 and the SASS check count as one test each)
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
CXXFLAGS  := -std=c++17 -O2 -g -Wall -Wextra -fopenmp
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
LDLIBS    := -lsentencepiece_train -lsentencepiece $(BLAS_LIBS) -lpthread
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

.PHONY: all demo test asan check clean fuzz fuzz-build sass
.SECONDARY:  # keep object files (they are intermediates of pattern rules) and never delete them afterwards
all: $(LIB) $(BINS) $(BENCHES) $(TEST_BIN) $(MPI_TEST_BIN)

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

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

asan:
	$(MAKE) BUILD=build/asan SAN=1 CUDA=0 MPI=0 all
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 scripts/run_tests.sh build/asan/test_all

$(FUZZ_BIN): $(FUZZ_SRCS) src/io/safetensors.h src/tensor.h src/util/error.h src/util/files.h
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $(FUZZ_SRCS) -o $@

fuzz-build: $(FUZZ_BIN)

# Fuzzes a scratch copy of tests/fuzz/corpus_safetensors (build/fuzz/run/); fails on any finding.
fuzz: $(FUZZ_BIN)
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run_fuzz.sh

# Tensor-core instructions in the attention kernels, for every CUDA_ARCH (needs cuobjdump + nvdisasm, which .ci/run
# installs from PyPI; see scripts/check_sass.sh). Reports like a one-test GoogleTest binary.
SASS_ENV := SASS_OBJ=$(BUILD)/obj/cuda/attention.o SASS_ARCHS="$(CUDA_ARCH)" SASS_CUDA=$(CUDA)
sass: all
	$(SASS_ENV) scripts/check_sass.sh

# The fuzzer is built best-effort: when clang is missing, run_fuzz.sh reports it as one failed test, so the
# summary line stays last either way. The SASS check counts as one test the same way.
check: all
	$(MAKE) BUILD=build/asan SAN=1 CUDA=0 MPI=0 all
	-$(MAKE) fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(SASS_ENV) scripts/run_tests.sh $(TEST_BIN) build/asan/test_all \
	  tests/fuzz/run_fuzz.sh scripts/check_sass.sh $(if $(MPI_TEST_BIN),tests/mpi/run_mpi_tests.sh)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
