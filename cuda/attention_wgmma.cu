// Tensor-core attention kernels for Hopper (sm_90a): wgmma, head dim 128 — the forward and the backward's dQ pass,
// beside the mma.sync kernels of attention.cu (same functions and arguments; CudaBackend::set_attention_wgmma, LONGLORA_ATTENTION_WGMMA),
// chosen only on compute capability 9.0 devices by a build that carries the sm_90a machine code.
//
// One warpgroup (4 warps, 128 threads) per CTA owns 64 query rows, 16 per warp. Per 64-key tile:
//   S  = Q·Kᵀ  wgmma m64n64k16 × 8, both operands from shared memory (K-major, 128-byte swizzle);
//   online softmax on the accumulators (their per-warp layout is mma.sync's C layout: attention_fragments.cuh);
//   O += P·V   wgmma m64n128k16 × 4, P from registers (re-packed like mma.sync's A), V from shared memory read
//              transposed (MN-major, 128-byte swizzle).
// K/V tiles are double-buffered with cp.async (the copy of tile n + 1 runs while tile n is computed).
// The dQ pass has the same shape: per 64-key tile S = Q·Kᵀ and dP = dO·Vᵀ (both shared × shared, K-major),
// dS = P ⊙ (dP − δ) on the accumulators, dQ += dS·K (dS from registers, K read transposed, MN-major).
// The dK/dV pass: a warpgroup owns 64 keys (16 per warp); per (query head, 64-query tile) item Sᵀ = K·Qᵀ and
// dPᵀ = V·dOᵀ (K-major), Pᵀ and dSᵀ on the accumulators, dV += Pᵀ·dO and dK += dSᵀ·Q (dO, Q read transposed).
//
// Shared-memory layout (the canonical 128-byte-swizzle layout of the wgmma descriptors): a [rows][128] bf16 tile is
// two column blocks of 64 elements, each `rows` × 128 bytes; the 16-byte chunk c of row r sits at chunk c ^ (r % 8),
// and every tile starts on a 1024-byte boundary. Descriptor strides (PTX ISA, matrix descriptors): K-major — 8-row
// groups 1024 bytes apart (SBO), the leading offset unused; MN-major — 64-element column blocks rows·128 bytes apart
// (LBO), 8-row groups 1024 bytes apart (SBO).
#include <cuda_bf16.h>

#include "cuda/attention.cuh"
#include "cuda/attention_fragments.cuh"

namespace ll::cuda {

namespace {

using cuda_plan::TileSpan;
using namespace attention_detail;

constexpr int kWgRows = 64, kWgKeys = 64, kWgThreads = 128, kWgDh = 128;
constexpr uint32_t kTileBytes = 64 * kWgDh * 2;  // a 64 × 128 bf16 tile: 16 KB
constexpr size_t kWgSmemBytes = 5 * size_t(kTileBytes) + 1024;  // Q, two stages of K and of V, alignment slack
constexpr size_t kWgDqSmemBytes = 6 * size_t(kTileBytes) + 1024;  // Q, dO, two stages of K and of V, slack
// K, V, two stages of Q and of dO, then two stages of 64 lse and 64 δ values, slack
constexpr size_t kWgDkdvSmemBytes = 6 * size_t(kTileBytes) + 4 * 64 * sizeof(float) + 1024;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // the device code below exists in the sm_90a pass only

// Byte offset of 16-byte chunk `chunk` (0..15) of row r in a swizzled [rows][128] tile.
__device__ __forceinline__ uint32_t swizzled_offset(int rows, int r, int chunk) {
  return uint32_t((chunk >> 3) * rows * 128 + r * 128 + (((chunk & 7) ^ (r & 7)) << 4));
}

// Copies 64 rows of 128 bf16 (global row i at base + i·gstride) into a swizzled tile; rows at or beyond `limit`
// are zero-filled. All 128 threads take part, each always the same 16-byte column chunk of rows r0, r0 + 8, ...:
// every address is a fixed step from the first (row r0 + 8i keeps r0's swizzle). The caller commits and waits.
__device__ __forceinline__ void load_swizzled_tile(uint32_t tile, const bf16* base, int64_t gstride, int64_t row0,
                                                   int64_t limit, int tid) {
  const int r0 = tid >> 4, chunk = tid & 15;
  const int valid_rows = int(limit - row0 < 64 ? limit - row0 : 64);
  const uint32_t dst = tile + swizzled_offset(64, r0, chunk);
  const bf16* src = base + (row0 + r0) * gstride + chunk * 8;
  const int64_t step = 8 * gstride;
  if (valid_rows >= 64) {  // the common case: no row to zero-fill, no predicates
#pragma unroll
    for (int i = 0; i < 8; ++i)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + i * 1024), "l"(src + i * step));
    return;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const bool valid = r0 + 8 * i < valid_rows;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst + i * 1024),
                 "l"(valid ? src + i * step : base), "r"(valid ? 16 : 0));
  }
}

