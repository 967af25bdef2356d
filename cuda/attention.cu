// Tensor-core flash attention (sm_80+: mma.sync.m16n8k16 bf16 → f32, ldmatrix, cp.async). See attention.cuh; the
// fragment conventions and the pieces shared with the wgmma forward are in attention_fragments.cuh.
//
// Shared-memory tiles are [rows][Dh + 8] bf16: the 16-byte pad makes the 8 row addresses of every ldmatrix phase
// hit distinct banks. Out-of-range rows are zero-filled by cp.async (src-size 0) and masked.
#include <cuda_bf16.h>

#include "cuda/attention.cuh"
#include "cuda/attention_fragments.cuh"

namespace ll::cuda {

namespace {

using cuda_plan::TileSpan;
using namespace attention_detail;

constexpr int kThreads = 128;  // 4 warps

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
  // 64-bit arithmetic once per tile, 32-bit per chunk (a row stride is heads · Dh elements).
  const int valid_rows = int(limit - row0 < kRows ? limit - row0 : kRows);
  const bf16* tile_base = base + row0 * gstride;
  const int stride = int(gstride);
#pragma unroll 4
  for (int c = tid; c < kRows * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool valid = r < valid_rows;
    const bf16* src = valid ? tile_base + r * stride + col : base;
    cp_async_16(tile + r * kStride + col, src, valid);
  }
}


// ---- forward -----------------------------------------------------------------------------------------------------
// grid (query tiles of 128, B·H); 4 warps, warp w owns rows [32w, 32w + 32) as two 16-row blocks, so every K and V
// fragment read from shared memory feeds two products. Key tiles of 64 (cuda_plan::kFwdKeyTile: at Dh 128 some
// registers spill next to the 32 × 128 output accumulators, and it still beat 32-key tiles) are double-buffered: the
// copy of tile n + 1 runs while tile n is computed. Tiles that every row of the warp attends skip the element mask.
constexpr int kFwdRows = 128;
static_assert(kFwdRows == cuda_plan::kFwdQueryTile, "tile sizes");

template <int Dh, int kFwdKeys>
constexpr size_t forward_smem_bytes() {
  return size_t(kFwdRows + 4 * kFwdKeys) * (Dh + 8) * sizeof(bf16);  // Q, then two stages of K and of V
}

template <int Dh, int kFwdKeys>
__global__ void __launch_bounds__(kThreads, 2) attention_forward_tc_kernel(AttentionForwardArgs p) {
  constexpr int S = Dh + 8;
  constexpr int kKT = Dh / 16;  // k-steps over the head dim
  constexpr int kDT = Dh / 8;   // n-tiles over the head dim
  constexpr int NT = kFwdKeys / 8;  // n-tiles over the keys
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sK = sQ + kFwdRows * S;      // stage st at sK + st·kFwdKeys·S
  bf16* sV = sK + 2 * kFwdKeys * S;  // likewise

  const AttentionDims& d = p.dims;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bh = blockIdx.y, b = bh / d.heads, h = bh % d.heads, hk = h / (d.heads / d.kv_heads);
  const int64_t row0 = heavy_first_query_tile() * kFwdRows, wrow0 = row0 + warp * 32;
  const int64_t q_stride = d.heads * Dh, kv_stride = d.kv_heads * Dh;
  const bf16* qbase = p.q + (b * d.seq_len * d.heads + h) * Dh;
  const bf16* kbase = p.k + (b * d.kv_len * d.kv_heads + hk) * Dh;
  const bf16* vbase = p.v + (b * d.kv_len * d.kv_heads + hk) * Dh;

  const TileSpan span =
      cuda_plan::key_tile_span(p.mask, h, d.heads, d.seq_len, d.kv_len, row0, row0 + kFwdRows, kFwdKeys);
  const int tiles = span.count();
  load_tile<Dh, kFwdRows>(sQ, qbase, q_stride, row0, d.seq_len, tid);
  if (tiles > 0) {
    load_tile<Dh, kFwdKeys>(sK, kbase, kv_stride, span.at(0) * kFwdKeys, d.kv_len, tid);
    load_tile<Dh, kFwdKeys>(sV, vbase, kv_stride, span.at(0) * kFwdKeys, d.kv_len, tid);
  }
  cp_async_commit();

  const cuda_plan::BlockCover cover =
      cuda_plan::row_block_cover(p.mask, h, d.heads, d.seq_len, d.kv_len, wrow0, wrow0 + 32);
  const float scale_log2 = kLog2e / sqrtf(float(Dh));

  float o[2][kDT][4];
#pragma unroll
  for (int mb = 0; mb < 2; ++mb)
#pragma unroll
    for (int i = 0; i < kDT; ++i) o[mb][i][0] = o[mb][i][1] = o[mb][i][2] = o[mb][i][3] = 0.f;
  float m[2][2] = {{-INFINITY, -INFINITY}, {-INFINITY, -INFINITY}}, l[2][2] = {{0.f, 0.f}, {0.f, 0.f}};

  for (int n = 0; n < tiles; ++n) {
    const int stage = int(n & 1);
    if (n + 1 < tiles) {
      const int64_t next0 = span.at(n + 1) * kFwdKeys;
      load_tile<Dh, kFwdKeys>(sK + (stage ^ 1) * kFwdKeys * S, kbase, kv_stride, next0, d.kv_len, tid);
      load_tile<Dh, kFwdKeys>(sV + (stage ^ 1) * kFwdKeys * S, vbase, kv_stride, next0, d.kv_len, tid);
    }
    cp_async_commit();
    cp_async_wait_group<1>();  // all but the copy just issued have landed: Q and tile n
    __syncthreads();
    const bf16* cK = sK + stage * kFwdKeys * S;
    const bf16* cV = sV + stage * kFwdKeys * S;
    const int64_t key0 = span.at(n) * kFwdKeys;

    // S = Q·Kᵀ for 32 rows × kFwdKeys keys: each K fragment serves both row blocks.
    float s[2][NT][4];
#pragma unroll
    for (int mb = 0; mb < 2; ++mb)
#pragma unroll
      for (int i = 0; i < NT; ++i) s[mb][i][0] = s[mb][i][1] = s[mb][i][2] = s[mb][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kKT; ++kk) {
      uint32_t a0[4], a1[4];
      load_a<S>(a0, sQ, warp * 32, kk * 16, lane);
      load_a<S>(a1, sQ, warp * 32 + 16, kk * 16, lane);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t bfr[4];
        load_b_nk<S>(bfr, cK, np * 16, kk * 16, lane);
        mma_16816(s[0][2 * np], a0, bfr[0], bfr[1]);
        mma_16816(s[0][2 * np + 1], a0, bfr[2], bfr[3]);
        mma_16816(s[1][2 * np], a1, bfr[0], bfr[1]);
        mma_16816(s[1][2 * np + 1], a1, bfr[2], bfr[3]);
      }
    }
    if (!cuda_plan::covers_tile(cover, key0, kFwdKeys)) {  // warp-uniform: a diagonal tile
      mask_scores(s[0], p.mask, h, d, wrow0 + g, key0, t4);
      mask_scores(s[1], p.mask, h, d, wrow0 + 16 + g, key0, t4);
    }
    softmax_step<NT, kDT>(s[0], o[0], m[0], l[0], scale_log2);
    softmax_step<NT, kDT>(s[1], o[1], m[1], l[1], scale_log2);

    // O += P·V, P re-packed from the S accumulators; each V fragment serves both row blocks.
#pragma unroll
    for (int kt = 0; kt < NT / 2; ++kt) {
      uint32_t pa0[4], pa1[4];
      pack_a_from_c<NT>(pa0, s[0], kt);
      pack_a_from_c<NT>(pa1, s[1], kt);
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        uint32_t bfr[4];
        load_b_kn<S>(bfr, cV, kt * 16, dp * 16, lane);
        mma_16816(o[0][2 * dp], pa0, bfr[0], bfr[1]);
        mma_16816(o[0][2 * dp + 1], pa0, bfr[2], bfr[3]);
        mma_16816(o[1][2 * dp], pa1, bfr[0], bfr[1]);
        mma_16816(o[1][2 * dp + 1], pa1, bfr[2], bfr[3]);
      }
    }
    __syncthreads();  // every warp is done with this stage before the next iteration's copy refills it
  }

  cp_async_wait_all();  // no copy may be in flight when the CTA exits (an empty span never waited)
