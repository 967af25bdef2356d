// Generic attention kernels (CUDA cores, f32, any head dim <= 256) and the split-KV decode path. See attention.cuh.
// One warp per row: lane l holds dims l, l+32, … (kMaxPerLane = 8 registers); dot products are warp sums.
#include "cuda/attention.cuh"

namespace ll::cuda {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kMaxPerLane = int(cuda_plan::kMaxHeadDim / 32);
constexpr int kWarps = 4;

// x[d] for this lane's dims (0 past the head dim).
__device__ __forceinline__ void load_row(float (&r)[kMaxPerLane], const bf16* x, int64_t dh, int lane) {
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t dd = lane + 32 * t;
    r[t] = dd < dh ? to_f32(x[dd]) : 0.f;
  }
}

__device__ __forceinline__ float row_dot(const float (&a)[kMaxPerLane], const bf16* x, int64_t dh, int lane) {
  float s = 0.f;
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t dd = lane + 32 * t;
    if (dd < dh) s += a[t] * to_f32(x[dd]);
  }
  return warp_sum(s);
}

__device__ __forceinline__ void store_row(bf16* x, const float (&r)[kMaxPerLane], float scale, int64_t dh, int lane) {
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t dd = lane + 32 * t;
    if (dd < dh) x[dd] = to_bf16(r[t] * scale);
  }
}

// One warp per (b, h, i) row of the queries.
__global__ void attention_forward_generic_kernel(AttentionForwardArgs p) {
  const AttentionDims& d = p.dims;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);  // ((b·L + i)·H + h)
  if (row >= d.batch * d.seq_len * d.heads) return;
  const int64_t h = row % d.heads, i = (row / d.heads) % d.seq_len, b = row / (d.heads * d.seq_len);
  const int64_t hk = h / (d.heads / d.kv_heads), dh = d.head_dim;
  const float scale_log2 = kLog2e / sqrtf(float(dh));
  float q[kMaxPerLane], acc[kMaxPerLane];
  load_row(q, p.q + row * dh, dh, lane);
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) acc[t] = 0.f;
  float m = -INFINITY, l = 0.f;
  const KeyRanges r = attended_keys(p.mask, h, d.heads, d.kv_len, i + d.kv_len - d.seq_len);
  auto visit = [&](int64_t j) {
    const int64_t kv = ((b * d.kv_len + j) * d.kv_heads + hk) * dh;
    const float s = row_dot(q, p.k + kv, dh, lane) * scale_log2;
    const float m_new = fmaxf(m, s);
    const float alpha = exp2f(m - m_new), pj = exp2f(s - m_new);
    l = l * alpha + pj;
#pragma unroll
    for (int t = 0; t < kMaxPerLane; ++t) {
      const int64_t dd = lane + 32 * t;
      acc[t] = acc[t] * alpha + (dd < dh ? pj * to_f32(p.v[kv + dd]) : 0.f);
    }
    m = m_new;
  };
  for (int64_t j = r.lo; j <= r.hi; ++j) visit(j);
  for (int64_t j = r.wrap_lo; j < r.wrap_hi; ++j) visit(j);
  store_row(p.out + row * dh, acc, l > 0.f ? 1.f / l : 0.f, dh, lane);
  if (lane == 0) p.lse[(b * d.heads + h) * d.seq_len + i] = (m + log2f(l)) * kLn2;
}

__global__ void attention_delta_kernel(AttentionBackwardArgs p) {
  const AttentionDims& d = p.dims;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= d.batch * d.seq_len * d.heads) return;
  const int64_t h = row % d.heads, i = (row / d.heads) % d.seq_len, b = row / (d.heads * d.seq_len);
  const bf16* o = p.out + row * d.head_dim;
  const bf16* dout = p.dout + row * d.head_dim;
  float s = 0.f;
  for (int64_t dd = lane; dd < d.head_dim; dd += 32) s += to_f32(o[dd]) * to_f32(dout[dd]);
  s = warp_sum(s);
  if (lane == 0) p.delta[(b * d.heads + h) * d.seq_len + i] = s;
}

