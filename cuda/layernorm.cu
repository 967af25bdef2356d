#include "cuda/layernorm.cuh"

#include <initializer_list>

#include "cuda/bias.cuh"
#include "cuda/vec8.cuh"

namespace ll::cuda {

namespace {

// Both paths run kThreads threads per row, thread j summing elements j, j + kThreads, … in order, then block_sum:
// the same additions in the same order, so the staged and scalar kernels agree bit for bit.
constexpr int kThreads = 256;
// Rows staged in shared memory up to this width (the dx kernel stages 2 rows: 32 KiB, under the 48 KiB a kernel may
// use without opting in).
constexpr int64_t kStagedMaxDim = 8192;
constexpr int kDwVecThreads = 64;  // dw/db partial sums, 8 columns per thread

bool use_staged(int64_t dim, std::initializer_list<const void*> ptrs) {
  if (dim % kVec != 0 || dim > kStagedMaxDim) return false;
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  return true;
}

// Per-element math, shared by the scalar and the staged kernels.
__device__ __forceinline__ float rstd_of(float sq, int64_t dim, double eps) {
  return float(1.0 / sqrt(double(sq) / double(dim) + eps));
}
__device__ __forceinline__ float normalized(float x, float m, float r) { return (x - m) * r; }
__device__ __forceinline__ float ln_value(float x, float m, float r, float w, float b) {
  return normalized(x, m, r) * w + b;
}
__device__ __forceinline__ float dx_value(float g, float w, float xhat, float r, float mean_g, float mean_gx) {
  return r * (g * w - mean_g - xhat * mean_gx);
}

// Σ x, then Σ (x − mean)² over the row (xr in global memory, or the staged row in shared memory): both paths' sums.
__device__ __forceinline__ void row_stats(const bf16* xr, int64_t dim, double eps, float* shared, float* m, float* r) {
  float sum = 0;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) sum += to_f32(xr[d]);
  const float mean = block_sum(sum, shared) / float(dim);
  float sq = 0;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float c = to_f32(xr[d]) - mean;
    sq += c * c;
  }
  *m = mean;
  *r = rstd_of(block_sum(sq, shared), dim, eps);
}

// Σ g and Σ g·x̂ over the row (g = dout ⊙ w), divided by dim.
__device__ __forceinline__ void row_grad_means(const bf16* gr, const bf16* xr, const bf16* w, int64_t dim, float m,
                                               float r, float* shared, float* mean_g, float* mean_gx) {
  float sg = 0, sgx = 0;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float g = to_f32(gr[d]) * to_f32(w[d]);
    sg += g;
    sgx += g * normalized(to_f32(xr[d]), m, r);
  }
  *mean_g = block_sum(sg, shared) / float(dim);
  *mean_gx = block_sum(sgx, shared) / float(dim);
}

__device__ __forceinline__ void stage_row(bf16* dst, const bf16* src, int64_t dim) {
  const int64_t vecs = dim / kVec;
#pragma unroll 4
  for (int64_t v = threadIdx.x; v < vecs; v += blockDim.x)
    *reinterpret_cast<uint4*>(dst + v * kVec) = *reinterpret_cast<const uint4*>(src + v * kVec);
}

// ---- scalar kernels: any dim, any alignment -------------------------------------------------------------------------
__global__ void __launch_bounds__(kThreads) layernorm_forward_kernel(bf16* out, float* mean, float* rstd,
                                                                     const bf16* x, const bf16* w, const bf16* b,
                                                                     int64_t dim, double eps) {
  __shared__ float shared[32];
  const int64_t t = blockIdx.x;
  const bf16* xr = x + t * dim;
  float m, r;
  row_stats(xr, dim, eps, shared, &m, &r);
  if (threadIdx.x == 0) mean[t] = m, rstd[t] = r;
  bf16* yr = out + t * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    yr[d] = to_bf16(ln_value(to_f32(xr[d]), m, r, to_f32(w[d]), to_f32(b[d])));
}

