#include <cuda_fp16.h>

#include "cuda/elementwise.cuh"
#include "cuda/launch_plan.h"
#include "cuda/vec8.cuh"
#include "core/dropout_mask.h"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) { return unsigned(cuda_plan::elementwise_blocks(n, kThreads)); }
// Grid of a vector kernel: one thread per 8 elements (the tail's at most 7 elements need one block, which any
// grid has).
inline unsigned vec_blocks_for(int64_t n) { return blocks_for(n / kVec); }

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

// Per-element math, shared by the scalar and the vector kernels (so both paths round identically).
__device__ __forceinline__ float swiglu_value(float g, float u) { return g * sigmoid(g) * u; }
__device__ __forceinline__ void swiglu_grads(float d, float g, float u, float* dg, float* du) {
  const float s = sigmoid(g);
  *dg = d * u * s * (1.0f + g * (1.0f - s));
  *du = d * g * s;
}
__device__ __forceinline__ float normal_cdf(float x) { return 0.5f * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_value(float x) { return x * normal_cdf(x); }
// d/dx x·Φ(x) = Φ(x) + x·φ(x), φ(x) = exp(−x²/2)/√(2π)
__device__ __forceinline__ float gelu_grad(float d, float x) {
  return d * (normal_cdf(x) + x * expf(-0.5f * x * x) * 0.39894228040143268f);
}
__device__ __forceinline__ float dropout_value(float x, int64_t i, double p, float keep_scale, uint64_t seed) {
  return dropout_keep(seed, uint64_t(i), p) ? x * keep_scale : 0.0f;
}

// ---- scalar kernels: any alignment, any n ----------------------------------------------------------------------------
__global__ void swiglu_forward_kernel(bf16* out, const bf16* gate, const bf16* up, int64_t n) {
  LL_GRID_STRIDE(i, n) out[i] = to_bf16(swiglu_value(to_f32(gate[i]), to_f32(up[i])));
}

__global__ void swiglu_backward_kernel(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                                       int64_t n) {
  LL_GRID_STRIDE(i, n) {
    float dg, du;
    swiglu_grads(to_f32(dout[i]), to_f32(gate[i]), to_f32(up[i]), &dg, &du);
    dgate[i] = to_bf16(dg);
    dup[i] = to_bf16(du);
  }
}

__global__ void gelu_forward_kernel(bf16* out, const bf16* x, int64_t n) {
  LL_GRID_STRIDE(i, n) out[i] = to_bf16(gelu_value(to_f32(x[i])));
}

__global__ void gelu_backward_kernel(bf16* dx, const bf16* dout, const bf16* x, int64_t n) {
  LL_GRID_STRIDE(i, n) dx[i] = to_bf16(gelu_grad(to_f32(dout[i]), to_f32(x[i])));
}

__global__ void add_kernel(bf16* out, const bf16* a, const bf16* b, int64_t n) {
  LL_GRID_STRIDE(i, n) out[i] = to_bf16(to_f32(a[i]) + to_f32(b[i]));
}

__global__ void dropout_kernel(bf16* out, const bf16* x, int64_t n, double p, float keep_scale, uint64_t seed) {
  LL_GRID_STRIDE(i, n) out[i] = to_bf16(dropout_value(to_f32(x[i]), i, p, keep_scale, seed));
}

// ---- vector kernels: every pointer 16-byte aligned ---------------------------------------------------------------------
// Vector v covers elements [8v, 8v + 8) for v < n / 8 (grid-stride); the last n % 8 elements are done one per thread
// by the first threads of the grid. Each thread touches only its own elements, so out may alias an input.
__device__ __forceinline__ int64_t vec_count(int64_t n) { return n / kVec; }
__device__ __forceinline__ int64_t tail_index(int64_t n) {  // the tail element of this thread, or -1
  const int64_t i = vec_count(n) * kVec + int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  return i < n ? i : -1;
}

__global__ void swiglu_forward_vec_kernel(bf16* out, const bf16* gate, const bf16* up, int64_t n) {
  LL_GRID_STRIDE(v, vec_count(n)) {
    const Vec8 g = load8(gate + v * kVec), u = load8(up + v * kVec);
    Vec8 o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) o.v[k] = swiglu_value(g.v[k], u.v[k]);
    store8(out + v * kVec, o);
  }
  const int64_t i = tail_index(n);
  if (i >= 0) out[i] = to_bf16(swiglu_value(to_f32(gate[i]), to_f32(up[i])));
}

