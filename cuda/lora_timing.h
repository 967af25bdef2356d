// Per-kernel timing of the LoRA thin-product kernels (cuda/lora.cu) for bench_cuda lora: plain C++ header, no CUDA
// types, so the host-compiled benchmark can call it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ll::cuda {

struct LoraKernelTiming {
  std::string what;
  double ms = 0;     // per call: cudaEvent time over repeated launches on `stream`, after warm-up
  double bytes = 0;  // minimal bytes the call must move (the large operands only)
};

// Allocates its own operands ([T,K], [T,N], rank r; contents zero: the timings do not depend on values), times
// every kernel as CudaBackend calls it (forward: down, up; backward: reduce for dB, down for dxa, reduce for dA, up
// for dx) plus a device-to-device copy of a [T,N] bf16 tensor as the bandwidth reference, frees everything.
// stream: a cudaStream_t (CudaBackend::native_stream()).
std::vector<LoraKernelTiming> lora_kernel_timings(int64_t T, int64_t K, int64_t N, int64_t r, void* stream);

}  // namespace ll::cuda