// A shared-memory matrix descriptor with 128-byte swizzle (start address, leading and stride byte offsets).
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(1) << 62);
}
// K-major operand (Q as A, K as B) for head-dim step kk (16 elements): column block kk / 4, 32 bytes per step inside.
__device__ __forceinline__ uint64_t k_major_desc(uint32_t tile, int kk) {
  return sw128_desc(tile + (kk >> 2) * kTileBytes / 2 + (kk & 3) * 32, 16, 1024);
}
// MN-major operand (V as B of P·V, read transposed) for key step kt (16 keys): 16 rows of 128 bytes per step.
__device__ __forceinline__ uint64_t mn_major_desc(uint32_t tile, int kt) {
  return sw128_desc(tile + kt * 16 * 128, kTileBytes / 2, 1024);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Keeps the compiler from moving accumulator reads or writes across the asynchronous products' issue and wait.
template <int N>
__device__ __forceinline__ void pin(float (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}

// d (64 × 64, f32) = or += A (64 × 16, shared) · B (16 × 64, shared, K-major).
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// d (64 × 128, f32) += A (64 × 16, registers) · B (16 × 128, shared, MN-major: read transposed).
__device__ __forceinline__ void wgmma_m64n128k16_rs(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc_b,
                                                    int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
}
// The backward passes' two score products: x = Aₓ·Bₓᵀ and y = A_y·B_yᵀ over the head dimension (64-row K-major
// tiles), one group of 16 products; the caller fences its own accumulators first.
__device__ __forceinline__ void two_score_products(float (&x)[8][4], float (&y)[8][4], uint32_t ax, uint32_t bx,
                                                   uint32_t ay, uint32_t by) {
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kWgDh / 16; ++kk) {
    wgmma_m64n64k16_ss(x, k_major_desc(ax, kk), k_major_desc(bx, kk), kk > 0);
    wgmma_m64n64k16_ss(y, k_major_desc(ay, kk), k_major_desc(by, kk), kk > 0);
  }
  wgmma_commit();
  wgmma_wait_all();
  pin(x);
  pin(y);
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

__global__ void __launch_bounds__(kWgThreads, 2) attention_forward_wgmma_kernel(AttentionForwardArgs p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t smem0 = (smem_addr(smem_raw) + 1023u) & ~1023u;  // swizzle atoms repeat every 1024 bytes
  const uint32_t sQ = smem0, sK = smem0 + kTileBytes, sV = smem0 + 3 * kTileBytes;  // K, V: stage st at + st·16 KB

  const AttentionDims& d = p.dims;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bh = blockIdx.y, b = bh / d.heads, h = bh % d.heads, hk = h / (d.heads / d.kv_heads);
  const int64_t row0 = heavy_first_query_tile() * kWgRows, wrow0 = row0 + warp * 16;
  const int64_t q_stride = d.heads * kWgDh, kv_stride = d.kv_heads * kWgDh;
  const bf16* qbase = p.q + (b * d.seq_len * d.heads + h) * kWgDh;
  const bf16* kbase = p.k + (b * d.kv_len * d.kv_heads + hk) * kWgDh;
  const bf16* vbase = p.v + (b * d.kv_len * d.kv_heads + hk) * kWgDh;

  const TileSpan span = cuda_plan::key_tile_span(p.mask, h, d.heads, d.seq_len, d.kv_len, row0, row0 + kWgRows, kWgKeys);
  const int tiles = span.count();
  load_swizzled_tile(sQ, qbase, q_stride, row0, d.seq_len, tid);
  if (tiles > 0) {
    load_swizzled_tile(sK, kbase, kv_stride, int64_t(span.at(0)) * kWgKeys, d.kv_len, tid);
    load_swizzled_tile(sV, vbase, kv_stride, int64_t(span.at(0)) * kWgKeys, d.kv_len, tid);
  }
  cp_async_commit();

  const cuda_plan::BlockCover cover =
      cuda_plan::row_block_cover(p.mask, h, d.heads, d.seq_len, d.kv_len, wrow0, wrow0 + 16);
  const float scale_log2 = kLog2e / sqrtf(float(kWgDh));

  float o[16][4];
#pragma unroll
  for (int i = 0; i < 16; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int n = 0; n < tiles; ++n) {
    const int stage = n & 1;
    if (n + 1 < tiles) {
      const int64_t next0 = int64_t(span.at(n + 1)) * kWgKeys;
      load_swizzled_tile(sK + (stage ^ 1) * kTileBytes, kbase, kv_stride, next0, d.kv_len, tid);
      load_swizzled_tile(sV + (stage ^ 1) * kTileBytes, vbase, kv_stride, next0, d.kv_len, tid);
    }
    cp_async_commit();
    cp_async_wait_group<1>();  // Q and tile n have landed (this thread's copies)
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // ... and are visible to the tensor cores
    __syncthreads();
    const uint32_t cK = sK + stage * kTileBytes, cV = sV + stage * kTileBytes;
    const int key0 = span.at(n) * kWgKeys;

    float s[8][4];
    pin(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kWgDh / 16; ++kk) wgmma_m64n64k16_ss(s, k_major_desc(sQ, kk), k_major_desc(cK, kk), kk > 0);
    wgmma_commit();
    wgmma_wait_all();
    pin(s);

    if (!cuda_plan::covers_tile(cover, key0, kWgKeys)) mask_scores<8>(s, p.mask, h, d, wrow0 + g, key0, t4);
    softmax_step<8, 16>(s, o, m, l, scale_log2);

    uint32_t pa[4][4];
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) pack_a_from_c<8>(pa[kt], s, kt);
    pin(o);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) wgmma_m64n128k16_rs(o, pa[kt], mn_major_desc(cV, kt), 1);
    wgmma_commit();
    wgmma_wait_all();
    pin(o);
    __syncthreads();  // every warp is done with this stage before the next iteration's copy refills it
  }

  cp_async_wait_all();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    const int64_t row = wrow0 + r * 8 + g;
    if (row < d.seq_len) {
      const float inv = lr > 0.f ? 1.f / lr : 0.f;
      bf16* orow = p.out + ((b * d.seq_len + row) * d.heads + h) * kWgDh;
      store_row(orow, o, r, inv, t4);
      if (t4 == 0) p.lse[(b * d.heads + h) * d.seq_len + row] = (m[r] + log2f(lr)) * kLn2;
    }
  }
