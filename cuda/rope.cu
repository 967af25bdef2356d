#include "cuda/rope.cuh"

#include "cuda/vec8.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;

// `half` below is R/2, half the rotated slice: the pairs are (x[i], x[i + half]) for i < half within each head.

// Rotation of the pair (x[i], x[i + half]) by the angle whose cos/sin are c, sn (sn already signed).
__device__ __forceinline__ void rotate(float a, float b, float c, float sn, float* ra, float* rb) {
  *ra = a * c - b * sn;
  *rb = b * c + a * sn;
}

// cos/sin of positions[t]·rate[i] (sin times sign) for i < half, into shared memory; ends with a barrier.
__device__ __forceinline__ void angles(float* cos_s, float* sin_s, const int32_t* positions, int64_t half,
                                       const RopeRates& rates, float sign) {
  const float pos = float(positions[blockIdx.x]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    float sn, cs;
    sincosf(pos * rates.rate[i], &sn, &cs);
    cos_s[i] = cs;
    sin_s[i] = sign * sn;
  }
  __syncthreads();
}

// Scalar: any head_dim, any alignment. One CTA per row t; threads over (head, i < half).
__global__ void rope_kernel(bf16* x, const int32_t* positions, int64_t heads, int64_t head_dim, int64_t half,
                            RopeRates rates, float sign) {
  __shared__ float cos_s[kRopeMaxHalf], sin_s[kRopeMaxHalf];
  const int64_t t = blockIdx.x;
  angles(cos_s, sin_s, positions, half, rates, sign);
  bf16* row = x + t * heads * head_dim;
  for (int64_t idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int64_t h = idx / half, i = idx - h * half;
    bf16* xh = row + h * head_dim;
    float ra, rb;
    rotate(to_f32(xh[i]), to_f32(xh[i + half]), cos_s[i], sin_s[i], &ra, &rb);
    xh[i] = to_bf16(ra);
    xh[i + half] = to_bf16(rb);
  }
}

// Vector: half and head_dim multiples of 8 and x 16-byte aligned (so every head's two halves are). One CTA per row
// t; a thread owns 8 consecutive i of one head and their partners i + half: two 16-byte loads, two 16-byte stores.
__global__ void rope_vec_kernel(bf16* x, const int32_t* positions, int64_t heads, int64_t head_dim, int64_t half,
                                RopeRates rates, float sign) {
  __shared__ float cos_s[kRopeMaxHalf], sin_s[kRopeMaxHalf];
  const int64_t t = blockIdx.x, chunks = half / kVec, items = heads * chunks;
  bf16* row = x + t * heads * head_dim;
  // The first item's loads go out before the angles are computed: they do not depend on them.
  uint4 a_raw = {}, b_raw = {};
  if (threadIdx.x < items) {
    const int64_t h = threadIdx.x / chunks, i0 = (threadIdx.x - h * chunks) * kVec;
    a_raw = load_raw8(row + h * head_dim + i0), b_raw = load_raw8(row + h * head_dim + i0 + half);
  }
  angles(cos_s, sin_s, positions, half, rates, sign);
  for (int64_t idx = threadIdx.x; idx < items; idx += blockDim.x) {
    const int64_t h = idx / chunks, i0 = (idx - h * chunks) * kVec;
    bf16* lo = row + h * head_dim + i0;
    if (idx != threadIdx.x) a_raw = load_raw8(lo), b_raw = load_raw8(lo + half);
    const Vec8 a = unpack8(a_raw), b = unpack8(b_raw);
    Vec8 ra, rb;
#pragma unroll
    for (int k = 0; k < kVec; ++k) rotate(a.v[k], b.v[k], cos_s[i0 + k], sin_s[i0 + k], &ra.v[k], &rb.v[k]);
    store8(lo, ra);
    store8(lo + half, rb);
  }
}

}  // namespace

void launch_rope(bf16* x, const int32_t* positions, int64_t rows, int64_t heads, int64_t head_dim,
                 int64_t rotary_dims, const RopeRates& rates, int sign, cudaStream_t s) {
  if (rows == 0 || heads == 0 || rotary_dims == 0) return;
  const int64_t half = rotary_dims / 2;
  LL_CHECK(half <= kRopeMaxHalf, "rope: rotary dimension ", rotary_dims, " exceeds ", 2 * kRopeMaxHalf);
  LL_CHECK(rotary_dims % 2 == 0 && rotary_dims <= head_dim, "rope: rotary dimension ", rotary_dims,
           " must be even and at most the head dimension ", head_dim);
  LL_CHECK(rows <= 2147483647, "rope: too many rows: ", rows);
  if (half % kVec == 0 && head_dim % kVec == 0 && aligned16(x)) {
    rope_vec_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, positions, heads, head_dim, half, rates, float(sign));
    LL_LAUNCH_CHECK("rope_vec_kernel");
  } else {
    rope_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, positions, heads, head_dim, half, rates, float(sign));
    LL_LAUNCH_CHECK("rope_kernel");
  }
}

}  // namespace ll::cuda