#pragma unroll
  for (int mb = 0; mb < 2; ++mb)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float lr = l[mb][r];
      lr += __shfl_xor_sync(0xffffffffu, lr, 1);
      lr += __shfl_xor_sync(0xffffffffu, lr, 2);
      const int64_t row = wrow0 + mb * 16 + r * 8 + g;
      if (row < d.seq_len) {
        const float inv = lr > 0.f ? 1.f / lr : 0.f;
        bf16* orow = p.out + ((b * d.seq_len + row) * d.heads + h) * Dh;
        store_row(orow, o[mb], r, inv, t4);
        if (t4 == 0) p.lse[(b * d.heads + h) * d.seq_len + row] = (m[mb][r] + log2f(lr)) * kLn2;
      }
    }
}

// ---- backward: dQ ------------------------------------------------------------------------------------------------
// grid (query tiles of 64, B·H); warp w owns rows [16w, 16w + 16). Per key tile: S = Q·Kᵀ, P = exp(S·scale − lse),
// dP = dO·Vᵀ, dS = P ⊙ (dP − δ), dQ += dS·K; dQ ·= scale at the end. K/V tiles are double-buffered.
constexpr int kDqRows = 64, kDqKeys = 64;
static_assert(kDqRows == cuda_plan::kDqQueryTile && kDqKeys == cuda_plan::kDqKeyTile, "tile sizes");

