// Tensor-core flash attention (sm_80+: mma.sync.m16n8k16 bf16 → f32, ldmatrix, cp.async). See attention.cuh.
//
// Fragment conventions (PTX ISA, mma.m16n8k16 with .bf16), lane = 4·g + t (g = lane/4, t = lane%4):
//   A 16×16 (row-major): reg0 = A[g][2t..2t+1], reg1 = A[g+8][2t..], reg2 = A[g][2t+8..], reg3 = A[g+8][2t+8..]
//   B 16×8  (k × n):     reg0 = B[2t..2t+1][g],  reg1 = B[2t+8..2t+9][g]
//   C 16×8  (f32):       c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// A C tile pair (n-tiles 2k, 2k+1) re-packed to bf16 is exactly an A fragment for k-tile k: that is how P and dS
// feed the next product without a trip through shared memory.
//
// Shared-memory tiles are [rows][Dh + 8] bf16: the 16-byte pad makes the 8 row addresses of every ldmatrix phase
// hit distinct banks. Out-of-range rows are zero-filled by cp.async (src-size 0) and masked.
#include <cuda_bf16.h>

#include "cuda/attention.cuh"

namespace ll::cuda {

namespace {

using cuda_plan::TileSpan;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kThreads = 128;  // 4 warps

// ---- PTX wrappers ------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// c += a · b
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo (lower address), .y = hi
  return *reinterpret_cast<const uint32_t*>(&v);
}

// ---- fragment loads from a [rows][kStride] bf16 tile ----------------------------------------------------------
// A fragment (16 rows × 16 k) at (row0, k0) of a row-major tile.
template <int kStride>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* tile, int row0, int k0, int lane) {
  ldmatrix_x4(a, tile + (row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + k0 + ((lane >> 4) & 1) * 8);
}
// B fragments for two n-tiles (n0..n0+7, n0+8..n0+15) × 16 k, from a tile stored [n][k] (e.g. K rows for QKᵀ):
// b[0], b[1] for n-tile n0; b[2], b[3] for n-tile n0 + 8.
template <int kStride>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const bf16* tile, int n0, int k0, int lane) {
  ldmatrix_x4(b, tile + (n0 + (lane & 7) + ((lane >> 4) & 1) * 8) * kStride + k0 + ((lane >> 3) & 1) * 8);
}
// B fragments for two n-tiles × 16 k from a tile stored [k][n] (e.g. V rows for PV): b[0], b[1] for n-tile n0;
// b[2], b[3] for n-tile n0 + 8.
template <int kStride>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const bf16* tile, int k0, int n0, int lane) {
  ldmatrix_x4_trans(b, tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + n0 + ((lane >> 4) & 1) * 8);
}

// Loads `rows` rows of Dh bf16 (global row r at base + r·gstride) into a [rows][Dh + 8] tile; rows at or beyond
// `limit` are zero-filled. All threads of the CTA take part; the caller commits and waits.
template <int Dh, int kRows>
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* base, int64_t gstride, int64_t row0, int64_t limit,
                                          int tid) {
  constexpr int kChunks = Dh / 8;  // 16-byte chunks per row
  constexpr int kStride = Dh + 8;
#pragma unroll 4
  for (int c = tid; c < kRows * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool valid = row0 + r < limit;
    const bf16* src = valid ? base + (row0 + r) * gstride + col : base;
    cp_async_16(tile + r * kStride + col, src, valid);
  }
}

__device__ __forceinline__ bool key_ok(const KeyRanges& r, int64_t j) { return cuda_plan::in_ranges(r, j); }
__device__ __forceinline__ bool query_ok(const cuda_plan::QueryRanges& r, int64_t i) {
  return (i >= r.lo && i <= r.hi) || (i >= r.wrap_lo && i < r.wrap_hi);
}

// An empty range set for rows outside the sequence.
__device__ __forceinline__ KeyRanges no_keys() { return KeyRanges{1, 0, 0, 0}; }

