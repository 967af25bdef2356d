#include "cuda/launch_plan.h"
#include "cuda/optimizer.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void sum_squares_partial_kernel(double* partial, const float* x, int64_t n, int64_t block_elems) {
  __shared__ double shared[32];
  const int64_t i0 = int64_t(blockIdx.x) * block_elems;
  const int64_t i1 = i0 + block_elems < n ? i0 + block_elems : n;
  double s = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) s += double(x[i]) * double(x[i]);
  s = block_sum(s, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_squares_finish_kernel(double* result, const double* partial, int64_t blocks) {
  __shared__ double shared[32];
  double s = 0;
  for (int64_t b = threadIdx.x; b < blocks; b += blockDim.x) s += partial[b];
  s = block_sum(s, shared);
  if (threadIdx.x == 0) *result = s;
}

__global__ void adamw_kernel(bf16* param_bf16, float* param_f32, float* master, const float* grad, float* m, float* v,
                             int64_t n, AdamWArgs a) {
  LL_GRID_STRIDE(i, n) {
    const float g = grad[i];
    float p = master ? master[i] : param_f32[i];
    p *= a.lr_decay;
    const float mi = a.beta1 * m[i] + a.one_minus_beta1 * g;
    const float vi = a.beta2 * v[i] + a.one_minus_beta2 * g * g;
    p -= a.step_size * mi / (sqrtf(vi) / a.bc2_sqrt + a.eps);
    m[i] = mi;
    v[i] = vi;
    if (master) master[i] = p;
    if (param_bf16) param_bf16[i] = to_bf16(p);
    else param_f32[i] = p;
  }
}

}  // namespace

void launch_sum_squares(double* result, double* partial, const float* x, int64_t n, int64_t block_elems,
                        int64_t blocks, cudaStream_t s) {
  if (n == 0) {
    LL_CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(double), s));
    return;
  }
  LL_CHECK(blocks <= 2147483647, "sum_squares: too many blocks: ", blocks);
  sum_squares_partial_kernel<<<unsigned(blocks), kThreads, 0, s>>>(partial, x, n, block_elems);
  LL_LAUNCH_CHECK("sum_squares_partial_kernel");
  sum_squares_finish_kernel<<<1, 1024, 0, s>>>(result, partial, blocks);
  LL_LAUNCH_CHECK("sum_squares_finish_kernel");
}

void launch_adamw(bf16* param_bf16, float* param_f32, float* master, const float* grad, float* m, float* v, int64_t n,
                  const AdamWArgs& a, cudaStream_t s) {
  if (n == 0) return;
  adamw_kernel<<<unsigned(cuda_plan::elementwise_blocks(n, kThreads)), kThreads, 0, s>>>(param_bf16, param_f32, master,
                                                                                        grad, m, v, n, a);
  LL_LAUNCH_CHECK("adamw_kernel");
}

}  // namespace ll::cuda