template <int Dh>
constexpr size_t dq_smem_bytes() {
  return size_t(2 * kDqRows + 4 * kDqKeys) * (Dh + 8) * sizeof(bf16);  // Q, dO, two stages of K and of V
}

template <int Dh>
__global__ void __launch_bounds__(kThreads) attention_dq_tc_kernel(AttentionBackwardArgs p) {
  constexpr int S = Dh + 8;
  constexpr int kKT = Dh / 16;
  constexpr int kDT = Dh / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sdO = sQ + kDqRows * S;
  bf16* sK = sdO + kDqRows * S;     // stage st at sK + st·kDqKeys·S
  bf16* sV = sK + 2 * kDqKeys * S;  // likewise

  const AttentionDims& d = p.dims;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bh = blockIdx.y, b = bh / d.heads, h = bh % d.heads, hk = h / (d.heads / d.kv_heads);
  const int64_t row0 = heavy_first_query_tile() * kDqRows, wrow0 = row0 + warp * 16;
  const int64_t q_stride = d.heads * Dh, kv_stride = d.kv_heads * Dh;
  const int64_t qo_base = (b * d.seq_len * d.heads + h) * Dh;
  const bf16* kbase = p.k + (b * d.kv_len * d.kv_heads + hk) * Dh;
  const bf16* vbase = p.v + (b * d.kv_len * d.kv_heads + hk) * Dh;

  const TileSpan span =
      cuda_plan::key_tile_span(p.mask, h, d.heads, d.seq_len, d.kv_len, row0, row0 + kDqRows, kDqKeys);
  const int tiles = span.count();
  load_tile<Dh, kDqRows>(sQ, p.q + qo_base, q_stride, row0, d.seq_len, tid);
  load_tile<Dh, kDqRows>(sdO, p.dout + qo_base, q_stride, row0, d.seq_len, tid);
  if (tiles > 0) {
    load_tile<Dh, kDqKeys>(sK, kbase, kv_stride, span.at(0) * kDqKeys, d.kv_len, tid);
    load_tile<Dh, kDqKeys>(sV, vbase, kv_stride, span.at(0) * kDqKeys, d.kv_len, tid);
  }
  cp_async_commit();

  const int64_t ra = wrow0 + g, rb = ra + 8;
  const int64_t stat = (b * d.heads + h) * d.seq_len;
  const float scale = 1.f / sqrtf(float(Dh)), scale_log2 = scale * kLog2e;
  const float lse_a = ra < d.seq_len ? p.lse[stat + ra] * kLog2e : 0.f;
  const float lse_b = rb < d.seq_len ? p.lse[stat + rb] * kLog2e : 0.f;
  const float del_a = ra < d.seq_len ? p.delta[stat + ra] : 0.f;
  const float del_b = rb < d.seq_len ? p.delta[stat + rb] : 0.f;
  const cuda_plan::BlockCover cover =
      cuda_plan::row_block_cover(p.mask, h, d.heads, d.seq_len, d.kv_len, wrow0, wrow0 + 16);

  float dq[kDT][4];
#pragma unroll
  for (int i = 0; i < kDT; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;

  for (int n = 0; n < tiles; ++n) {
    const int stage = int(n & 1);
    if (n + 1 < tiles) {
      const int64_t next0 = span.at(n + 1) * kDqKeys;
      load_tile<Dh, kDqKeys>(sK + (stage ^ 1) * kDqKeys * S, kbase, kv_stride, next0, d.kv_len, tid);
      load_tile<Dh, kDqKeys>(sV + (stage ^ 1) * kDqKeys * S, vbase, kv_stride, next0, d.kv_len, tid);
    }
    cp_async_commit();
    cp_async_wait_group<1>();
    __syncthreads();
    const bf16* cK = sK + stage * kDqKeys * S;
    const bf16* cV = sV + stage * kDqKeys * S;
    const int64_t key0 = span.at(n) * kDqKeys;

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
        load_b_nk<S>(bk, cK, np * 16, kk * 16, lane);
        load_b_nk<S>(bv, cV, np * 16, kk * 16, lane);
        mma_16816(s[2 * np], aq, bk[0], bk[1]);
        mma_16816(s[2 * np + 1], aq, bk[2], bk[3]);
        mma_16816(dp[2 * np], ado, bv[0], bv[1]);
        mma_16816(dp[2 * np + 1], ado, bv[2], bv[3]);
      }
    }
    if (!cuda_plan::covers_tile(cover, key0, kDqKeys)) mask_scores<8>(s, p.mask, h, d, ra, key0, t4);
    scores_to_ds<8>(s, dp, lse_a, lse_b, del_a, del_b, scale_log2);  // dS in place of s
    // dQ += dS·K (K stored [key][dim] = B[k = key][n = dim]).
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      uint32_t da[4];
      pack_a_from_c<8>(da, s, kt);
#pragma unroll
      for (int dpair = 0; dpair < kDT / 2; ++dpair) {
        uint32_t bfr[4];
        load_b_kn<S>(bfr, cK, kt * 16, dpair * 16, lane);
        mma_16816(dq[2 * dpair], da, bfr[0], bfr[1]);
        mma_16816(dq[2 * dpair + 1], da, bfr[2], bfr[3]);
      }
    }
    __syncthreads();
  }

  cp_async_wait_all();
  if (ra < d.seq_len) store_row(p.dq + ((b * d.seq_len + ra) * d.heads + h) * Dh, dq, 0, scale, t4);
  if (rb < d.seq_len) store_row(p.dq + ((b * d.seq_len + rb) * d.heads + h) * Dh, dq, 1, scale, t4);
}