__global__ void __launch_bounds__(kThreads) layernorm_backward_dx_kernel(bf16* dx, const bf16* dout, const bf16* x,
                                                                         const bf16* w, const float* mean,
                                                                         const float* rstd, int64_t dim,
                                                                         bool accumulate) {
  __shared__ float shared[32];
  const int64_t t = blockIdx.x;
  const bf16 *xr = x + t * dim, *gr = dout + t * dim;
  const float m = mean[t], r = rstd[t];
  float mean_g, mean_gx;
  row_grad_means(gr, xr, w, dim, m, r, shared, &mean_g, &mean_gx);
  bf16* dxr = dx + t * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float v = dx_value(to_f32(gr[d]), to_f32(w[d]), normalized(to_f32(xr[d]), m, r), r, mean_g, mean_gx);
    dxr[d] = to_bf16(accumulate ? to_f32(dxr[d]) + v : v);
  }
}

// ---- staged kernels: dim a multiple of 8, at most kStagedMaxDim; every pointer 16-byte aligned ----------------------
// The row (for dx: dout's row and x's row) is copied into shared memory with 16-byte loads, reduced from there with
// the scalar kernels' order, then written with 16-byte stores.
__global__ void __launch_bounds__(kThreads) layernorm_forward_staged_kernel(bf16* out, float* mean, float* rstd,
                                                                            const bf16* x, const bf16* w,
                                                                            const bf16* b, int64_t dim, double eps) {
  __shared__ float shared[32];
  extern __shared__ uint4 stage[];  // dim bf16: x's row
  bf16* xs = reinterpret_cast<bf16*>(stage);
  const int64_t t = blockIdx.x;
  stage_row(xs, x + t * dim, dim);
  __syncthreads();
  float m, r;
  row_stats(xs, dim, eps, shared, &m, &r);
  if (threadIdx.x == 0) mean[t] = m, rstd[t] = r;
  bf16* yr = out + t * dim;
  for (int64_t v = threadIdx.x; v < dim / kVec; v += blockDim.x) {
    const Vec8 xv = load8(xs + v * kVec), wv = load8(w + v * kVec), bv = load8(b + v * kVec);
    Vec8 y;
#pragma unroll
    for (int k = 0; k < kVec; ++k) y.v[k] = ln_value(xv.v[k], m, r, wv.v[k], bv.v[k]);
    store8(yr + v * kVec, y);
  }
}

__global__ void __launch_bounds__(kThreads) layernorm_backward_dx_staged_kernel(bf16* dx, const bf16* dout,
                                                                                const bf16* x, const bf16* w,
                                                                                const float* mean, const float* rstd,
                                                                                int64_t dim, bool accumulate) {
  __shared__ float shared[32];
  extern __shared__ uint4 stage[];  // 2·dim bf16: dout's row, x's row
  bf16* gs = reinterpret_cast<bf16*>(stage);
  bf16* xs = gs + dim;
  const int64_t t = blockIdx.x;
  stage_row(gs, dout + t * dim, dim);
  stage_row(xs, x + t * dim, dim);
  __syncthreads();
  const float m = mean[t], r = rstd[t];
  float mean_g, mean_gx;
  row_grad_means(gs, xs, w, dim, m, r, shared, &mean_g, &mean_gx);
  bf16* dxr = dx + t * dim;
  for (int64_t v = threadIdx.x; v < dim / kVec; v += blockDim.x) {
    const Vec8 g = load8(gs + v * kVec), wv = load8(w + v * kVec), xv = load8(xs + v * kVec);
    Vec8 old{};
    if (accumulate) old = load8(dxr + v * kVec);
    Vec8 o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float val = dx_value(g.v[k], wv.v[k], normalized(xv.v[k], m, r), r, mean_g, mean_gx);
      o.v[k] = accumulate ? old.v[k] + val : val;
    }
    store8(dxr + v * kVec, o);
  }
}

// ---- dw, db: grid (column blocks, row chunks); pw[chunk][d] = Σ dout·x̂, pb[chunk][d] = Σ dout, rows in order -----
__global__ void layernorm_dw_db_partial_kernel(float* pw, float* pb, const bf16* dout, const bf16* x,
                                               const float* mean, const float* rstd, int64_t rows, int64_t dim,
                                               int64_t rows_per_chunk) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (d >= dim) return;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float aw = 0, ab = 0;
  for (int64_t t = r0; t < r1; ++t) {
    const float g = to_f32(dout[t * dim + d]);
    aw += g * normalized(to_f32(x[t * dim + d]), mean[t], rstd[t]);
    ab += g;
  }
  pw[chunk * dim + d] = aw;
  pb[chunk * dim + d] = ab;
}