template <int Dh>
constexpr size_t forward_smem_bytes() {
  return size_t(3) * 64 * (Dh + 8) * sizeof(bf16);
}
template <int Dh>
constexpr size_t dq_smem_bytes() {
  return size_t(4) * 64 * (Dh + 8) * sizeof(bf16);
}
template <int Dh>
constexpr size_t dkdv_smem_bytes() {
  return size_t(2) * 64 * (Dh + 8) * sizeof(bf16) + size_t(2) * 32 * (Dh + 8) * sizeof(bf16) + 2 * 32 * sizeof(float);
}

// ---- forward -----------------------------------------------------------------------------------------------------
// grid (query tiles of 64, B·H); 4 warps, warp w owns rows [16w, 16w + 16) of the tile.
template <int Dh>
__global__ void __launch_bounds__(kThreads) attention_forward_tc_kernel(AttentionForwardArgs p) {
  constexpr int S = Dh + 8;
  constexpr int kKT = Dh / 16;  // k-steps over the head dim
  constexpr int kDT = Dh / 8;   // n-tiles over the head dim
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sK = sQ + 64 * S;
  bf16* sV = sK + 64 * S;

  const AttentionDims& d = p.dims;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bh = blockIdx.y, b = bh / d.heads, h = bh % d.heads, hk = h / (d.heads / d.kv_heads);
  const int64_t row0 = int64_t(blockIdx.x) * 64;
  const int64_t q_off = d.kv_len - d.seq_len;
  const int64_t q_stride = d.heads * Dh, kv_stride = d.kv_heads * Dh;
  const bf16* qbase = p.q + (b * d.seq_len * d.heads + h) * Dh;
  const bf16* kbase = p.k + (b * d.kv_len * d.kv_heads + hk) * Dh;
  const bf16* vbase = p.v + (b * d.kv_len * d.kv_heads + hk) * Dh;

  load_tile<Dh, 64>(sQ, qbase, q_stride, row0, d.seq_len, tid);
  cp_async_commit();

  const int64_t ra = row0 + warp * 16 + g, rb = ra + 8;  // this thread's two rows
  const KeyRanges rng_a = ra < d.seq_len ? attended_keys(p.mask, h, d.heads, d.kv_len, ra + q_off) : no_keys();
  const KeyRanges rng_b = rb < d.seq_len ? attended_keys(p.mask, h, d.heads, d.kv_len, rb + q_off) : no_keys();
  const TileSpan span = cuda_plan::key_tile_span(p.mask, h, d.heads, d.seq_len, d.kv_len, row0, row0 + 64, 64);
  const float scale_log2 = kLog2e / sqrtf(float(Dh));

  float o[kDT][4];
#pragma unroll
  for (int i = 0; i < kDT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;

  const int64_t tiles = span.count();
  for (int64_t n = 0; n < tiles; ++n) {
    const int64_t key0 = span.at(n) * 64;
    __syncthreads();  // every warp is done with the previous K/V tiles
    load_tile<Dh, 64>(sK, kbase, kv_stride, key0, d.kv_len, tid);
    load_tile<Dh, 64>(sV, vbase, kv_stride, key0, d.kv_len, tid);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    // S = Q·Kᵀ for 16 rows × 64 keys.
    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kKT; ++kk) {
      uint32_t a[4];
      load_a<S>(a, sQ, warp * 16, kk * 16, lane);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t bfr[4];
        load_b_nk<S>(bfr, sK, np * 16, kk * 16, lane);
        mma_16816(s[2 * np], a, bfr[0], bfr[1]);
        mma_16816(s[2 * np + 1], a, bfr[2], bfr[3]);
      }
    }

    // Mask, scale to log2 units, online softmax.
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t j = key0 + nt * 8 + t4 * 2 + e;
        s[nt][e] = key_ok(rng_a, j) ? s[nt][e] * scale_log2 : -INFINITY;
        s[nt][e + 2] = key_ok(rng_b, j) ? s[nt][e + 2] * scale_log2 : -INFINITY;
        mx_a = fmaxf(mx_a, s[nt][e]);
        mx_b = fmaxf(mx_b, s[nt][e + 2]);
      }
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
    const float new_a = fmaxf(m_a, mx_a), new_b = fmaxf(m_b, mx_b);
    const float base_a = new_a == -INFINITY ? 0.f : new_a, base_b = new_b == -INFINITY ? 0.f : new_b;
    const float alpha_a = exp2f(m_a - base_a), alpha_b = exp2f(m_b - base_b);
    m_a = new_a;
    m_b = new_b;
    float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - base_a);
      s[nt][1] = exp2f(s[nt][1] - base_a);
      s[nt][2] = exp2f(s[nt][2] - base_b);
      s[nt][3] = exp2f(s[nt][3] - base_b);
      sum_a += s[nt][0] + s[nt][1];
      sum_b += s[nt][2] + s[nt][3];
    }
    l_a = l_a * alpha_a + sum_a;  // per-thread partial sums; the quad is summed at the end
    l_b = l_b * alpha_b + sum_b;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      o[dt][0] *= alpha_a;
      o[dt][1] *= alpha_a;
      o[dt][2] *= alpha_b;
      o[dt][3] *= alpha_b;
    }

    // O += P·V, P re-packed from the S accumulators.
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      uint32_t pa[4];
      pa[0] = pack_bf16(s[2 * kt][0], s[2 * kt][1]);
      pa[1] = pack_bf16(s[2 * kt][2], s[2 * kt][3]);
      pa[2] = pack_bf16(s[2 * kt + 1][0], s[2 * kt + 1][1]);
      pa[3] = pack_bf16(s[2 * kt + 1][2], s[2 * kt + 1][3]);
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        uint32_t bfr[4];
        load_b_kn<S>(bfr, sV, kt * 16, dp * 16, lane);
        mma_16816(o[2 * dp], pa, bfr[0], bfr[1]);
        mma_16816(o[2 * dp + 1], pa, bfr[2], bfr[3]);
      }
    }
  }

  cp_async_wait_all();  // no copy may be in flight when the CTA exits (an empty span never waited)
  l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
  l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
  l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
  l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
  const float inv_a = l_a > 0.f ? 1.f / l_a : 0.f, inv_b = l_b > 0.f ? 1.f / l_b : 0.f;
  if (ra < d.seq_len) {
    bf16* orow = p.out + ((b * d.seq_len + ra) * d.heads + h) * Dh;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
      *reinterpret_cast<uint32_t*>(orow + dt * 8 + t4 * 2) = pack_bf16(o[dt][0] * inv_a, o[dt][1] * inv_a);
    if (t4 == 0) p.lse[(b * d.heads + h) * d.seq_len + ra] = (m_a + log2f(l_a)) * kLn2;
  }
  if (rb < d.seq_len) {
    bf16* orow = p.out + ((b * d.seq_len + rb) * d.heads + h) * Dh;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
      *reinterpret_cast<uint32_t*>(orow + dt * 8 + t4 * 2) = pack_bf16(o[dt][2] * inv_b, o[dt][3] * inv_b);
    if (t4 == 0) p.lse[(b * d.heads + h) * d.seq_len + rb] = (m_b + log2f(l_b)) * kLn2;
  }
}

