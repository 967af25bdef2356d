// bitsandbytes' 4-bit weights on the GPU (layout: core/dtype.h quant_layout; values: core/quantize.h).
//   launch_dequantize_4bit: the whole weight into a bf16 buffer in one launch (Unsloth's approach: the backend then
//     runs its ordinary cuBLASLt product on that reusable workspace, forward and dx backward);
//   launch_gemv_4bit: y[n] (+)= Σ_k x[k]·W[n,k] reading the 4-bit weight directly (one warp per output row), for
//     batch-1 decoding, where the product is bound by the weight's bytes.
// Both dequantize exactly as the CPU reference (float: code value × absmax, the double-quantized absmax rebuilt as
// dynamic_map[q]·nested + offset); the bf16 rounding of the workspace is the only difference from the CPU's f32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/common.cuh"

namespace ll::cuda {

void launch_dequantize_4bit(bf16* out, const uint8_t* w, DType format, int64_t n, cudaStream_t s);
// W logically [rows, cols]; x[cols], y[rows] bf16 (y overwritten, or added to when accumulate).
void launch_gemv_4bit(bf16* y, const bf16* x, const uint8_t* w, DType format, int64_t rows, int64_t cols,
                      bool accumulate, cudaStream_t s);

}  // namespace ll::cuda