#else
  (void)p;
  __trap();  // never launched: attention_wgmma_available() checks that the sm_90a machine code was loaded
#endif
}

// The dQ pass: grid (query tiles of 64, B·H), one warpgroup per CTA; see the file comment.
__global__ void __launch_bounds__(kWgThreads, 2) attention_dq_wgmma_kernel(AttentionBackwardArgs p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t smem0 = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t sQ = smem0, sdO = smem0 + kTileBytes, sK = smem0 + 2 * kTileBytes, sV = smem0 + 4 * kTileBytes;

  const AttentionDims& d = p.dims;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bh = blockIdx.y, b = bh / d.heads, h = bh % d.heads, hk = h / (d.heads / d.kv_heads);
  const int64_t row0 = heavy_first_query_tile() * kWgRows, wrow0 = row0 + warp * 16;
  const int64_t q_stride = d.heads * kWgDh, kv_stride = d.kv_heads * kWgDh;
  const int64_t qo_base = (b * d.seq_len * d.heads + h) * kWgDh;
  const bf16* kbase = p.k + (b * d.kv_len * d.kv_heads + hk) * kWgDh;
  const bf16* vbase = p.v + (b * d.kv_len * d.kv_heads + hk) * kWgDh;

  const TileSpan span = cuda_plan::key_tile_span(p.mask, h, d.heads, d.seq_len, d.kv_len, row0, row0 + kWgRows, kWgKeys);
  const int tiles = span.count();
  load_swizzled_tile(sQ, p.q + qo_base, q_stride, row0, d.seq_len, tid);
  load_swizzled_tile(sdO, p.dout + qo_base, q_stride, row0, d.seq_len, tid);
  if (tiles > 0) {
    load_swizzled_tile(sK, kbase, kv_stride, int64_t(span.at(0)) * kWgKeys, d.kv_len, tid);
    load_swizzled_tile(sV, vbase, kv_stride, int64_t(span.at(0)) * kWgKeys, d.kv_len, tid);
  }
  cp_async_commit();

  const int64_t ra = wrow0 + g, rb = ra + 8;
  const int64_t stat = (b * d.heads + h) * d.seq_len;
  const float scale = 1.f / sqrtf(float(kWgDh)), scale_log2 = scale * kLog2e;
  const float lse_a = ra < d.seq_len ? p.lse[stat + ra] * kLog2e : 0.f;
  const float lse_b = rb < d.seq_len ? p.lse[stat + rb] * kLog2e : 0.f;
  const float del_a = ra < d.seq_len ? p.delta[stat + ra] : 0.f;
  const float del_b = rb < d.seq_len ? p.delta[stat + rb] : 0.f;
  const cuda_plan::BlockCover cover =
      cuda_plan::row_block_cover(p.mask, h, d.heads, d.seq_len, d.kv_len, wrow0, wrow0 + 16);

  float dq[16][4];
#pragma unroll
  for (int i = 0; i < 16; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;

  for (int n = 0; n < tiles; ++n) {
    const int stage = n & 1;
    if (n + 1 < tiles) {
      const int64_t next0 = int64_t(span.at(n + 1)) * kWgKeys;
      load_swizzled_tile(sK + (stage ^ 1) * kTileBytes, kbase, kv_stride, next0, d.kv_len, tid);
      load_swizzled_tile(sV + (stage ^ 1) * kTileBytes, vbase, kv_stride, next0, d.kv_len, tid);
    }
    cp_async_commit();
    cp_async_wait_group<1>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const uint32_t cK = sK + stage * kTileBytes, cV = sV + stage * kTileBytes;
    const int key0 = span.at(n) * kWgKeys;

    // S = Q·Kᵀ and dP = dO·Vᵀ, one group of 16 products.
    float s[8][4], dp[8][4];
    pin(dq);
    two_score_products(s, dp, sQ, cK, sdO, cV);

    if (!cuda_plan::covers_tile(cover, key0, kWgKeys)) mask_scores<8>(s, p.mask, h, d, ra, key0, t4);
    scores_to_ds<8>(s, dp, lse_a, lse_b, del_a, del_b, scale_log2);  // dS in place of s
    uint32_t da[4][4];
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) pack_a_from_c<8>(da[kt], s, kt);
    // dQ += dS·K: K [key][dim] is B [k = key][n = dim], read transposed like V in the forward.
    pin(dq);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) wgmma_m64n128k16_rs(dq, da[kt], mn_major_desc(cK, kt), 1);
    wgmma_commit();
    wgmma_wait_all();
    pin(dq);
    __syncthreads();
  }

  cp_async_wait_all();
  if (ra < d.seq_len) store_row(p.dq + ((b * d.seq_len + ra) * d.heads + h) * kWgDh, dq, 0, scale, t4);
  if (rb < d.seq_len) store_row(p.dq + ((b * d.seq_len + rb) * d.heads + h) * kWgDh, dq, 1, scale, t4);
