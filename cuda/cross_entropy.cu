#include "cuda/cross_entropy.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 512;
constexpr int32_t kIgnoreIndex = -100;

__global__ void cross_entropy_kernel(bf16* logits, float* losses, const int32_t* targets, int64_t vocab,
                                     float grad_scale, bool compute_grad) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  bf16* row = logits + r * vocab;
  const int32_t target = targets[r];
  if (target == kIgnoreIndex) {
    if (threadIdx.x == 0) losses[r] = 0.0f;
    if (compute_grad)
      for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) row[j] = to_bf16(0.0f);
    return;
  }
  const bool valid = target >= 0 && target < vocab;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, to_f32(row[j]));
  m = block_max(m, shared);
  float sum = 0;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) sum += expf(to_f32(row[j]) - m);
  sum = block_sum(sum, shared);  // ends with a barrier: every thread has read the row before anyone writes it
  const float lse = m + logf(sum);
  const float target_logit = valid ? to_f32(row[target]) : NAN;
  __syncthreads();  // the target logit is read before the gradient overwrites it
  if (threadIdx.x == 0) losses[r] = valid ? lse - target_logit : NAN;
  if (!compute_grad) return;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf(to_f32(row[j]) - lse);
    row[j] = to_bf16(valid ? grad_scale * (p - (j == target ? 1.0f : 0.0f)) : NAN);
  }
}

__global__ void argmax_kernel(int32_t* out, const bf16* logits, int64_t vocab) {
  __shared__ float best_v[32];
  __shared__ int64_t best_i[32];
  const int64_t r = blockIdx.x;
  const bf16* row = logits + r * vocab;
  float bv = -INFINITY;
  int64_t bi = vocab;  // "none yet": loses every tie
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float v = to_f32(row[j]);
    if (bi == vocab || v > bv) bv = v, bi = j;
  }
  // Warp then block reduction; ties go to the smaller index.
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (oi < vocab && (bi == vocab || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    bv = lane < warps ? best_v[lane] : -INFINITY;
    bi = lane < warps ? best_i[lane] : vocab;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (oi < vocab && (bi == vocab || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
    }
    if (lane == 0) out[r] = int32_t(bi < vocab ? bi : 0);
  }
}

}  // namespace

void launch_cross_entropy(bf16* logits, float* losses, const int32_t* targets, int64_t rows, int64_t vocab,
                          double grad_scale, bool compute_grad, cudaStream_t s) {
  if (rows == 0) return;
  LL_CHECK(rows <= 2147483647, "cross_entropy: too many rows: ", rows);
  cross_entropy_kernel<<<unsigned(rows), kThreads, 0, s>>>(logits, losses, targets, vocab, float(grad_scale),
                                                            compute_grad);
  LL_LAUNCH_CHECK("cross_entropy_kernel");
}

void launch_argmax_rows(int32_t* out, const bf16* logits, int64_t rows, int64_t vocab, cudaStream_t s) {
  if (rows == 0) return;
  LL_CHECK(rows <= 2147483647, "argmax_rows: too many rows: ", rows);
  argmax_kernel<<<unsigned(rows), kThreads, 0, s>>>(out, logits, vocab);
  LL_LAUNCH_CHECK("argmax_kernel");
}

}  // namespace ll::cuda
