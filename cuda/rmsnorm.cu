#include "cuda/rmsnorm.cuh"

#include <initializer_list>

#include "cuda/vec8.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;
// Rows staged in shared memory up to this width (the dx kernel stages 2 rows: 32 KiB, under the 48 KiB a kernel may
// use without opting in).
constexpr int64_t kStagedMaxDim = 8192;
constexpr int kDwVecThreads = 64;  // dw partial sums, 8 columns per thread: 8 CTAs per row chunk at dim 4096

bool use_staged(int64_t dim, std::initializer_list<const void*> ptrs) {
  if (dim % kVec != 0 || dim > kStagedMaxDim) return false;
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  return true;
}

// Per-element math, shared by the scalar and the staged kernels.
__device__ __forceinline__ float rstd_of(float ss, int64_t dim, double eps) {
  return float(1.0 / sqrt(double(ss) / double(dim) + eps));
}
__device__ __forceinline__ float norm_value(float x, float r, float w) { return x * r * w; }
__device__ __forceinline__ float dx_value(float g, float w, float x, float r, float c) { return r * g * w - c * x; }

// ---- scalar kernels: any dim, any alignment -------------------------------------------------------------------------
// Thread j sums the elements d = j, j + blockDim, … in that order, then block_sum: the order the staged kernels keep.
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
  const float r = rstd_of(ss, dim, eps);
  if (threadIdx.x == 0) rstd[t] = r;
  bf16* yr = out + t * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) yr[d] = to_bf16(norm_value(to_f32(xr[d]), r, to_f32(w[d])));
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
    const float v = dx_value(to_f32(gr[d]), to_f32(w[d]), to_f32(xr[d]), r, c);
    dxr[d] = to_bf16(accumulate ? to_f32(dxr[d]) + v : v);
  }
}

// ---- staged kernels: dim a multiple of 8, at most kStagedMaxDim; every pointer 16-byte aligned ----------------------
// The row (for dx: dout's row and x's row) is copied into shared memory with 16-byte loads, reduced from shared
// memory, then written with 16-byte stores. They run kThreads / kVirtual threads per CTA (more rows in flight per SM);
// thread j plays the scalar kernels' threads j + v·blockDim (v < kVirtual), summing the same elements in the same
// order, and block_sum_virtual adds the partial sums along block_sum's tree for kThreads threads: bit-identical sums.
constexpr int kVirtual = 2;
constexpr int kStagedThreads = kThreads / kVirtual;

__device__ __forceinline__ float block_sum_virtual(const float (&part)[kVirtual], float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int v = 0; v < kVirtual; ++v) {
    const float s = warp_sum(part[v]);  // the sum of virtual warp warp + v·warps
    if (lane == 0) shared[warp + v * warps] = s;
  }
  __syncthreads();
  float total = lane < warps * kVirtual ? shared[lane] : 0.0f;
  total = warp_sum(total);
  __syncthreads();
  return total;
}

__device__ __forceinline__ void stage_row(bf16* dst, const bf16* src, int64_t dim) {
  const int64_t vecs = dim / kVec;
#pragma unroll 4
  for (int64_t v = threadIdx.x; v < vecs; v += blockDim.x)
    *reinterpret_cast<uint4*>(dst + v * kVec) = *reinterpret_cast<const uint4*>(src + v * kVec);
}

__global__ void __launch_bounds__(kStagedThreads) rmsnorm_forward_staged_kernel(bf16* out, float* rstd, const bf16* x,
                                                                                const bf16* w, int64_t dim,
                                                                                double eps) {
  __shared__ float shared[32];
  extern __shared__ uint4 stage[];  // dim bf16: x's row
  bf16* xs = reinterpret_cast<bf16*>(stage);
  const int64_t t = blockIdx.x;
  stage_row(xs, x + t * dim, dim);
  __syncthreads();
  float part[kVirtual];
#pragma unroll
  for (int v = 0; v < kVirtual; ++v) {
    float ss = 0;
    for (int64_t d = threadIdx.x + v * blockDim.x; d < dim; d += kThreads) {
      const float xv = to_f32(xs[d]);
      ss += xv * xv;
    }
    part[v] = ss;
  }
  const float ss = block_sum_virtual(part, shared);
  const float r = rstd_of(ss, dim, eps);
  if (threadIdx.x == 0) rstd[t] = r;
  bf16* yr = out + t * dim;
  for (int64_t v = threadIdx.x; v < dim / kVec; v += blockDim.x) {
    const Vec8 xv = load8(xs + v * kVec), wv = load8(w + v * kVec);
    Vec8 y;
#pragma unroll
    for (int k = 0; k < kVec; ++k) y.v[k] = norm_value(xv.v[k], r, wv.v[k]);
    store8(yr + v * kVec, y);
  }
}

__global__ void __launch_bounds__(kStagedThreads) rmsnorm_backward_dx_staged_kernel(bf16* dx, const bf16* dout,
                                                                                    const bf16* x, const bf16* w,
                                                                                    const float* rstd, int64_t dim,
                                                                                    bool accumulate) {
  __shared__ float shared[32];
  extern __shared__ uint4 stage[];  // 2·dim bf16: dout's row, x's row
  bf16* gs = reinterpret_cast<bf16*>(stage);
  bf16* xs = gs + dim;
  const int64_t t = blockIdx.x;
  stage_row(gs, dout + t * dim, dim);
  stage_row(xs, x + t * dim, dim);
  __syncthreads();
  float part[kVirtual];
#pragma unroll
  for (int v = 0; v < kVirtual; ++v) {
    float dot = 0;
    for (int64_t d = threadIdx.x + v * blockDim.x; d < dim; d += kThreads)
      dot += to_f32(gs[d]) * to_f32(w[d]) * to_f32(xs[d]);
    part[v] = dot;
  }
  const float dot = block_sum_virtual(part, shared);
  const float r = rstd[t];
  const float c = float(double(r) * double(r) * double(r) * double(dot) / double(dim));
  bf16* dxr = dx + t * dim;
  for (int64_t v = threadIdx.x; v < dim / kVec; v += blockDim.x) {
    const Vec8 g = load8(gs + v * kVec), wv = load8(w + v * kVec), xv = load8(xs + v * kVec);
    Vec8 old{};
    if (accumulate) old = load8(dxr + v * kVec);
    Vec8 o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float val = dx_value(g.v[k], wv.v[k], xv.v[k], r, c);
      o.v[k] = accumulate ? old.v[k] + val : val;
    }
    store8(dxr + v * kVec, o);
  }
}