#else
  (void)p;
  __trap();  // never launched: attention_wgmma_available() checks that the sm_90a machine code was loaded
#endif
}

// The dK/dV pass: grid (key tiles of 64, B·Hkv), one warpgroup per CTA; see the file comment. Items (query head of
// the group, 64-query tile attending the keys) as in attention.cu's dK/dV pass; their Q/dO tiles double-buffered.
__global__ void __launch_bounds__(kWgThreads, 2) attention_dkdv_wgmma_kernel(AttentionBackwardArgs p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = smem_addr(smem_raw), smem0 = (raw + 1023u) & ~1023u;
  const uint32_t sK = smem0, sV = smem0 + kTileBytes, sQ = smem0 + 2 * kTileBytes, sdO = smem0 + 4 * kTileBytes;
  float* sLse = reinterpret_cast<float*>(smem_raw + (smem0 - raw) + 6 * kTileBytes);  // stage st at + st·64
  float* sDel = sLse + 2 * 64;

  const AttentionDims& d = p.dims;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bhk = blockIdx.y, b = bhk / d.kv_heads, hk = bhk % d.kv_heads;
  const int64_t group = d.heads / d.kv_heads, h_end = (hk + 1) * group;
  const int64_t key0 = int64_t(blockIdx.x) * kWgKeys, wkey0 = key0 + warp * 16;
  const int64_t q_stride = d.heads * kWgDh, kv_stride = d.kv_heads * kWgDh;
  const int64_t kv_base = (b * d.kv_len * d.kv_heads + hk) * kWgDh;

  auto load_item = [&](const DkdvItem& it, int stage) {
    const int64_t q0 = int64_t(it.span.at(int(it.n))) * kWgRows;
    const int64_t qo_base = (b * d.seq_len * d.heads + it.h) * kWgDh, stat = (b * d.heads + it.h) * d.seq_len;
    load_swizzled_tile(sQ + stage * kTileBytes, p.q + qo_base, q_stride, q0, d.seq_len, tid);
    load_swizzled_tile(sdO + stage * kTileBytes, p.dout + qo_base, q_stride, q0, d.seq_len, tid);
    if (tid < 64) {
      const bool valid = q0 + tid < d.seq_len;
      sLse[stage * 64 + tid] = valid ? p.lse[stat + q0 + tid] * kLog2e : 0.f;
      sDel[stage * 64 + tid] = valid ? p.delta[stat + q0 + tid] : 0.f;
    }
  };

  DkdvItem cur{hk * group, -1,
               cuda_plan::query_tile_span(p.mask, hk * group, d.heads, d.seq_len, d.kv_len, key0, key0 + kWgKeys,
                                          kWgRows)};
  next_dkdv_item<kWgKeys, kWgRows>(cur, h_end, p.mask, d, key0);
  load_swizzled_tile(sK, p.k + kv_base, kv_stride, key0, d.kv_len, tid);
  load_swizzled_tile(sV, p.v + kv_base, kv_stride, key0, d.kv_len, tid);
  if (cur.h < h_end) load_item(cur, 0);
  cp_async_commit();

  const int64_t ja = wkey0 + g, jb = ja + 8;  // this thread's two keys
  const float scale = 1.f / sqrtf(float(kWgDh)), scale_log2 = scale * kLog2e;

  float dk[16][4], dv[16][4];
#pragma unroll
  for (int i = 0; i < 16; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;

  int64_t cover_head = -1;
  cuda_plan::BlockCover cover{0, 0, 0, 0, true};
  for (int stage = 0; cur.h < h_end; stage ^= 1) {
    DkdvItem next = cur;
    next_dkdv_item<kWgKeys, kWgRows>(next, h_end, p.mask, d, key0);
    if (next.h < h_end) load_item(next, stage ^ 1);
    cp_async_commit();
    cp_async_wait_group<1>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const uint32_t cQ = sQ + stage * kTileBytes, cdO = sdO + stage * kTileBytes;
    const float* cLse = sLse + stage * 64;
    const float* cDel = sDel + stage * 64;
    const int64_t h = cur.h;
    const int q0 = cur.span.at(int(cur.n)) * kWgRows;
    if (h != cover_head) {  // the mask depends on the head (S2 shifts half of them)
      cover = cuda_plan::key_block_cover(p.mask, h, d.heads, d.seq_len, d.kv_len, wkey0, wkey0 + 16);
      cover_head = h;
    }

    // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: 64 keys × 64 queries, one group of 16 products.
    float st[8][4], dpt[8][4];
    pin(dk);
    pin(dv);
    two_score_products(st, dpt, sK, cQ, sV, cdO);

    if (!cuda_plan::covers_tile(cover, q0, kWgRows)) {  // a diagonal item: mask element by element
      const cuda_plan::QueryRanges none{1, 0, 0, 0};
      const cuda_plan::QueryRanges qa =
          ja < d.kv_len ? cuda_plan::attending_queries(p.mask, h, d.heads, d.seq_len, d.kv_len, ja) : none;
      const cuda_plan::QueryRanges qb =
          jb < d.kv_len ? cuda_plan::attending_queries(p.mask, h, d.heads, d.seq_len, d.kv_len, jb) : none;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t i = q0 + nt * 8 + t4 * 2 + e;
          if (!query_ok(qa, i)) st[nt][e] = -INFINITY;
          if (!query_ok(qb, i)) st[nt][e + 2] = -INFINITY;
        }
    }
    transposed_p_and_ds<8>(st, dpt, cLse, cDel, scale_log2, t4);  // Pᵀ into st, dSᵀ into dpt
    uint32_t pa[4][4], da[4][4];
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      pack_a_from_c<8>(pa[kt], st, kt);
      pack_a_from_c<8>(da[kt], dpt, kt);
    }
    // dV += Pᵀ·dO and dK += dSᵀ·Q (dO, Q [query][dim] are B [k = query][n = dim], read transposed).
    pin(dk);
    pin(dv);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      wgmma_m64n128k16_rs(dv, pa[kt], mn_major_desc(cdO, kt), 1);
      wgmma_m64n128k16_rs(dk, da[kt], mn_major_desc(cQ, kt), 1);
    }
    wgmma_commit();
    wgmma_wait_all();
    pin(dk);
    pin(dv);
    __syncthreads();  // every warp is done with this stage before the next iteration's copy refills it
    cur = next;
  }

  cp_async_wait_all();
