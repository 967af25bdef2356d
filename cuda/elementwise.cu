#include <cuda_fp16.h>

#include "cuda/elementwise.cuh"
#include "cuda/launch_plan.h"
#include "dropout_mask.h"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) { return unsigned(cuda_plan::elementwise_blocks(n, kThreads)); }

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

__global__ void swiglu_forward_kernel(bf16* out, const bf16* gate, const bf16* up, int64_t n) {
  LL_GRID_STRIDE(i, n) {
    const float g = to_f32(gate[i]);
    out[i] = to_bf16(g * sigmoid(g) * to_f32(up[i]));
  }
}

__global__ void swiglu_backward_kernel(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                                       int64_t n) {
  LL_GRID_STRIDE(i, n) {
    const float g = to_f32(gate[i]), u = to_f32(up[i]), d = to_f32(dout[i]), s = sigmoid(g);
    dgate[i] = to_bf16(d * u * s * (1.0f + g * (1.0f - s)));
    dup[i] = to_bf16(d * g * s);
  }
}

__global__ void add_kernel(bf16* out, const bf16* a, const bf16* b, int64_t n) {
  LL_GRID_STRIDE(i, n) out[i] = to_bf16(to_f32(a[i]) + to_f32(b[i]));
}

__global__ void dropout_kernel(bf16* out, const bf16* x, int64_t n, double p, float keep_scale, uint64_t seed) {
  LL_GRID_STRIDE(i, n) out[i] = dropout_keep(seed, uint64_t(i), p) ? to_bf16(to_f32(x[i]) * keep_scale) : to_bf16(0.0f);
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
  swiglu_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, gate, up, n);
  LL_LAUNCH_CHECK("swiglu_forward_kernel");
}

void launch_swiglu_backward(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up, int64_t n,
                            cudaStream_t s) {
  if (n == 0) return;
  swiglu_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(dgate, dup, dout, gate, up, n);
  LL_LAUNCH_CHECK("swiglu_backward_kernel");
}

void launch_add(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, a, b, n);
  LL_LAUNCH_CHECK("add_kernel");
}

void launch_dropout(bf16* out, const bf16* x, int64_t n, double p, uint64_t seed, cudaStream_t s) {
  if (n == 0) return;
  // The CPU reference computes the keep scale in its storage type (f32): 1/(1−p) rounded to f32.
  dropout_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, x, n, p, float(1.0 / (1.0 - p)), seed);
  LL_LAUNCH_CHECK("dropout_kernel");
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