// ---- backward: dK, dV ------------------------------------------------------------------------------------------------
// grid (key tiles of 64, B·Hkv); warp w owns keys [16w, 16w + 16) of the tile. The work items are (query head of the
// group, 32-query tile attending the keys) pairs, in head order; the Q/dO tiles of item n + 1 are copied while item n
// is computed. Per item: Sᵀ = K·Qᵀ, Pᵀ = exp(Sᵀ·scale − lse), dV += Pᵀ·dO, dPᵀ = V·dOᵀ, dSᵀ = Pᵀ ⊙ (dPᵀ − δ),
// dK += dSᵀ·Q; dK ·= scale at the end.
constexpr int kKvKeys = 64, kKvQueries = 32;
static_assert(kKvKeys == cuda_plan::kBwdKeyTile && kKvQueries == cuda_plan::kBwdQueryTile, "tile sizes");

template <int Dh>
constexpr size_t dkdv_smem_bytes() {
  // K, V, then two stages of Q and of dO, then two stages of lse and of δ
  return size_t(2 * kKvKeys + 4 * kKvQueries) * (Dh + 8) * sizeof(bf16) + size_t(4) * kKvQueries * sizeof(float);
}


template <int Dh>
__global__ void __launch_bounds__(kThreads) attention_dkdv_tc_kernel(AttentionBackwardArgs p) {
  constexpr int S = Dh + 8;
  constexpr int kKT = Dh / 16;
  constexpr int kDT = Dh / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);
  bf16* sV = sK + kKvKeys * S;
  bf16* sQ = sV + kKvKeys * S;          // stage st at sQ + st·kKvQueries·S
  bf16* sdO = sQ + 2 * kKvQueries * S;  // likewise
  float* sLse = reinterpret_cast<float*>(sdO + 2 * kKvQueries * S);  // stage st at sLse + st·kKvQueries
  float* sDel = sLse + 2 * kKvQueries;

  const AttentionDims& d = p.dims;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bhk = blockIdx.y, b = bhk / d.kv_heads, hk = bhk % d.kv_heads;
  const int64_t group = d.heads / d.kv_heads, h_end = (hk + 1) * group;
  const int64_t key0 = int64_t(blockIdx.x) * kKvKeys, wkey0 = key0 + warp * 16;
  const int64_t q_stride = d.heads * Dh, kv_stride = d.kv_heads * Dh;
  const int64_t kv_base = (b * d.kv_len * d.kv_heads + hk) * Dh;

  // Copies the Q, dO tiles and the lse, δ values of one item into a stage (lse, δ by plain stores: they are ready
  // after the barrier that precedes their use).
  auto load_item = [&](const DkdvItem& it, int stage) {
    const int64_t q0 = it.span.at(it.n) * kKvQueries;
    const int64_t qo_base = (b * d.seq_len * d.heads + it.h) * Dh, stat = (b * d.heads + it.h) * d.seq_len;
    load_tile<Dh, kKvQueries>(sQ + stage * kKvQueries * S, p.q + qo_base, q_stride, q0, d.seq_len, tid);
    load_tile<Dh, kKvQueries>(sdO + stage * kKvQueries * S, p.dout + qo_base, q_stride, q0, d.seq_len, tid);
    if (tid < kKvQueries) {
      const bool valid = q0 + tid < d.seq_len;
      sLse[stage * kKvQueries + tid] = valid ? p.lse[stat + q0 + tid] * kLog2e : 0.f;
      sDel[stage * kKvQueries + tid] = valid ? p.delta[stat + q0 + tid] : 0.f;
    }
  };

  DkdvItem cur{hk * group, -1,
               cuda_plan::query_tile_span(p.mask, hk * group, d.heads, d.seq_len, d.kv_len, key0, key0 + kKvKeys,
                                          kKvQueries)};
  next_dkdv_item<kKvKeys, kKvQueries>(cur, h_end, p.mask, d, key0);
  load_tile<Dh, kKvKeys>(sK, p.k + kv_base, kv_stride, key0, d.kv_len, tid);
  load_tile<Dh, kKvKeys>(sV, p.v + kv_base, kv_stride, key0, d.kv_len, tid);
  if (cur.h < h_end) load_item(cur, 0);
  cp_async_commit();

  const int64_t ja = wkey0 + g, jb = ja + 8;  // this thread's two keys
  const float scale = 1.f / sqrtf(float(Dh)), scale_log2 = scale * kLog2e;

  float dk[kDT][4], dv[kDT][4];
