// LayerNorm forward/backward (torch.nn.LayerNorm semantics): one CTA per row for out/mean/rstd and dx; dw and db as a
// two-pass deterministic column reduction (cuda_plan::plan_column_reduce, as RMSNorm's dw): f32 partial sums per row
// chunk, then the chunks in order (cuda/bias.cuh's finish pass). Statistics in f32: the mean, then the mean squared
// deviation from it (two passes over the row, the biased variance), rstd = 1/sqrt(var + eps) in double.
// With D a multiple of 8 and 16-byte aligned pointers, rows are staged in shared memory with 16-byte loads (D up to
// 8192) and the dw/db partial sums read 8 columns per thread; the scalar kernels otherwise. The summation order is
// the same on both paths, so are the bits.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ll::cuda {

void launch_layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* x, const bf16* w, const bf16* b,
                              int64_t rows, int64_t dim, double eps, cudaStream_t s);
// dx (+)= rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dout ⊙ w, x̂ = (x − mean)·rstd.
void launch_layernorm_backward_dx(bf16* dx, const bf16* dout, const bf16* x, const bf16* w, const float* mean,
                                  const float* rstd, int64_t rows, int64_t dim, bool accumulate, cudaStream_t s);
// dw += Σ_t dout·x̂ and db += Σ_t dout (either may be null). partial: scratch of 2 × chunks × dim floats.
void launch_layernorm_backward_dw_db(float* dw, float* db, float* partial, const bf16* dout, const bf16* x,
                                     const float* mean, const float* rstd, int64_t rows, int64_t dim,
                                     int64_t rows_per_chunk, int64_t chunks, cudaStream_t s);

}  // namespace ll::cuda