#pragma unroll
  for (int half = 0; half < 2; ++half) {  // rows ja and ja + 8
    const int64_t key = ja + 8 * half;
    if (key < d.kv_len) {
      const int64_t off = ((b * d.kv_len + key) * d.kv_heads + hk) * kWgDh;
#pragma unroll
      for (int dt = 0; dt < 16; ++dt) {
        *reinterpret_cast<uint32_t*>(p.dk + off + dt * 8 + t4 * 2) =
            pack_bf16(dk[dt][2 * half] * scale, dk[dt][2 * half + 1] * scale);
        *reinterpret_cast<uint32_t*>(p.dv + off + dt * 8 + t4 * 2) = pack_bf16(dv[dt][2 * half], dv[dt][2 * half + 1]);
      }
    }
  }
#else
  (void)p;
  __trap();  // never launched: attention_wgmma_available() checks that the sm_90a machine code was loaded
#endif
}

}  // namespace

bool attention_wgmma_available() {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, attention_forward_wgmma_kernel) != cudaSuccess) {
    (void)cudaGetLastError();  // no machine code for this device: clear the sticky-free error and say no
    return false;
  }
  return attr.binaryVersion == 90;
}

namespace {
// One warpgroup per CTA: grid x = `extent` rows (queries or keys) in tiles of `tile`, grid y = `groups`.
template <class Args>
void launch_warpgroups(void (*kernel)(Args), const char* name, size_t smem, int64_t extent, int64_t tile,
                       int64_t groups, const Args& a, cudaStream_t s) {
  LL_CHECK(a.dims.head_dim == kWgDh, name, ": head dimension ", a.dims.head_dim, " is not 128");
  LL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((extent + tile - 1) / tile), unsigned(groups));
  kernel<<<grid, kWgThreads, smem, s>>>(a);
  LL_LAUNCH_CHECK(name);
}
}  // namespace

