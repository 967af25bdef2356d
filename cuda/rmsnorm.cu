#include "cuda/rmsnorm.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void rmsnorm_forward_kernel(bf16* out, float* rstd, const bf16* x, const bf16* w, int64_t dim,
                                       double eps) {
  __shared__ float shared[32];
  const int64_t t = blockIdx.x;
  const bf16* xr = x + t * dim;
  float ss = 0;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float v = to_f32(xr[d]);
    ss += v * v;
  }
  ss = block_sum(ss, shared);
  const float r = float(1.0 / sqrt(double(ss) / double(dim) + eps));
  if (threadIdx.x == 0) rstd[t] = r;
  bf16* yr = out + t * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) yr[d] = to_bf16(to_f32(xr[d]) * r * to_f32(w[d]));
}

__global__ void rmsnorm_backward_dx_kernel(bf16* dx, const bf16* dout, const bf16* x, const bf16* w,
                                           const float* rstd, int64_t dim, bool accumulate) {
  __shared__ float shared[32];
  const int64_t t = blockIdx.x;
  const bf16* xr = x + t * dim;
  const bf16* gr = dout + t * dim;
  float dot = 0;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) dot += to_f32(gr[d]) * to_f32(w[d]) * to_f32(xr[d]);
  dot = block_sum(dot, shared);
  const float r = rstd[t];
  const float c = float(double(r) * double(r) * double(r) * double(dot) / double(dim));
  bf16* dxr = dx + t * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float v = r * to_f32(gr[d]) * to_f32(w[d]) - c * to_f32(xr[d]);
    dxr[d] = to_bf16(accumulate ? to_f32(dxr[d]) + v : v);
  }
}

// grid (column blocks, row chunks): partial[chunk][d] = Σ_{rows of chunk, in order} dout·x·rstd.
__global__ void rmsnorm_dw_partial_kernel(float* partial, const bf16* dout, const bf16* x, const float* rstd,
                                          int64_t rows, int64_t dim, int64_t rows_per_chunk) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (d >= dim) return;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float acc = 0;
  for (int64_t t = r0; t < r1; ++t) acc += to_f32(dout[t * dim + d]) * to_f32(x[t * dim + d]) * rstd[t];
  partial[chunk * dim + d] = acc;
}

__global__ void rmsnorm_dw_finish_kernel(float* dw, const float* partial, int64_t dim, int64_t chunks) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= dim) return;
  double acc = 0;
  for (int64_t c = 0; c < chunks; ++c) acc += double(partial[c * dim + d]);
  dw[d] += float(acc);
}

}  // namespace

void launch_rmsnorm_forward(bf16* out, float* rstd, const bf16* x, const bf16* w, int64_t rows, int64_t dim,
                            double eps, cudaStream_t s) {
  if (rows == 0) return;
  LL_CHECK(rows <= 2147483647, "rmsnorm_forward: too many rows: ", rows);
  rmsnorm_forward_kernel<<<unsigned(rows), kThreads, 0, s>>>(out, rstd, x, w, dim, eps);
  LL_LAUNCH_CHECK("rmsnorm_forward_kernel");
}

void launch_rmsnorm_backward_dx(bf16* dx, const bf16* dout, const bf16* x, const bf16* w, const float* rstd,
                                int64_t rows, int64_t dim, bool accumulate, cudaStream_t s) {
  if (rows == 0 || dx == nullptr) return;
  LL_CHECK(rows <= 2147483647, "rmsnorm_backward: too many rows: ", rows);
  rmsnorm_backward_dx_kernel<<<unsigned(rows), kThreads, 0, s>>>(dx, dout, x, w, rstd, dim, accumulate);
  LL_LAUNCH_CHECK("rmsnorm_backward_dx_kernel");
}

void launch_rmsnorm_backward_dw(float* dw, float* partial, const bf16* dout, const bf16* x, const float* rstd,
                                int64_t rows, int64_t dim, int64_t rows_per_chunk, int64_t chunks, cudaStream_t s) {
  if (rows == 0 || dim == 0 || dw == nullptr) return;
  const unsigned col_blocks = unsigned((dim + kThreads - 1) / kThreads);
  rmsnorm_dw_partial_kernel<<<dim3(col_blocks, unsigned(chunks)), kThreads, 0, s>>>(partial, dout, x, rstd, rows, dim,
                                                                                     rows_per_chunk);
  LL_LAUNCH_CHECK("rmsnorm_dw_partial_kernel");
  rmsnorm_dw_finish_kernel<<<col_blocks, kThreads, 0, s>>>(dw, partial, dim, chunks);
  LL_LAUNCH_CHECK("rmsnorm_dw_finish_kernel");
}

}  // namespace ll::cuda