// ---- backward: dQ ------------------------------------------------------------------------------------------------
// grid (query tiles of 64, B·H). Per key tile: S = Q·Kᵀ, P = exp(S·scale − lse), dP = dO·Vᵀ, dS = P ⊙ (dP − δ),
// dQ += dS·K; dQ ·= scale at the end.
template <int Dh>
__global__ void __launch_bounds__(kThreads) attention_dq_tc_kernel(AttentionBackwardArgs p) {
  constexpr int S = Dh + 8;
  constexpr int kKT = Dh / 16;
  constexpr int kDT = Dh / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sdO = sQ + 64 * S;
  bf16* sK = sdO + 64 * S;
  bf16* sV = sK + 64 * S;

  const AttentionDims& d = p.dims;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bh = blockIdx.y, b = bh / d.heads, h = bh % d.heads, hk = h / (d.heads / d.kv_heads);
  const int64_t row0 = int64_t(blockIdx.x) * 64;
  const int64_t q_off = d.kv_len - d.seq_len;
  const int64_t q_stride = d.heads * Dh, kv_stride = d.kv_heads * Dh;
  const int64_t qo_base = (b * d.seq_len * d.heads + h) * Dh;
  const bf16* kbase = p.k + (b * d.kv_len * d.kv_heads + hk) * Dh;
  const bf16* vbase = p.v + (b * d.kv_len * d.kv_heads + hk) * Dh;

  load_tile<Dh, 64>(sQ, p.q + qo_base, q_stride, row0, d.seq_len, tid);
  load_tile<Dh, 64>(sdO, p.dout + qo_base, q_stride, row0, d.seq_len, tid);
  cp_async_commit();

  const int64_t ra = row0 + warp * 16 + g, rb = ra + 8;
  const KeyRanges rng_a = ra < d.seq_len ? attended_keys(p.mask, h, d.heads, d.kv_len, ra + q_off) : no_keys();
  const KeyRanges rng_b = rb < d.seq_len ? attended_keys(p.mask, h, d.heads, d.kv_len, rb + q_off) : no_keys();
  const int64_t stat = (b * d.heads + h) * d.seq_len;
  const float lse_a = ra < d.seq_len ? p.lse[stat + ra] * kLog2e : 0.f;
  const float lse_b = rb < d.seq_len ? p.lse[stat + rb] * kLog2e : 0.f;
  const float del_a = ra < d.seq_len ? p.delta[stat + ra] : 0.f;
  const float del_b = rb < d.seq_len ? p.delta[stat + rb] : 0.f;
  const TileSpan span = cuda_plan::key_tile_span(p.mask, h, d.heads, d.seq_len, d.kv_len, row0, row0 + 64, 64);
  const float scale = 1.f / sqrtf(float(Dh)), scale_log2 = scale * kLog2e;

  float dq[kDT][4];
#pragma unroll
  for (int i = 0; i < kDT; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;

  const int64_t tiles = span.count();
  for (int64_t n = 0; n < tiles; ++n) {
    const int64_t key0 = span.at(n) * 64;
    __syncthreads();
    load_tile<Dh, 64>(sK, kbase, kv_stride, key0, d.kv_len, tid);
    load_tile<Dh, 64>(sV, vbase, kv_stride, key0, d.kv_len, tid);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    float s[8][4], dp[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kKT; ++kk) {
      uint32_t aq[4], ado[4];
      load_a<S>(aq, sQ, warp * 16, kk * 16, lane);
      load_a<S>(ado, sdO, warp * 16, kk * 16, lane);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t bk[4], bv[4];
        load_b_nk<S>(bk, sK, np * 16, kk * 16, lane);
        load_b_nk<S>(bv, sV, np * 16, kk * 16, lane);
        mma_16816(s[2 * np], aq, bk[0], bk[1]);
        mma_16816(s[2 * np + 1], aq, bk[2], bk[3]);
        mma_16816(dp[2 * np], ado, bv[0], bv[1]);
        mma_16816(dp[2 * np + 1], ado, bv[2], bv[3]);
      }
    }
    // dS = P ⊙ (dP − δ), in place of s.
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t j = key0 + nt * 8 + t4 * 2 + e;
        const float pa = key_ok(rng_a, j) ? exp2f(s[nt][e] * scale_log2 - lse_a) : 0.f;
        const float pb = key_ok(rng_b, j) ? exp2f(s[nt][e + 2] * scale_log2 - lse_b) : 0.f;
        s[nt][e] = pa * (dp[nt][e] - del_a);
        s[nt][e + 2] = pb * (dp[nt][e + 2] - del_b);
      }
    // dQ += dS·K (K stored [key][dim] = B[k = key][n = dim]).
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      uint32_t da[4];
      da[0] = pack_bf16(s[2 * kt][0], s[2 * kt][1]);
      da[1] = pack_bf16(s[2 * kt][2], s[2 * kt][3]);
      da[2] = pack_bf16(s[2 * kt + 1][0], s[2 * kt + 1][1]);
      da[3] = pack_bf16(s[2 * kt + 1][2], s[2 * kt + 1][3]);
#pragma unroll
      for (int dpair = 0; dpair < kDT / 2; ++dpair) {
        uint32_t bfr[4];
        load_b_kn<S>(bfr, sK, kt * 16, dpair * 16, lane);
        mma_16816(dq[2 * dpair], da, bfr[0], bfr[1]);
        mma_16816(dq[2 * dpair + 1], da, bfr[2], bfr[3]);
      }
    }
  }

  cp_async_wait_all();
  if (ra < d.seq_len) {
    bf16* row = p.dq + ((b * d.seq_len + ra) * d.heads + h) * Dh;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
      *reinterpret_cast<uint32_t*>(row + dt * 8 + t4 * 2) = pack_bf16(dq[dt][0] * scale, dq[dt][1] * scale);
  }
  if (rb < d.seq_len) {
    bf16* row = p.dq + ((b * d.seq_len + rb) * d.heads + h) * Dh;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
      *reinterpret_cast<uint32_t*>(row + dt * 8 + t4 * 2) = pack_bf16(dq[dt][2] * scale, dq[dt][3] * scale);
  }
}