// The same sums, 8 columns per thread with 16-byte loads (dim a multiple of 8, dout and x 16-byte aligned).
__global__ void layernorm_dw_db_partial_vec_kernel(float* pw, float* pb, const bf16* dout, const bf16* x,
                                                   const float* mean, const float* rstd, int64_t rows, int64_t dim,
                                                   int64_t rows_per_chunk) {
  const int64_t d0 = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  const int64_t chunk = blockIdx.y;
  if (d0 >= dim) return;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float aw[kVec] = {}, ab[kVec] = {};
#pragma unroll 4
  for (int64_t t = r0; t < r1; ++t) {
    const Vec8 g = load8(dout + t * dim + d0), xv = load8(x + t * dim + d0);
    const float m = mean[t], r = rstd[t];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      aw[k] += g.v[k] * normalized(xv.v[k], m, r);
      ab[k] += g.v[k];
    }
  }
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    pw[chunk * dim + d0 + k] = aw[k];
    pb[chunk * dim + d0 + k] = ab[k];
  }
}

}  // namespace

void launch_layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* x, const bf16* w, const bf16* b,
                              int64_t rows, int64_t dim, double eps, cudaStream_t s) {
  if (rows == 0) return;
  LL_CHECK(rows <= 2147483647, "layernorm_forward: too many rows: ", rows);
  if (use_staged(dim, {out, x, w, b})) {
    layernorm_forward_staged_kernel<<<unsigned(rows), kThreads, size_t(dim) * sizeof(bf16), s>>>(out, mean, rstd, x,
                                                                                                 w, b, dim, eps);
    LL_LAUNCH_CHECK("layernorm_forward_staged_kernel");
  } else {
    layernorm_forward_kernel<<<unsigned(rows), kThreads, 0, s>>>(out, mean, rstd, x, w, b, dim, eps);
    LL_LAUNCH_CHECK("layernorm_forward_kernel");
  }
}

void launch_layernorm_backward_dx(bf16* dx, const bf16* dout, const bf16* x, const bf16* w, const float* mean,
                                  const float* rstd, int64_t rows, int64_t dim, bool accumulate, cudaStream_t s) {
  if (rows == 0 || dx == nullptr) return;
  LL_CHECK(rows <= 2147483647, "layernorm_backward: too many rows: ", rows);
  if (use_staged(dim, {dx, dout, x, w})) {
    layernorm_backward_dx_staged_kernel<<<unsigned(rows), kThreads, 2 * size_t(dim) * sizeof(bf16), s>>>(
        dx, dout, x, w, mean, rstd, dim, accumulate);
    LL_LAUNCH_CHECK("layernorm_backward_dx_staged_kernel");
  } else {
    layernorm_backward_dx_kernel<<<unsigned(rows), kThreads, 0, s>>>(dx, dout, x, w, mean, rstd, dim, accumulate);
    LL_LAUNCH_CHECK("layernorm_backward_dx_kernel");
  }
}

void launch_layernorm_backward_dw_db(float* dw, float* db, float* partial, const bf16* dout, const bf16* x,
                                     const float* mean, const float* rstd, int64_t rows, int64_t dim,
                                     int64_t rows_per_chunk, int64_t chunks, cudaStream_t s) {
  if (rows == 0 || dim == 0 || (dw == nullptr && db == nullptr)) return;
  float* pw = partial;
  float* pb = partial + chunks * dim;
  if (dim % kVec == 0 && aligned16(dout) && aligned16(x)) {
    const unsigned blocks = unsigned((dim / kVec + kDwVecThreads - 1) / kDwVecThreads);
    layernorm_dw_db_partial_vec_kernel<<<dim3(blocks, unsigned(chunks)), kDwVecThreads, 0, s>>>(
        pw, pb, dout, x, mean, rstd, rows, dim, rows_per_chunk);
    LL_LAUNCH_CHECK("layernorm_dw_db_partial_vec_kernel");
  } else {
    const unsigned blocks = unsigned((dim + kThreads - 1) / kThreads);
    layernorm_dw_db_partial_kernel<<<dim3(blocks, unsigned(chunks)), kThreads, 0, s>>>(pw, pb, dout, x, mean, rstd,
                                                                                        rows, dim, rows_per_chunk);
    LL_LAUNCH_CHECK("layernorm_dw_db_partial_kernel");
  }
  if (dw) launch_column_partials_finish(dw, pw, dim, chunks, s);
  if (db) launch_column_partials_finish(db, pb, dim, chunks, s);
}

}  // namespace ll::cuda