// dQ: one warp per query row.
__global__ void attention_dq_generic_kernel(AttentionBackwardArgs p) {
  const AttentionDims& d = p.dims;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= d.batch * d.seq_len * d.heads) return;
  const int64_t h = row % d.heads, i = (row / d.heads) % d.seq_len, b = row / (d.heads * d.seq_len);
  const int64_t hk = h / (d.heads / d.kv_heads), dh = d.head_dim;
  const float scale = 1.f / sqrtf(float(dh)), scale_log2 = scale * kLog2e;
  const int64_t stat = (b * d.heads + h) * d.seq_len + i;
  const float lse = p.lse[stat] * kLog2e, delta = p.delta[stat];
  float q[kMaxPerLane], go[kMaxPerLane], dq[kMaxPerLane];
  load_row(q, p.q + row * dh, dh, lane);
  load_row(go, p.dout + row * dh, dh, lane);
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) dq[t] = 0.f;
  const KeyRanges r = attended_keys(p.mask, h, d.heads, d.kv_len, i + d.kv_len - d.seq_len);
  auto visit = [&](int64_t j) {
    const int64_t kv = ((b * d.kv_len + j) * d.kv_heads + hk) * dh;
    const float pj = exp2f(row_dot(q, p.k + kv, dh, lane) * scale_log2 - lse);
    const float ds = pj * (row_dot(go, p.v + kv, dh, lane) - delta);
#pragma unroll
    for (int t = 0; t < kMaxPerLane; ++t) {
      const int64_t dd = lane + 32 * t;
      if (dd < dh) dq[t] += ds * to_f32(p.k[kv + dd]);
    }
  };
  for (int64_t j = r.lo; j <= r.hi; ++j) visit(j);
  for (int64_t j = r.wrap_lo; j < r.wrap_hi; ++j) visit(j);
  store_row(p.dq + row * dh, dq, scale, dh, lane);
}

// dK, dV: one warp per key row (b, j, hk); loops over the group's query heads and the queries attending j.
__global__ void attention_dkdv_generic_kernel(AttentionBackwardArgs p) {
  const AttentionDims& d = p.dims;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);  // ((b·Lk + j)·Hkv + hk)
  if (row >= d.batch * d.kv_len * d.kv_heads) return;
  const int64_t hk = row % d.kv_heads, j = (row / d.kv_heads) % d.kv_len, b = row / (d.kv_heads * d.kv_len);
  const int64_t group = d.heads / d.kv_heads, dh = d.head_dim;
  const float scale = 1.f / sqrtf(float(dh)), scale_log2 = scale * kLog2e;
  float k[kMaxPerLane], v[kMaxPerLane], dk[kMaxPerLane], dv[kMaxPerLane];
  load_row(k, p.k + row * dh, dh, lane);
  load_row(v, p.v + row * dh, dh, lane);
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) dk[t] = dv[t] = 0.f;
  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    const cuda_plan::QueryRanges r = cuda_plan::attending_queries(p.mask, h, d.heads, d.seq_len, d.kv_len, j);
    auto visit = [&](int64_t i) {
      const int64_t qo = ((b * d.seq_len + i) * d.heads + h) * dh;
      const int64_t stat = (b * d.heads + h) * d.seq_len + i;
      const float pij = exp2f(row_dot(k, p.q + qo, dh, lane) * scale_log2 - p.lse[stat] * kLog2e);
      const float ds = pij * (row_dot(v, p.dout + qo, dh, lane) - p.delta[stat]);
#pragma unroll
      for (int t = 0; t < kMaxPerLane; ++t) {
        const int64_t dd = lane + 32 * t;
        if (dd < dh) {
          dv[t] += pij * to_f32(p.dout[qo + dd]);
          dk[t] += ds * to_f32(p.q[qo + dd]);
        }
      }
    };
    for (int64_t i = r.lo; i <= r.hi; ++i) visit(i);
    for (int64_t i = r.wrap_lo; i < r.wrap_hi; ++i) visit(i);
  }
  store_row(p.dk + row * dh, dk, scale, dh, lane);
  store_row(p.dv + row * dh, dv, 1.f, dh, lane);
}

// ---- split-KV decode ------------------------------------------------------------------------------------------------
constexpr int kDecodeRows = int(cuda_plan::kDecodeMaxQueries);