// ---- backward: dK, dV ------------------------------------------------------------------------------------------------
// grid (key tiles of 64, B·Hkv); warp w owns keys [16w, 16w + 16) of the tile. For every query head of the group and
// every 32-query tile attending the keys: Sᵀ = K·Qᵀ, Pᵀ = exp(Sᵀ·scale − lse), dV += Pᵀ·dO, dPᵀ = V·dOᵀ,
// dSᵀ = Pᵀ ⊙ (dPᵀ − δ), dK += dSᵀ·Q; dK ·= scale at the end.
template <int Dh>
__global__ void __launch_bounds__(kThreads) attention_dkdv_tc_kernel(AttentionBackwardArgs p) {
  constexpr int S = Dh + 8;
  constexpr int kKT = Dh / 16;
  constexpr int kDT = Dh / 8;
  constexpr int kQ = 32;  // queries per step
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);
  bf16* sV = sK + 64 * S;
  bf16* sQ = sV + 64 * S;
  bf16* sdO = sQ + kQ * S;
  float* sLse = reinterpret_cast<float*>(sdO + kQ * S);
  float* sDel = sLse + kQ;

  const AttentionDims& d = p.dims;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bhk = blockIdx.y, b = bhk / d.kv_heads, hk = bhk % d.kv_heads;
  const int64_t group = d.heads / d.kv_heads;
  const int64_t key0 = int64_t(blockIdx.x) * 64;
  const int64_t q_stride = d.heads * Dh, kv_stride = d.kv_heads * Dh;
  const int64_t kv_base = (b * d.kv_len * d.kv_heads + hk) * Dh;

  load_tile<Dh, 64>(sK, p.k + kv_base, kv_stride, key0, d.kv_len, tid);
  load_tile<Dh, 64>(sV, p.v + kv_base, kv_stride, key0, d.kv_len, tid);
  cp_async_commit();

  const int64_t ja = key0 + warp * 16 + g, jb = ja + 8;  // this thread's two keys
  const float scale = 1.f / sqrtf(float(Dh)), scale_log2 = scale * kLog2e;

  float dk[kDT][4], dv[kDT][4];
