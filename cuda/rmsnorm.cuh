// RMSNorm forward/backward: one CTA per row for out/rstd and dx; dw as a two-pass deterministic column reduction
// (cuda_plan::plan_column_reduce): f32 partial sums per row chunk, then the chunks in order.
// With D a multiple of 8 and 16-byte aligned pointers, rows are staged in shared memory with 16-byte loads (D up to
// 8192) and dw's partial sums read 8 columns per thread; the scalar kernels otherwise. The summation order is the
// same on both paths, so are the bits.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ll::cuda {

void launch_rmsnorm_forward(bf16* out, float* rstd, const bf16* x, const bf16* w, int64_t rows, int64_t dim,
                            double eps, cudaStream_t s);
// dx (+)= rstd·g − rstd³·x·(Σ g·x)/D with g = dout ⊙ w. Skipped when dx is null.
void launch_rmsnorm_backward_dx(bf16* dx, const bf16* dout, const bf16* x, const bf16* w, const float* rstd,
                                int64_t rows, int64_t dim, bool accumulate, cudaStream_t s);
// dw += Σ_t dout·x·rstd. partial: scratch of chunks × dim floats.
void launch_rmsnorm_backward_dw(float* dw, float* partial, const bf16* dout, const bf16* x, const float* rstd,
                                int64_t rows, int64_t dim, int64_t rows_per_chunk, int64_t chunks, cudaStream_t s);

}  // namespace ll::cuda