#pragma unroll
  for (int i = 0; i < kDT; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;

  int64_t cover_head = -1;
  cuda_plan::BlockCover cover{0, 0, 0, 0, true};
  for (int stage = 0; cur.h < h_end; stage ^= 1) {
    DkdvItem next = cur;
    next_dkdv_item<kKvKeys, kKvQueries>(next, h_end, p.mask, d, key0);
    if (next.h < h_end) load_item(next, stage ^ 1);
    cp_async_commit();
    cp_async_wait_group<1>();
    __syncthreads();
    const bf16* cQ = sQ + stage * kKvQueries * S;
    const bf16* cdO = sdO + stage * kKvQueries * S;
    const float* cLse = sLse + stage * kKvQueries;
    const float* cDel = sDel + stage * kKvQueries;
    const int64_t h = cur.h, q0 = cur.span.at(cur.n) * kKvQueries;
    if (h != cover_head) {  // the mask depends on the head (S2 shifts half of them)
      cover = cuda_plan::key_block_cover(p.mask, h, d.heads, d.seq_len, d.kv_len, wkey0, wkey0 + 16);
      cover_head = h;
    }

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
        load_b_nk<S>(bq, cQ, np * 16, kk * 16, lane);
        load_b_nk<S>(bo, cdO, np * 16, kk * 16, lane);
        mma_16816(s[2 * np], ak, bq[0], bq[1]);
        mma_16816(s[2 * np + 1], ak, bq[2], bq[3]);
        mma_16816(dp[2 * np], av, bo[0], bo[1]);
        mma_16816(dp[2 * np + 1], av, bo[2], bo[3]);
      }
    }
    if (!cuda_plan::covers_tile(cover, q0, kKvQueries)) {  // a diagonal item: mask element by element
      const cuda_plan::QueryRanges none{1, 0, 0, 0};
      const cuda_plan::QueryRanges qa =
          ja < d.kv_len ? cuda_plan::attending_queries(p.mask, h, d.heads, d.seq_len, d.kv_len, ja) : none;
      const cuda_plan::QueryRanges qb =
          jb < d.kv_len ? cuda_plan::attending_queries(p.mask, h, d.heads, d.seq_len, d.kv_len, jb) : none;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t i = q0 + nt * 8 + t4 * 2 + e;
          if (!query_ok(qa, i)) s[nt][e] = -INFINITY;
          if (!query_ok(qb, i)) s[nt][e + 2] = -INFINITY;
        }
    }
    transposed_p_and_ds<4>(s, dp, cLse, cDel, scale_log2, t4);  // Pᵀ into s, dSᵀ into dp
    // dV += Pᵀ·dO and dK += dSᵀ·Q (dO, Q stored [query][dim] = B[k = query][n = dim]).