__global__ void swiglu_backward_vec_kernel(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate,
                                           const bf16* up, int64_t n) {
  LL_GRID_STRIDE(v, vec_count(n)) {
    const Vec8 d = load8(dout + v * kVec), g = load8(gate + v * kVec), u = load8(up + v * kVec);
    Vec8 dg, du;
#pragma unroll
    for (int k = 0; k < kVec; ++k) swiglu_grads(d.v[k], g.v[k], u.v[k], &dg.v[k], &du.v[k]);
    store8(dgate + v * kVec, dg);
    store8(dup + v * kVec, du);
  }
  const int64_t i = tail_index(n);
  if (i >= 0) {
    float dg, du;
    swiglu_grads(to_f32(dout[i]), to_f32(gate[i]), to_f32(up[i]), &dg, &du);
    dgate[i] = to_bf16(dg);
    dup[i] = to_bf16(du);
  }
}

__global__ void gelu_forward_vec_kernel(bf16* out, const bf16* x, int64_t n) {
  LL_GRID_STRIDE(v, vec_count(n)) {
    const Vec8 xv = load8(x + v * kVec);
    Vec8 o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) o.v[k] = gelu_value(xv.v[k]);
    store8(out + v * kVec, o);
  }
  const int64_t i = tail_index(n);
  if (i >= 0) out[i] = to_bf16(gelu_value(to_f32(x[i])));
}

__global__ void gelu_backward_vec_kernel(bf16* dx, const bf16* dout, const bf16* x, int64_t n) {
  LL_GRID_STRIDE(v, vec_count(n)) {
    const Vec8 d = load8(dout + v * kVec), xv = load8(x + v * kVec);
    Vec8 o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) o.v[k] = gelu_grad(d.v[k], xv.v[k]);
    store8(dx + v * kVec, o);
  }
  const int64_t i = tail_index(n);
  if (i >= 0) dx[i] = to_bf16(gelu_grad(to_f32(dout[i]), to_f32(x[i])));
}

__global__ void add_vec_kernel(bf16* out, const bf16* a, const bf16* b, int64_t n) {
  LL_GRID_STRIDE(v, vec_count(n)) {
    const Vec8 x = load8(a + v * kVec), y = load8(b + v * kVec);
    Vec8 o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) o.v[k] = x.v[k] + y.v[k];
    store8(out + v * kVec, o);
  }
  const int64_t i = tail_index(n);
  if (i >= 0) out[i] = to_bf16(to_f32(a[i]) + to_f32(b[i]));
}

__global__ void dropout_vec_kernel(bf16* out, const bf16* x, int64_t n, double p, float keep_scale, uint64_t seed) {
  LL_GRID_STRIDE(v, vec_count(n)) {
    const Vec8 xv = load8(x + v * kVec);
    Vec8 o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) o.v[k] = dropout_value(xv.v[k], v * kVec + k, p, keep_scale, seed);
    store8(out + v * kVec, o);
  }
  const int64_t i = tail_index(n);
  if (i >= 0) out[i] = to_bf16(dropout_value(to_f32(x[i]), i, p, keep_scale, seed));
}

__global__ void scale_f32_kernel(float* x, int64_t n, double s) {
  LL_GRID_STRIDE(i, n) x[i] = float(double(x[i]) * s);
}

__device__ __forceinline__ double load_as_double(const void* p, int type, int64_t i) {
  switch (type) {
    case int(DType::F32): return double(static_cast<const float*>(p)[i]);
    case int(DType::F64): return static_cast<const double*>(p)[i];
    case int(DType::BF16): return double(__bfloat162float(static_cast<const bf16*>(p)[i]));
    case int(DType::F16): return double(__half2float(static_cast<const __half*>(p)[i]));
  }
  return 0.0;
}

// 16-bit targets round through f32 exactly like the host's convert_values.
__device__ __forceinline__ void store_from_double(void* p, int type, int64_t i, double v) {
  switch (type) {
    case int(DType::F32): static_cast<float*>(p)[i] = float(v); break;
    case int(DType::F64): static_cast<double*>(p)[i] = v; break;
    case int(DType::BF16): static_cast<bf16*>(p)[i] = __float2bfloat16_rn(float(v)); break;
    case int(DType::F16): static_cast<__half*>(p)[i] = __float2half_rn(float(v)); break;
  }
}

__global__ void convert_kernel(void* dst, int dst_type, const void* src, int src_type, int64_t n) {
  LL_GRID_STRIDE(i, n) store_from_double(dst, dst_type, i, load_as_double(src, src_type, i));
}

__global__ void fill_kernel(void* dst, int type, int64_t n, double value) {
  LL_GRID_STRIDE(i, n) store_from_double(dst, type, i, value);
}