// grid (splits, B·H), 4 warps. Warp w takes keys w, w+4, … of the split's chunk for every query row, then the four
// warps' (max, sum, acc) are merged in warp order through shared memory into this split's partial.
template <int kPerLane>
__global__ void attention_decode_kernel(AttentionForwardArgs p, int64_t chunk, int64_t splits, float* partial_o,
                                        float* partial_ml) {
  __shared__ float s_m[kWarps][kDecodeRows], s_l[kWarps][kDecodeRows];
  __shared__ float s_acc[kWarps][kDecodeRows][kPerLane * 32];
  const AttentionDims& d = p.dims;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t split = blockIdx.x, bh = blockIdx.y, b = bh / d.heads, h = bh % d.heads;
  const int64_t hk = h / (d.heads / d.kv_heads), dh = kPerLane * 32, rows = d.seq_len;
  const int64_t q_off = d.kv_len - d.seq_len;
  const float scale_log2 = kLog2e / sqrtf(float(dh));
  const int64_t j0 = split * chunk, j1 = j0 + chunk < d.kv_len ? j0 + chunk : d.kv_len;

  float q[kDecodeRows][kPerLane], acc[kDecodeRows][kPerLane], m[kDecodeRows], l[kDecodeRows];
#pragma unroll
  for (int r = 0; r < kDecodeRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) {
      acc[r][t] = 0.f;
      q[r][t] = r < rows ? to_f32(p.q[((b * d.seq_len + r) * d.heads + h) * dh + lane + 32 * t]) : 0.f;
    }
  }
  for (int64_t j = j0 + warp; j < j1; j += kWarps) {
    const int64_t kv = ((b * d.kv_len + j) * d.kv_heads + hk) * dh;
    float kr[kPerLane], vr[kPerLane];
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) {
      kr[t] = to_f32(p.k[kv + lane + 32 * t]);
      vr[t] = to_f32(p.v[kv + lane + 32 * t]);
    }
#pragma unroll
    for (int r = 0; r < kDecodeRows; ++r) {
      if (r >= rows || j > r + q_off) continue;  // causal: query r sits at position r + q_off
      float s = 0.f;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) s += q[r][t] * kr[t];
      s = warp_sum(s) * scale_log2;
      const float m_new = fmaxf(m[r], s);
      const float alpha = exp2f(m[r] - m_new), pj = exp2f(s - m_new);
      l[r] = l[r] * alpha + pj;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) acc[r][t] = acc[r][t] * alpha + pj * vr[t];
      m[r] = m_new;
    }
  }
#pragma unroll
  for (int r = 0; r < kDecodeRows; ++r) {
    if (lane == 0) s_m[warp][r] = m[r], s_l[warp][r] = l[r];
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) s_acc[warp][r][lane + 32 * t] = acc[r][t];
  }
  __syncthreads();
  const int64_t base = (bh * splits + split) * rows;
  for (int64_t idx = threadIdx.x; idx < rows * dh; idx += blockDim.x) {
    const int r = int(idx / dh), dd = int(idx % dh);
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_m[w][r]);
    float a = 0.f, sum = 0.f;
    for (int w = 0; w < kWarps; ++w) {
      const float f = s_m[w][r] == -INFINITY ? 0.f : exp2f(s_m[w][r] - mx);
      a += s_acc[w][r][dd] * f;
      sum += s_l[w][r] * f;
    }
    partial_o[(base + r) * dh + dd] = a;
    if (dd == 0) {
      partial_ml[(base + r) * 2] = mx;
      partial_ml[(base + r) * 2 + 1] = sum;
    }
  }
}

// grid (B·H): merges the splits in order.
__global__ void attention_decode_combine_kernel(AttentionForwardArgs p, int64_t splits, const float* partial_o,
                                                const float* partial_ml) {
  const AttentionDims& d = p.dims;
  const int64_t bh = blockIdx.x, b = bh / d.heads, h = bh % d.heads, dh = d.head_dim, rows = d.seq_len;
  for (int64_t idx = threadIdx.x; idx < rows * dh; idx += blockDim.x) {
    const int64_t r = idx / dh, dd = idx % dh;
    float mx = -INFINITY;
    for (int64_t s = 0; s < splits; ++s) mx = fmaxf(mx, partial_ml[((bh * splits + s) * rows + r) * 2]);
    float num = 0.f, den = 0.f;
    for (int64_t s = 0; s < splits; ++s) {
      const int64_t at = (bh * splits + s) * rows + r;
      const float ms = partial_ml[at * 2];
      const float f = ms == -INFINITY ? 0.f : exp2f(ms - mx);
      num += partial_o[at * dh + dd] * f;
      den += partial_ml[at * 2 + 1] * f;
    }
    p.out[((b * d.seq_len + r) * d.heads + h) * dh + dd] = to_bf16(den > 0.f ? num / den : 0.f);
    if (dd == 0) p.lse[(b * d.heads + h) * d.seq_len + r] = (mx + log2f(den)) * kLn2;
  }
}

unsigned warp_blocks(int64_t rows) { return unsigned((rows + kWarps - 1) / kWarps); }

void check_rows(int64_t rows, const char* what) {
  LL_CHECK((rows + kWarps - 1) / kWarps <= 2147483647, what, ": ", rows, " rows exceed the launch grid");
}

}  // namespace