#pragma unroll
    for (int kt = 0; kt < 2; ++kt) {
      uint32_t pa[4], da[4];
      pack_a_from_c<4>(pa, s, kt);
      pack_a_from_c<4>(da, dp, kt);
#pragma unroll
      for (int dpair = 0; dpair < kDT / 2; ++dpair) {
        uint32_t bo[4], bq[4];
        load_b_kn<S>(bo, cdO, kt * 16, dpair * 16, lane);
        load_b_kn<S>(bq, cQ, kt * 16, dpair * 16, lane);
        mma_16816(dv[2 * dpair], pa, bo[0], bo[1]);
        mma_16816(dv[2 * dpair + 1], pa, bo[2], bo[3]);
        mma_16816(dk[2 * dpair], da, bq[0], bq[1]);
        mma_16816(dk[2 * dpair + 1], da, bq[2], bq[3]);
      }
    }
    __syncthreads();  // every warp is done with this stage before the next iteration's copy refills it
    cur = next;
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

template <int Dh, int kKeys>
void forward_tc(const AttentionForwardArgs& a, cudaStream_t s) {
  const size_t smem = forward_smem_bytes<Dh, kKeys>();
  LL_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_tc_kernel<Dh, kKeys>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((a.dims.seq_len + kFwdRows - 1) / kFwdRows), unsigned(a.dims.batch * a.dims.heads));
  attention_forward_tc_kernel<Dh, kKeys><<<grid, kThreads, smem, s>>>(a);
  LL_LAUNCH_CHECK("attention_forward_tc_kernel");
}

