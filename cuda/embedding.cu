#include "cuda/embedding.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void embedding_forward_kernel(bf16* out, const int32_t* ids, const bf16* table, int64_t dim,
                                         int64_t vocab) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  const bool valid = id >= 0 && id < vocab;
  bf16* dst = out + t * dim;
  const bf16* src = table + int64_t(valid ? id : 0) * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) dst[d] = valid ? src[d] : to_bf16(NAN);
}

__global__ void embedding_backward_kernel(float* dtable, const int32_t* order, const int32_t* run_start,
                                          const int32_t* run_id, const bf16* dout, int64_t dim) {
  const int64_t r = blockIdx.x;
  const int64_t d = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (d >= dim) return;
  float* dst = dtable + int64_t(run_id[r]) * dim + d;
  float acc = *dst;
  for (int32_t i = run_start[r]; i < run_start[r + 1]; ++i) acc += to_f32(dout[int64_t(order[i]) * dim + d]);
  *dst = acc;
}

}  // namespace

void launch_embedding_forward(bf16* out, const int32_t* ids, const bf16* table, int64_t rows, int64_t dim,
                              int64_t vocab, cudaStream_t s) {
  if (rows == 0 || dim == 0) return;
  LL_CHECK(rows <= 2147483647, "embedding_forward: too many rows for the grid: ", rows);
  embedding_forward_kernel<<<unsigned(rows), kThreads, 0, s>>>(out, ids, table, dim, vocab);
  LL_LAUNCH_CHECK("embedding_forward_kernel");
}

void launch_embedding_backward(float* dtable, const int32_t* order, const int32_t* run_start, const int32_t* run_id,
                               int64_t runs, const bf16* dout, int64_t dim, cudaStream_t s) {
  if (runs == 0 || dim == 0) return;
  const dim3 grid(unsigned(runs), unsigned((dim + kThreads - 1) / kThreads));
  LL_CHECK(grid.y <= 65535, "embedding_backward: hidden size ", dim, " too large for the grid");
  embedding_backward_kernel<<<grid, kThreads, 0, s>>>(dtable, order, run_start, run_id, dout, dim);
  LL_LAUNCH_CHECK("embedding_backward_kernel");
}

}  // namespace ll::cuda
