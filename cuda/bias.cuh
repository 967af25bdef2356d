// The bias of a linear layer: y += b over the rows (in place), and db += the column sums of dy as a two-pass
// deterministic column reduction (cuda_plan::plan_column_reduce, as RMSNorm's dw): f32 partial sums per row chunk,
// rows in order, then the chunks in order in double. With the row length a multiple of 8 and 16-byte aligned
// pointers a thread moves 8 columns per 16-byte access; the scalar kernels otherwise. Both paths compute every
// element with the same float operations in the same order, so which one runs never changes a result.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ll::cuda {

// y[rows, cols] += b[cols]
void launch_add_bias(bf16* y, const bf16* b, int64_t rows, int64_t cols, cudaStream_t s);
// db[cols] += Σ_t dy[t, :]. partial: scratch of chunks × cols floats.
void launch_bias_backward(float* db, float* partial, const bf16* dy, int64_t rows, int64_t cols,
                          int64_t rows_per_chunk, int64_t chunks, cudaStream_t s);
// Pass 2 of a column reduction: out[d] += Σ_c partial[c·cols + d], chunks in order, in double.
void launch_column_partials_finish(float* out, const float* partial, int64_t cols, int64_t chunks, cudaStream_t s);

}  // namespace ll::cuda
