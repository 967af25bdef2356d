// Element-wise kernels: SwiGLU, exact GELU, residual add, dropout (dropout_mask.h's hash), scaling, dtype conversion,
// fills. bf16 storage, f32 math. All are grid-stride loops over the flat element index. The bf16 kernels (SwiGLU,
// GELU, add, dropout) move 8 elements per 16-byte access when every pointer is 16-byte aligned (the tail of n % 8 elements one
// by one), else run a scalar kernel; both paths compute each element with the same float operations, so which
// one runs never changes a result.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "core/tensor.h"

namespace ll::cuda {

// out = silu(gate) ⊙ up
void launch_swiglu_forward(bf16* out, const bf16* gate, const bf16* up, int64_t n, cudaStream_t s);
// dgate = dout·up·σ(g)·(1 + g·(1 − σ(g))), dup = dout·g·σ(g)
void launch_swiglu_backward(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up, int64_t n,
                            cudaStream_t s);
// out = x·Φ(x) = 0.5·x·(1 + erf(x/√2)) (out may alias x)
void launch_gelu_forward(bf16* out, const bf16* x, int64_t n, cudaStream_t s);
// dx = dout·(Φ(x) + x·φ(x)) (dx may alias dout)
void launch_gelu_backward(bf16* dx, const bf16* dout, const bf16* x, int64_t n, cudaStream_t s);
// out = a + b (out may alias a or b)
void launch_add(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t s);
// out = keep(seed, i) ? x / (1 − p) : 0 (out may alias x)
void launch_dropout(bf16* out, const bf16* x, int64_t n, double p, uint64_t seed, cudaStream_t s);
// x ← s·x (computed in double, rounded to f32)
void launch_scale_f32(float* x, int64_t n, double scale, cudaStream_t s);
// dst[i] = convert(src[i]) between f32/f64/bf16/f16 (round to nearest even)
void launch_convert(void* dst, DType dst_type, const void* src, DType src_type, int64_t n, cudaStream_t s);
// t[i] = value, or uniform in [-scale, scale) from hash(seed, i)
void launch_fill(void* dst, DType type, int64_t n, double value, cudaStream_t s);
void launch_fill_uniform(void* dst, DType type, int64_t n, uint64_t seed, double scale, cudaStream_t s);

}  // namespace ll::cuda