// grid (column blocks, row chunks): partial[chunk][d] = Σ_{rows of chunk, in order} dout·x·rstd.
__device__ __forceinline__ float dw_add(float acc, float g, float x, float r) { return acc + g * x * r; }

__global__ void rmsnorm_dw_partial_kernel(float* partial, const bf16* dout, const bf16* x, const float* rstd,
                                          int64_t rows, int64_t dim, int64_t rows_per_chunk) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (d >= dim) return;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float acc = 0;
  for (int64_t t = r0; t < r1; ++t) acc = dw_add(acc, to_f32(dout[t * dim + d]), to_f32(x[t * dim + d]), rstd[t]);
  partial[chunk * dim + d] = acc;
}

// The same sums, 8 columns per thread with 16-byte loads (dim a multiple of 8, dout and x 16-byte aligned): every
// column still adds its rows in order, so partial is bit-identical to the scalar kernel's.
__global__ void rmsnorm_dw_partial_vec_kernel(float* partial, const bf16* dout, const bf16* x, const float* rstd,
                                              int64_t rows, int64_t dim, int64_t rows_per_chunk) {
  const int64_t d0 = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  const int64_t chunk = blockIdx.y;
  if (d0 >= dim) return;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float acc[kVec] = {};
#pragma unroll 4
  for (int64_t t = r0; t < r1; ++t) {
    const Vec8 g = load8(dout + t * dim + d0), xv = load8(x + t * dim + d0);
    const float r = rstd[t];
#pragma unroll
    for (int k = 0; k < kVec; ++k) acc[k] = dw_add(acc[k], g.v[k], xv.v[k], r);
  }
#pragma unroll
  for (int k = 0; k < kVec; ++k) partial[chunk * dim + d0 + k] = acc[k];
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
  if (use_staged(dim, {out, x, w})) {
    rmsnorm_forward_staged_kernel<<<unsigned(rows), kStagedThreads, size_t(dim) * sizeof(bf16), s>>>(out, rstd, x, w, dim,
                                                                                                eps);
    LL_LAUNCH_CHECK("rmsnorm_forward_staged_kernel");
  } else {
    rmsnorm_forward_kernel<<<unsigned(rows), kThreads, 0, s>>>(out, rstd, x, w, dim, eps);
    LL_LAUNCH_CHECK("rmsnorm_forward_kernel");
  }
}

void launch_rmsnorm_backward_dx(bf16* dx, const bf16* dout, const bf16* x, const bf16* w, const float* rstd,
                                int64_t rows, int64_t dim, bool accumulate, cudaStream_t s) {
  if (rows == 0 || dx == nullptr) return;
  LL_CHECK(rows <= 2147483647, "rmsnorm_backward: too many rows: ", rows);
  if (use_staged(dim, {dx, dout, x, w})) {
    rmsnorm_backward_dx_staged_kernel<<<unsigned(rows), kStagedThreads, 2 * size_t(dim) * sizeof(bf16), s>>>(
        dx, dout, x, w, rstd, dim, accumulate);
    LL_LAUNCH_CHECK("rmsnorm_backward_dx_staged_kernel");
  } else {
    rmsnorm_backward_dx_kernel<<<unsigned(rows), kThreads, 0, s>>>(dx, dout, x, w, rstd, dim, accumulate);
    LL_LAUNCH_CHECK("rmsnorm_backward_dx_kernel");
  }
}

void launch_rmsnorm_backward_dw(float* dw, float* partial, const bf16* dout, const bf16* x, const float* rstd,
                                int64_t rows, int64_t dim, int64_t rows_per_chunk, int64_t chunks, cudaStream_t s) {
  if (rows == 0 || dim == 0 || dw == nullptr) return;
  const unsigned col_blocks = unsigned((dim + kThreads - 1) / kThreads);
  if (dim % kVec == 0 && aligned16(dout) && aligned16(x)) {
    const unsigned vec_blocks = unsigned((dim / kVec + kDwVecThreads - 1) / kDwVecThreads);
    rmsnorm_dw_partial_vec_kernel<<<dim3(vec_blocks, unsigned(chunks)), kDwVecThreads, 0, s>>>(partial, dout, x, rstd,
                                                                                                rows, dim,
                                                                                                rows_per_chunk);
    LL_LAUNCH_CHECK("rmsnorm_dw_partial_vec_kernel");
  } else {
    rmsnorm_dw_partial_kernel<<<dim3(col_blocks, unsigned(chunks)), kThreads, 0, s>>>(partial, dout, x, rstd, rows,
                                                                                       dim, rows_per_chunk);
    LL_LAUNCH_CHECK("rmsnorm_dw_partial_kernel");
  }
  rmsnorm_dw_finish_kernel<<<col_blocks, kThreads, 0, s>>>(dw, partial, dim, chunks);
  LL_LAUNCH_CHECK("rmsnorm_dw_finish_kernel");
}

}  // namespace ll::cuda
