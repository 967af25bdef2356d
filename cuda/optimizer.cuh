// Optimizer support: deterministic Σ x² (fixed blocks, double accumulation, block sums in order) and AdamW with an
// f32 master copy (param ← bf16(master) after the update), PyTorch semantics.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/launch_plan.h"

namespace ll::cuda {

using cuda_plan::AdamWArgs;

// partial: scratch of `blocks` doubles; result: one double on the device.
void launch_sum_squares(double* result, double* partial, const float* x, int64_t n, int64_t block_elems,
                        int64_t blocks, cudaStream_t s);

// master may be null when param_f32 is the master itself; exactly one of param_bf16 / param_f32 is non-null.
void launch_adamw(bf16* param_bf16, float* param_f32, float* master, const float* grad, float* m, float* v, int64_t n,
                  const AdamWArgs& a, cudaStream_t s);

}  // namespace ll::cuda
