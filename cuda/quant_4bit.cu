#include "cuda/quant_4bit.cuh"

#include <mutex>

#include "core/quantize.h"
#include "cuda/check.cuh"
#include "cuda/launch_plan.h"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;

// The code books, copied from the host tables once per device (core/quantize.cpp is the single source).
__constant__ float c_nf4[16];
__constant__ float c_fp4[16];
__constant__ float c_dynamic[256];

void upload_tables() {
  static std::mutex mu;
  static bool done[64] = {};
  int device = 0;
  LL_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  if (device < 64 && done[device]) return;
  LL_CUDA_CHECK(cudaMemcpyToSymbol(c_nf4, quant_code_values(DType::NF4), sizeof(float) * 16));
  LL_CUDA_CHECK(cudaMemcpyToSymbol(c_fp4, quant_code_values(DType::FP4), sizeof(float) * 16));
  LL_CUDA_CHECK(cudaMemcpyToSymbol(c_dynamic, dynamic_map_values(), sizeof(float) * 256));
  if (device < 64) done[device] = true;
}

// What a kernel needs of the layout: base pointers of each section.
struct QuantView {
  const uint8_t* codes;
  const float* absmax;       // plain
  const uint8_t* absmax_q;   // double-quantized
  const float* nested;
  bool nf4, dq;
};

QuantView view_of(const uint8_t* w, DType format, int64_t n) {
  const QuantLayout l = quant_layout(format, n);
  QuantView v;
  v.codes = w + l.codes;
  v.absmax = reinterpret_cast<const float*>(w + l.absmax);
  v.absmax_q = w + l.absmax;
  v.nested = reinterpret_cast<const float*>(w + l.nested);
  v.nf4 = is_nf4(format);
  v.dq = is_double_quantized(format);
  return v;
}

__device__ __forceinline__ float block_absmax(const QuantView& v, const float* offset, int64_t b) {
  if (!v.dq) return v.absmax[b];
  const float scaled = c_dynamic[v.absmax_q[b]] * v.nested[b / kNestedQuantBlock];
  return scaled + *offset;
}

__device__ __forceinline__ float code_value(const QuantView& v, int64_t i) {
  const uint8_t byte = v.codes[i >> 1];
  const int c = (i & 1) ? (byte & 15) : (byte >> 4);
  return v.nf4 ? c_nf4[c] : c_fp4[c];
}

__global__ void dequantize_kernel(bf16* out, QuantView v, const float* offset, int64_t n) {
  LL_GRID_STRIDE(i, n) out[i] = to_bf16(code_value(v, i) * block_absmax(v, offset, i / kQuantBlock));
}

// One warp per output row: lanes stride over the row's elements, then a warp reduction.
__global__ void gemv_kernel(bf16* y, const bf16* x, QuantView v, const float* offset, int64_t rows, int64_t cols,
                            bool accumulate) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float acc = 0.f;
  const int64_t base = row * cols;
  for (int64_t k = lane; k < cols; k += 32) {
    const int64_t i = base + k;
    acc += to_f32(x[k]) * (code_value(v, i) * block_absmax(v, offset, i / kQuantBlock));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
  if (lane == 0) y[row] = to_bf16(accumulate ? to_f32(y[row]) + acc : acc);
}

}  // namespace

void launch_dequantize_4bit(bf16* out, const uint8_t* w, DType format, int64_t n, cudaStream_t s) {
  LL_CHECK(is_quantized(format), "launch_dequantize_4bit: ", dtype_name(format), " is not a 4-bit format");
  if (n == 0) return;
  upload_tables();
  const QuantLayout l = quant_layout(format, n);
  const QuantView v = view_of(w, format, n);
  const float* offset = reinterpret_cast<const float*>(w + l.offset);
  dequantize_kernel<<<unsigned(cuda_plan::elementwise_blocks(n, kThreads)), kThreads, 0, s>>>(out, v, offset, n);
  LL_LAUNCH_CHECK("dequantize_kernel");
}

void launch_gemv_4bit(bf16* y, const bf16* x, const uint8_t* w, DType format, int64_t rows, int64_t cols,
                      bool accumulate, cudaStream_t s) {
  LL_CHECK(is_quantized(format), "launch_gemv_4bit: ", dtype_name(format), " is not a 4-bit format");
  if (rows == 0) return;
  upload_tables();
  const int64_t n = rows * cols;
  const QuantLayout l = quant_layout(format, n);
  const QuantView v = view_of(w, format, n);
  const float* offset = reinterpret_cast<const float*>(w + l.offset);
  const int64_t warps = kThreads / 32;
  gemv_kernel<<<unsigned((rows + warps - 1) / warps), kThreads, 0, s>>>(y, x, v, offset, rows, cols, accumulate);
  LL_LAUNCH_CHECK("gemv_kernel");
}

}  // namespace ll::cuda