void launch_attention_forward_generic(const AttentionForwardArgs& a, cudaStream_t s) {
  const int64_t rows = a.dims.batch * a.dims.seq_len * a.dims.heads;
  if (rows == 0) return;
  check_rows(rows, "attention_forward (generic)");
  attention_forward_generic_kernel<<<warp_blocks(rows), kWarps * 32, 0, s>>>(a);
  LL_LAUNCH_CHECK("attention_forward_generic_kernel");
}

void launch_attention_delta(const AttentionBackwardArgs& a, cudaStream_t s) {
  const int64_t rows = a.dims.batch * a.dims.seq_len * a.dims.heads;
  if (rows == 0) return;
  check_rows(rows, "attention_backward (delta)");
  attention_delta_kernel<<<warp_blocks(rows), kWarps * 32, 0, s>>>(a);
  LL_LAUNCH_CHECK("attention_delta_kernel");
}

void launch_attention_backward_generic(const AttentionBackwardArgs& a, cudaStream_t s) {
  const int64_t q_rows = a.dims.batch * a.dims.seq_len * a.dims.heads;
  const int64_t kv_rows = a.dims.batch * a.dims.kv_len * a.dims.kv_heads;
  check_rows(q_rows, "attention_backward (generic dq)");
  check_rows(kv_rows, "attention_backward (generic dk/dv)");
  launch_attention_delta(a, s);
  if (kv_rows > 0) {
    attention_dkdv_generic_kernel<<<warp_blocks(kv_rows), kWarps * 32, 0, s>>>(a);
    LL_LAUNCH_CHECK("attention_dkdv_generic_kernel");
  }
  if (q_rows > 0) {
    attention_dq_generic_kernel<<<warp_blocks(q_rows), kWarps * 32, 0, s>>>(a);
    LL_LAUNCH_CHECK("attention_dq_generic_kernel");
  }
}

void launch_attention_decode(const AttentionForwardArgs& a, const cuda_plan::DecodePlan& plan, float* partial_o,
                             float* partial_ml, cudaStream_t s) {
  const AttentionDims& d = a.dims;
  if (d.batch == 0 || d.seq_len == 0) return;
  LL_CHECK(d.seq_len <= cuda_plan::kDecodeMaxQueries && d.head_dim % 32 == 0 && d.head_dim <= cuda_plan::kMaxHeadDim,
           "attention decode: needs <= ", cuda_plan::kDecodeMaxQueries, " query rows and a head dim multiple of 32");
  LL_CHECK(d.batch * d.heads <= 65535, "attention decode: batch × heads exceeds the grid's y limit");
  const dim3 grid(unsigned(plan.splits), unsigned(d.batch * d.heads));
  switch (d.head_dim / 32) {
    case 1: attention_decode_kernel<1><<<grid, kWarps * 32, 0, s>>>(a, plan.chunk, plan.splits, partial_o, partial_ml); break;
    case 2: attention_decode_kernel<2><<<grid, kWarps * 32, 0, s>>>(a, plan.chunk, plan.splits, partial_o, partial_ml); break;
    case 3: attention_decode_kernel<3><<<grid, kWarps * 32, 0, s>>>(a, plan.chunk, plan.splits, partial_o, partial_ml); break;
    case 4: attention_decode_kernel<4><<<grid, kWarps * 32, 0, s>>>(a, plan.chunk, plan.splits, partial_o, partial_ml); break;
    case 5: attention_decode_kernel<5><<<grid, kWarps * 32, 0, s>>>(a, plan.chunk, plan.splits, partial_o, partial_ml); break;
    case 6: attention_decode_kernel<6><<<grid, kWarps * 32, 0, s>>>(a, plan.chunk, plan.splits, partial_o, partial_ml); break;
    case 7: attention_decode_kernel<7><<<grid, kWarps * 32, 0, s>>>(a, plan.chunk, plan.splits, partial_o, partial_ml); break;
    case 8: attention_decode_kernel<8><<<grid, kWarps * 32, 0, s>>>(a, plan.chunk, plan.splits, partial_o, partial_ml); break;
    default: fail("attention decode: unsupported head dim ", d.head_dim);
  }
  LL_LAUNCH_CHECK("attention_decode_kernel");
  attention_decode_combine_kernel<<<unsigned(d.batch * d.heads), 256, 0, s>>>(a, plan.splits, partial_o, partial_ml);
  LL_LAUNCH_CHECK("attention_decode_combine_kernel");
}

}  // namespace ll::cuda
