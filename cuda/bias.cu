#include "cuda/bias.cuh"

#include "cuda/launch_plan.h"
#include "cuda/vec8.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kVecThreads = 64;  // column sums, 8 columns per thread

__device__ __forceinline__ float biased(float y, float b) { return y + b; }

// ---- y += b ---------------------------------------------------------------------------------------------------------
__global__ void add_bias_kernel(bf16* y, const bf16* b, int64_t n, int64_t cols) {
  LL_GRID_STRIDE(i, n) y[i] = to_bf16(biased(to_f32(y[i]), to_f32(b[i % cols])));
}

// cols a multiple of 8, y and b 16-byte aligned: vector v covers elements [8v, 8v + 8) of one row.
__global__ void add_bias_vec_kernel(bf16* y, const bf16* b, int64_t vecs, int64_t cols) {
  LL_GRID_STRIDE(v, vecs) {
    const int64_t c0 = (v * kVec) % cols;
    const Vec8 yv = load8(y + v * kVec), bv = load8(b + c0);
    Vec8 o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) o.v[k] = biased(yv.v[k], bv.v[k]);
    store8(y + v * kVec, o);
  }
}

// ---- db += Σ_t dy: grid (column blocks, row chunks), partial[chunk][d] = Σ_{rows of chunk, in order} dy ------------
__global__ void column_partial_kernel(float* partial, const bf16* dy, int64_t rows, int64_t cols,
                                      int64_t rows_per_chunk) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (d >= cols) return;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float acc = 0;
  for (int64_t t = r0; t < r1; ++t) acc += to_f32(dy[t * cols + d]);
  partial[chunk * cols + d] = acc;
}

__global__ void column_partial_vec_kernel(float* partial, const bf16* dy, int64_t rows, int64_t cols,
                                          int64_t rows_per_chunk) {
  const int64_t d0 = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  const int64_t chunk = blockIdx.y;
  if (d0 >= cols) return;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float acc[kVec] = {};
#pragma unroll 4
  for (int64_t t = r0; t < r1; ++t) {
    const Vec8 g = load8(dy + t * cols + d0);
#pragma unroll
    for (int k = 0; k < kVec; ++k) acc[k] += g.v[k];
  }
#pragma unroll
  for (int k = 0; k < kVec; ++k) partial[chunk * cols + d0 + k] = acc[k];
}

__global__ void column_finish_kernel(float* out, const float* partial, int64_t cols, int64_t chunks) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= cols) return;
  double acc = 0;
  for (int64_t c = 0; c < chunks; ++c) acc += double(partial[c * cols + d]);
  out[d] += float(acc);
}

}  // namespace

void launch_add_bias(bf16* y, const bf16* b, int64_t rows, int64_t cols, cudaStream_t s) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  if (cols % kVec == 0 && aligned16(y) && aligned16(b)) {
    add_bias_vec_kernel<<<unsigned(cuda_plan::elementwise_blocks(n / kVec, kThreads)), kThreads, 0, s>>>(y, b, n / kVec,
                                                                                                       cols);
    LL_LAUNCH_CHECK("add_bias_vec_kernel");
  } else {
    add_bias_kernel<<<unsigned(cuda_plan::elementwise_blocks(n, kThreads)), kThreads, 0, s>>>(y, b, n, cols);
    LL_LAUNCH_CHECK("add_bias_kernel");
  }
}

void launch_bias_backward(float* db, float* partial, const bf16* dy, int64_t rows, int64_t cols,
                          int64_t rows_per_chunk, int64_t chunks, cudaStream_t s) {
  if (rows == 0 || cols == 0 || db == nullptr) return;
  if (cols % kVec == 0 && aligned16(dy)) {
    const unsigned blocks = unsigned((cols / kVec + kVecThreads - 1) / kVecThreads);
    column_partial_vec_kernel<<<dim3(blocks, unsigned(chunks)), kVecThreads, 0, s>>>(partial, dy, rows, cols,
                                                                                      rows_per_chunk);
    LL_LAUNCH_CHECK("column_partial_vec_kernel");
  } else {
    const unsigned blocks = unsigned((cols + kThreads - 1) / kThreads);
    column_partial_kernel<<<dim3(blocks, unsigned(chunks)), kThreads, 0, s>>>(partial, dy, rows, cols, rows_per_chunk);
    LL_LAUNCH_CHECK("column_partial_kernel");
  }
  launch_column_partials_finish(db, partial, cols, chunks, s);
}

void launch_column_partials_finish(float* out, const float* partial, int64_t cols, int64_t chunks, cudaStream_t s) {
  if (cols == 0) return;
  column_finish_kernel<<<unsigned((cols + kThreads - 1) / kThreads), kThreads, 0, s>>>(out, partial, cols, chunks);
  LL_LAUNCH_CHECK("column_finish_kernel");
}

}  // namespace ll::cuda