#pragma unroll
  for (int i = 0; i < kDT; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;

  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    const cuda_plan::QueryRanges none{1, 0, 0, 0};
    const cuda_plan::QueryRanges qa =
        ja < d.kv_len ? cuda_plan::attending_queries(p.mask, h, d.heads, d.seq_len, d.kv_len, ja) : none;
    const cuda_plan::QueryRanges qb =
        jb < d.kv_len ? cuda_plan::attending_queries(p.mask, h, d.heads, d.seq_len, d.kv_len, jb) : none;
    const TileSpan span = cuda_plan::query_tile_span(p.mask, h, d.heads, d.seq_len, d.kv_len, key0, key0 + 64, kQ);
    const int64_t qo_base = (b * d.seq_len * d.heads + h) * Dh;
    const int64_t stat = (b * d.heads + h) * d.seq_len;
    const int64_t tiles = span.count();
    for (int64_t n = 0; n < tiles; ++n) {
      const int64_t q0 = span.at(n) * kQ;
      __syncthreads();
      load_tile<Dh, kQ>(sQ, p.q + qo_base, q_stride, q0, d.seq_len, tid);
      load_tile<Dh, kQ>(sdO, p.dout + qo_base, q_stride, q0, d.seq_len, tid);
      cp_async_commit();
      if (tid < kQ) {
        const bool valid = q0 + tid < d.seq_len;
        sLse[tid] = valid ? p.lse[stat + q0 + tid] * kLog2e : 0.f;
        sDel[tid] = valid ? p.delta[stat + q0 + tid] : 0.f;
      }
      cp_async_wait_all();
      __syncthreads();

      // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: 16 keys × 32 queries per warp.
      float s[4][4], dp[4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kKT; ++kk) {
        uint32_t ak[4], av[4];
        load_a<S>(ak, sK, warp * 16, kk * 16, lane);
        load_a<S>(av, sV, warp * 16, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t bq[4], bo[4];
          load_b_nk<S>(bq, sQ, np * 16, kk * 16, lane);
          load_b_nk<S>(bo, sdO, np * 16, kk * 16, lane);
          mma_16816(s[2 * np], ak, bq[0], bq[1]);
          mma_16816(s[2 * np + 1], ak, bq[2], bq[3]);
          mma_16816(dp[2 * np], av, bo[0], bo[1]);
          mma_16816(dp[2 * np + 1], av, bo[2], bo[3]);
        }
      }
      // Pᵀ into s, dSᵀ into dp.
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = nt * 8 + t4 * 2 + e;
          const int64_t i = q0 + col;
          const float pa = query_ok(qa, i) ? exp2f(s[nt][e] * scale_log2 - sLse[col]) : 0.f;
          const float pb = query_ok(qb, i) ? exp2f(s[nt][e + 2] * scale_log2 - sLse[col]) : 0.f;
          s[nt][e] = pa;
          s[nt][e + 2] = pb;
          dp[nt][e] = pa * (dp[nt][e] - sDel[col]);
          dp[nt][e + 2] = pb * (dp[nt][e + 2] - sDel[col]);
        }
      // dV += Pᵀ·dO and dK += dSᵀ·Q (dO, Q stored [query][dim] = B[k = query][n = dim]).
#pragma unroll
      for (int kt = 0; kt < 2; ++kt) {
        uint32_t pa[4], da[4];
        pa[0] = pack_bf16(s[2 * kt][0], s[2 * kt][1]);
        pa[1] = pack_bf16(s[2 * kt][2], s[2 * kt][3]);
        pa[2] = pack_bf16(s[2 * kt + 1][0], s[2 * kt + 1][1]);
        pa[3] = pack_bf16(s[2 * kt + 1][2], s[2 * kt + 1][3]);
        da[0] = pack_bf16(dp[2 * kt][0], dp[2 * kt][1]);
        da[1] = pack_bf16(dp[2 * kt][2], dp[2 * kt][3]);
        da[2] = pack_bf16(dp[2 * kt + 1][0], dp[2 * kt + 1][1]);
        da[3] = pack_bf16(dp[2 * kt + 1][2], dp[2 * kt + 1][3]);
#pragma unroll
        for (int dpair = 0; dpair < kDT / 2; ++dpair) {
          uint32_t bo[4], bq[4];
          load_b_kn<S>(bo, sdO, kt * 16, dpair * 16, lane);
          load_b_kn<S>(bq, sQ, kt * 16, dpair * 16, lane);
          mma_16816(dv[2 * dpair], pa, bo[0], bo[1]);
          mma_16816(dv[2 * dpair + 1], pa, bo[2], bo[3]);
          mma_16816(dk[2 * dpair], da, bq[0], bq[1]);
          mma_16816(dk[2 * dpair + 1], da, bq[2], bq[3]);
        }
      }
    }
  }

  cp_async_wait_all();
  if (ja < d.kv_len) {
    const int64_t off = ((b * d.kv_len + ja) * d.kv_heads + hk) * Dh;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      *reinterpret_cast<uint32_t*>(p.dk + off + dt * 8 + t4 * 2) = pack_bf16(dk[dt][0] * scale, dk[dt][1] * scale);
      *reinterpret_cast<uint32_t*>(p.dv + off + dt * 8 + t4 * 2) = pack_bf16(dv[dt][0], dv[dt][1]);
    }
  }
  if (jb < d.kv_len) {
    const int64_t off = ((b * d.kv_len + jb) * d.kv_heads + hk) * Dh;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      *reinterpret_cast<uint32_t*>(p.dk + off + dt * 8 + t4 * 2) = pack_bf16(dk[dt][2] * scale, dk[dt][3] * scale);
      *reinterpret_cast<uint32_t*>(p.dv + off + dt * 8 + t4 * 2) = pack_bf16(dv[dt][2], dv[dt][3]);
    }
  }
}

