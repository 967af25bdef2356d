// GPT-NeoX's fused query_key_value output: split into q, k, v and merged back (backend.h split_qkv / merge_qkv).
// Pure copies. A thread moves one head's slice of q, k and v: 16 bytes (8 bf16) at a time when the head dimension is
// a multiple of 8 and every pointer is 16-byte aligned, else one element at a time; both give the same bytes.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ll::cuda {

// qkv[rows, heads·3·head_dim] (per head: q, k, v) → q, k, v [rows, heads, head_dim]
void launch_split_qkv(bf16* q, bf16* k, bf16* v, const bf16* qkv, int64_t rows, int64_t heads, int64_t head_dim,
                      cudaStream_t s);
// The inverse: q, k, v → qkv
void launch_merge_qkv(bf16* qkv, const bf16* q, const bf16* k, const bf16* v, int64_t rows, int64_t heads,
                      int64_t head_dim, cudaStream_t s);

}  // namespace ll::cuda