__global__ void fill_uniform_kernel(void* dst, int type, int64_t n, uint64_t seed, double scale) {
  LL_GRID_STRIDE(i, n) {
    const uint64_t h = mix64(mix64(seed) + uint64_t(i) * 0x9E3779B97F4A7C15ull);
    const double u = double(h >> 11) * 0x1.0p-53;
    store_from_double(dst, type, i, (2.0 * u - 1.0) * scale);
  }
}

}  // namespace

void launch_swiglu_forward(bf16* out, const bf16* gate, const bf16* up, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  if (aligned16(out) && aligned16(gate) && aligned16(up)) {
    swiglu_forward_vec_kernel<<<vec_blocks_for(n), kThreads, 0, s>>>(out, gate, up, n);
    LL_LAUNCH_CHECK("swiglu_forward_vec_kernel");
  } else {
    swiglu_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, gate, up, n);
    LL_LAUNCH_CHECK("swiglu_forward_kernel");
  }
}

void launch_swiglu_backward(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up, int64_t n,
                            cudaStream_t s) {
  if (n == 0) return;
  if (aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) && aligned16(up)) {
    swiglu_backward_vec_kernel<<<vec_blocks_for(n), kThreads, 0, s>>>(dgate, dup, dout, gate, up, n);
    LL_LAUNCH_CHECK("swiglu_backward_vec_kernel");
  } else {
    swiglu_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(dgate, dup, dout, gate, up, n);
    LL_LAUNCH_CHECK("swiglu_backward_kernel");
  }
}

void launch_gelu_forward(bf16* out, const bf16* x, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  if (aligned16(out) && aligned16(x)) {
    gelu_forward_vec_kernel<<<vec_blocks_for(n), kThreads, 0, s>>>(out, x, n);
    LL_LAUNCH_CHECK("gelu_forward_vec_kernel");
  } else {
    gelu_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, x, n);
    LL_LAUNCH_CHECK("gelu_forward_kernel");
  }
}

void launch_gelu_backward(bf16* dx, const bf16* dout, const bf16* x, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  if (aligned16(dx) && aligned16(dout) && aligned16(x)) {
    gelu_backward_vec_kernel<<<vec_blocks_for(n), kThreads, 0, s>>>(dx, dout, x, n);
    LL_LAUNCH_CHECK("gelu_backward_vec_kernel");
  } else {
    gelu_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(dx, dout, x, n);
    LL_LAUNCH_CHECK("gelu_backward_kernel");
  }
}

void launch_add(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  if (aligned16(out) && aligned16(a) && aligned16(b)) {
    add_vec_kernel<<<vec_blocks_for(n), kThreads, 0, s>>>(out, a, b, n);
    LL_LAUNCH_CHECK("add_vec_kernel");
  } else {
    add_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, a, b, n);
    LL_LAUNCH_CHECK("add_kernel");
  }
}

void launch_dropout(bf16* out, const bf16* x, int64_t n, double p, uint64_t seed, cudaStream_t s) {
  if (n == 0) return;
  // The CPU reference computes the keep scale in its storage type (f32): 1/(1−p) rounded to f32.
  const float keep_scale = float(1.0 / (1.0 - p));
  if (aligned16(out) && aligned16(x)) {
    dropout_vec_kernel<<<vec_blocks_for(n), kThreads, 0, s>>>(out, x, n, p, keep_scale, seed);
    LL_LAUNCH_CHECK("dropout_vec_kernel");
  } else {
    dropout_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, x, n, p, keep_scale, seed);
    LL_LAUNCH_CHECK("dropout_kernel");
  }
}

void launch_scale_f32(float* x, int64_t n, double scale, cudaStream_t s) {
  if (n == 0) return;
  scale_f32_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n, scale);
  LL_LAUNCH_CHECK("scale_f32_kernel");
}

void launch_convert(void* dst, DType dst_type, const void* src, DType src_type, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  convert_kernel<<<blocks_for(n), kThreads, 0, s>>>(dst, int(dst_type), src, int(src_type), n);
  LL_LAUNCH_CHECK("convert_kernel");
}

void launch_fill(void* dst, DType type, int64_t n, double value, cudaStream_t s) {
  if (n == 0) return;
  fill_kernel<<<blocks_for(n), kThreads, 0, s>>>(dst, int(type), n, value);
  LL_LAUNCH_CHECK("fill_kernel");
}

void launch_fill_uniform(void* dst, DType type, int64_t n, uint64_t seed, double scale, cudaStream_t s) {
  if (n == 0) return;
  fill_uniform_kernel<<<blocks_for(n), kThreads, 0, s>>>(dst, int(type), n, seed, scale);
  LL_LAUNCH_CHECK("fill_uniform_kernel");
}

}  // namespace ll::cuda