template <int Dh>
void forward_tc(const AttentionForwardArgs& a, cudaStream_t s) {
  const size_t smem = forward_smem_bytes<Dh>();
  LL_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_tc_kernel<Dh>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(smem)));
  const dim3 grid(unsigned((a.dims.seq_len + 63) / 64), unsigned(a.dims.batch * a.dims.heads));
  attention_forward_tc_kernel<Dh><<<grid, kThreads, smem, s>>>(a);
  LL_LAUNCH_CHECK("attention_forward_tc_kernel");
}

template <int Dh>
void backward_tc(const AttentionBackwardArgs& a, cudaStream_t s) {
  const size_t smem_kv = dkdv_smem_bytes<Dh>(), smem_q = dq_smem_bytes<Dh>();
  LL_CUDA_CHECK(cudaFuncSetAttribute(attention_dkdv_tc_kernel<Dh>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(smem_kv)));
  LL_CUDA_CHECK(
      cudaFuncSetAttribute(attention_dq_tc_kernel<Dh>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_q)));
  const dim3 grid_kv(unsigned((a.dims.kv_len + 63) / 64), unsigned(a.dims.batch * a.dims.kv_heads));
  attention_dkdv_tc_kernel<Dh><<<grid_kv, kThreads, smem_kv, s>>>(a);
  LL_LAUNCH_CHECK("attention_dkdv_tc_kernel");
  if (a.dims.seq_len == 0) return;  // no queries: dK = dV = 0 (written above); a grid of 0 blocks fails to launch
  const dim3 grid_q(unsigned((a.dims.seq_len + 63) / 64), unsigned(a.dims.batch * a.dims.heads));
  attention_dq_tc_kernel<Dh><<<grid_q, kThreads, smem_q, s>>>(a);
  LL_LAUNCH_CHECK("attention_dq_tc_kernel");
}

void check_grid(const AttentionDims& d) {
  LL_CHECK(d.batch * d.heads <= 65535, "attention: batch × heads = ", d.batch * d.heads,
           " exceeds the grid's y limit (65535)");
}

}  // namespace

void launch_attention_forward_tc(const AttentionForwardArgs& a, cudaStream_t s) {
  if (a.dims.seq_len == 0 || a.dims.batch == 0) return;
  check_grid(a.dims);
  if (a.dims.head_dim == 64)
    forward_tc<64>(a, s);
  else if (a.dims.head_dim == 128)
    forward_tc<128>(a, s);
  else
    fail("attention (tensor cores): head dimension ", a.dims.head_dim, " is not 64 or 128");
}

void launch_attention_backward_tc(const AttentionBackwardArgs& a, cudaStream_t s) {
  if (a.dims.batch == 0 || a.dims.kv_len == 0) return;
  check_grid(a.dims);
  launch_attention_delta(a, s);
  if (a.dims.head_dim == 64)
    backward_tc<64>(a, s);
  else if (a.dims.head_dim == 128)
    backward_tc<128>(a, s);
  else
    fail("attention backward (tensor cores): head dimension ", a.dims.head_dim, " is not 64 or 128");
}

}  // namespace ll::cuda
