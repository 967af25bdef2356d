#include "cuda/rope.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void rope_kernel(bf16* x, const int32_t* positions, int64_t heads, int64_t head_dim, RopeRates rates,
                            float sign) {
  __shared__ float cos_s[kRopeMaxHalf], sin_s[kRopeMaxHalf];
  const int64_t t = blockIdx.x, half = head_dim / 2;
  const float pos = float(positions[t]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    float sn, cs;
    sincosf(pos * rates.rate[i], &sn, &cs);
    cos_s[i] = cs;
    sin_s[i] = sign * sn;
  }
  __syncthreads();
  bf16* row = x + t * heads * head_dim;
  for (int64_t idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int64_t h = idx / half, i = idx - h * half;
    bf16* xh = row + h * head_dim;
    const float a = to_f32(xh[i]), b = to_f32(xh[i + half]);
    xh[i] = to_bf16(a * cos_s[i] - b * sin_s[i]);
    xh[i + half] = to_bf16(b * cos_s[i] + a * sin_s[i]);
  }
}

}  // namespace

void launch_rope(bf16* x, const int32_t* positions, int64_t rows, int64_t heads, int64_t head_dim,
                 const RopeRates& rates, int sign, cudaStream_t s) {
  if (rows == 0 || heads == 0 || head_dim == 0) return;
  LL_CHECK(head_dim / 2 <= kRopeMaxHalf, "rope: head dimension ", head_dim, " exceeds ", 2 * kRopeMaxHalf);
  LL_CHECK(rows <= 2147483647, "rope: too many rows: ", rows);
  rope_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, positions, heads, head_dim, rates, float(sign));
  LL_LAUNCH_CHECK("rope_kernel");
}

}  // namespace ll::cuda
