// RoPE with linear position interpolation (rotate_half layout), in place, over the first R = rotary_dims dims of each
// head (R = Dh for Llama; GPT-NeoX's partial rotary leaves dims [R, Dh) untouched). Angles in f32: position · rate
// with rate = inv_freq[i]/factor from cuda_plan::rope_angle_rates (θ^(−2i/R), or Llama-3's per-frequency rule),
// sincosf once per (row, frequency) into shared memory. When R/2 and Dh are multiples of 8 and x is 16-byte aligned, a thread rotates 8 frequencies of one head
// with 16-byte accesses (x[i..i+8) and x[i+R/2..)); otherwise a scalar kernel does; both give the same bits.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ll::cuda {

constexpr int kRopeMaxHalf = 256;  // rotary_dims <= 512
struct RopeRates {
  float rate[kRopeMaxHalf];
};

// sign +1: forward rotation; −1: the transpose (backward). rotary_dims: even, <= head_dim; rates has R/2 entries.
void launch_rope(bf16* x, const int32_t* positions, int64_t rows, int64_t heads, int64_t head_dim,
                 int64_t rotary_dims, const RopeRates& rates, int sign, cudaStream_t s);

}  // namespace ll::cuda