template <int Dh>
void backward_tc(const AttentionBackwardArgs& a, cudaStream_t s) {
  const size_t smem_kv = dkdv_smem_bytes<Dh>(), smem_q = dq_smem_bytes<Dh>();
  LL_CUDA_CHECK(cudaFuncSetAttribute(attention_dkdv_tc_kernel<Dh>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(smem_kv)));
  LL_CUDA_CHECK(
      cudaFuncSetAttribute(attention_dq_tc_kernel<Dh>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_q)));
  if (Dh == 128 && a.dkdv_wgmma) {
    launch_attention_dkdv_wgmma(a, s);
  } else {
    const dim3 grid_kv(unsigned((a.dims.kv_len + kKvKeys - 1) / kKvKeys), unsigned(a.dims.batch * a.dims.kv_heads));
    attention_dkdv_tc_kernel<Dh><<<grid_kv, kThreads, smem_kv, s>>>(a);
    LL_LAUNCH_CHECK("attention_dkdv_tc_kernel");
  }
  if (a.dims.seq_len == 0) return;  // no queries: dK = dV = 0 (written above); a grid of 0 blocks fails to launch
  if (Dh == 128 && a.dq_wgmma) {
    launch_attention_dq_wgmma(a, s);
    return;
  }
  const dim3 grid_q(unsigned((a.dims.seq_len + kDqRows - 1) / kDqRows), unsigned(a.dims.batch * a.dims.heads));
  attention_dq_tc_kernel<Dh><<<grid_q, kThreads, smem_q, s>>>(a);
  LL_LAUNCH_CHECK("attention_dq_tc_kernel");
}


}  // namespace

void check_attention_grid(const AttentionDims& d) {
  LL_CHECK(d.batch * d.heads <= 65535, "attention: batch × heads = ", d.batch * d.heads,
           " exceeds the grid's y limit (65535)");
  LL_CHECK(d.seq_len <= cuda_plan::kMaxAttentionLength && d.kv_len <= cuda_plan::kMaxAttentionLength,
           "attention: ", d.seq_len, " queries against ", d.kv_len, " keys; the kernels take at most ",
           cuda_plan::kMaxAttentionLength, " of each");
}

void launch_attention_forward_tc(const AttentionForwardArgs& a, cudaStream_t s) {
  if (a.dims.seq_len == 0 || a.dims.batch == 0) return;
  check_attention_grid(a.dims);
  if (a.dims.head_dim == 64)
    forward_tc<64, int(cuda_plan::kFwdKeyTile)>(a, s);
  else if (a.dims.head_dim == 128)
    forward_tc<128, int(cuda_plan::kFwdKeyTile)>(a, s);
  else
    fail("attention (tensor cores): head dimension ", a.dims.head_dim, " is not 64 or 128");
}

void launch_attention_backward_tc(const AttentionBackwardArgs& a, cudaStream_t s) {
  if (a.dims.batch == 0 || a.dims.kv_len == 0) return;
  check_attention_grid(a.dims);
  launch_attention_delta(a, s);
  if (a.dims.head_dim == 64)
    backward_tc<64>(a, s);
  else if (a.dims.head_dim == 128)
    backward_tc<128>(a, s);
  else
    fail("attention backward (tensor cores): head dimension ", a.dims.head_dim, " is not 64 or 128");
}

}  // namespace ll::cuda