void launch_attention_forward_wgmma(const AttentionForwardArgs& a, cudaStream_t s) {
  if (a.dims.seq_len == 0 || a.dims.batch == 0) return;
  check_attention_grid(a.dims);
  launch_warpgroups(attention_forward_wgmma_kernel, "attention_forward_wgmma_kernel", kWgSmemBytes, a.dims.seq_len,
                    kWgRows, a.dims.batch * a.dims.heads, a, s);
}

// The backward passes run inside launch_attention_backward_tc, which has checked the grid.
void launch_attention_dq_wgmma(const AttentionBackwardArgs& a, cudaStream_t s) {
  if (a.dims.seq_len == 0 || a.dims.batch == 0) return;
  launch_warpgroups(attention_dq_wgmma_kernel, "attention_dq_wgmma_kernel", kWgDqSmemBytes, a.dims.seq_len,
                    kWgRows, a.dims.batch * a.dims.heads, a, s);
}

void launch_attention_dkdv_wgmma(const AttentionBackwardArgs& a, cudaStream_t s) {
  if (a.dims.kv_len == 0 || a.dims.batch == 0) return;
  launch_warpgroups(attention_dkdv_wgmma_kernel, "attention_dkdv_wgmma_kernel", kWgDkdvSmemBytes, a.dims.kv_len,
                    kWgKeys, a.dims.batch * a.dims.kv_heads, a, s);
}

}  // namespace ll::cuda
