// Device pieces shared by the tensor-core attention kernels (attention.cu: mma.sync, sm_80+; attention_wgmma.cu:
// wgmma, sm_90a): PTX wrappers, the C/A fragment conventions, masking and the online-softmax step.
//
// Fragment conventions (PTX ISA, mma.m16n8k16 with .bf16), lane = 4·g + t (g = lane/4, t = lane%4):
//   A 16×16 (row-major): reg0 = A[g][2t..2t+1], reg1 = A[g+8][2t..], reg2 = A[g][2t+8..], reg3 = A[g+8][2t+8..]
//   B 16×8  (k × n):     reg0 = B[2t..2t+1][g],  reg1 = B[2t+8..2t+9][g]
//   C 16×8  (f32):       c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// A C tile pair (n-tiles 2k, 2k+1) re-packed to bf16 is exactly an A fragment for k-tile k: that is how P and dS
// feed the next product without a trip through shared memory. wgmma's f32 accumulators and register A operand
// use the same per-warp layouts (each warp of the warpgroup owns 16 rows), so the same helpers serve both.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "core/attention_mask.h"
#include "cuda/attention.cuh"
#include "cuda/attention_plan.h"

namespace ll::cuda::attention_detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

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
// Waits until at most N of this thread's committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

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

// 2^x in one MUFU.EX2, results below 2^-126 flushed to 0 (exp2f spends four more instructions per element keeping
// them denormal; a probability that small vanishes in bf16 anyway). 2^-inf = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo (lower address), .y = hi
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ bool key_ok(const KeyRanges& r, int64_t j) { return cuda_plan::in_ranges(r, j); }
__device__ __forceinline__ bool query_ok(const cuda_plan::QueryRanges& r, int64_t i) {
  return (i >= r.lo && i <= r.hi) || (i >= r.wrap_lo && i < r.wrap_hi);
}

// An empty range set for rows outside the sequence.
__device__ __forceinline__ KeyRanges no_keys() { return KeyRanges{1, 0, 0, 0}; }

// ---- pieces shared by the forward and dQ kernels ------------------------------------------------------------------
// An A fragment (16 rows × 16 k) from the C accumulators of n-tiles 2·kt and 2·kt + 1 (see the header comment).
template <int N>
__device__ __forceinline__ void pack_a_from_c(uint32_t (&a)[4], const float (&c)[N][4], int kt) {
  a[0] = pack_bf16(c[2 * kt][0], c[2 * kt][1]);
  a[1] = pack_bf16(c[2 * kt][2], c[2 * kt][3]);
  a[2] = pack_bf16(c[2 * kt + 1][0], c[2 * kt + 1][1]);
  a[3] = pack_bf16(c[2 * kt + 1][2], c[2 * kt + 1][3]);
}

// Element mask of one 16-row block's score tile of 8·NT keys (this thread's rows ra and ra + 8): scores of keys a row
// does not attend become −inf. Only diagonal tiles need it (cuda_plan::covers_tile says which).
template <int NT>
__device__ __forceinline__ void mask_scores(float (&s)[NT][4], const AttentionMask& mask, int64_t h,
                                            const AttentionDims& d, int64_t ra, int64_t key0, int t4) {
  const int64_t rb = ra + 8, q_off = d.kv_len - d.seq_len;
  const KeyRanges A = ra < d.seq_len ? attended_keys(mask, h, d.heads, d.kv_len, ra + q_off) : no_keys();
  const KeyRanges B = rb < d.seq_len ? attended_keys(mask, h, d.heads, d.kv_len, rb + q_off) : no_keys();
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t j = key0 + nt * 8 + t4 * 2 + e;
      if (!key_ok(A, j)) s[nt][e] = -INFINITY;
      if (!key_ok(B, j)) s[nt][e + 2] = -INFINITY;
    }
}

// dQ passes: dS = P ⊙ (dP − δ) with P = exp2(S·scale_log2 − lse), into s; this thread's rows carry lse (in log2
// units) and δ of rows a and b (a masked score gives P = 0).
template <int NT>
__device__ __forceinline__ void scores_to_ds(float (&s)[NT][4], const float (&dp)[NT][4], float lse_a, float lse_b,
                                             float del_a, float del_b, float scale_log2) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      s[nt][e] = fast_exp2(fmaf(s[nt][e], scale_log2, -lse_a)) * (dp[nt][e] - del_a);
      s[nt][e + 2] = fast_exp2(fmaf(s[nt][e + 2], scale_log2, -lse_b)) * (dp[nt][e + 2] - del_b);
    }
}

// dK/dV passes, transposed tiles (key rows × query columns): Pᵀ into st and dSᵀ = Pᵀ ⊙ (dPᵀ − δ) into dpt, with the
// queries' lse (log2 units) and δ indexed by column.
template <int NT>
__device__ __forceinline__ void transposed_p_and_ds(float (&st)[NT][4], float (&dpt)[NT][4], const float* lse,
                                                    const float* del, float scale_log2, int t4) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = nt * 8 + t4 * 2 + (e & 1);
      st[nt][e] = fast_exp2(fmaf(st[nt][e], scale_log2, -lse[col]));
      dpt[nt][e] = st[nt][e] * (dpt[nt][e] - del[col]);
    }
}

// Stores one of this thread's two accumulator rows (half 0: row g, 1: row g + 8) of kDT·8 columns, times `scale`, as
// bf16 at `row` (4-byte stores of this thread's column pairs).
template <int kDT>
__device__ __forceinline__ void store_row(bf16* row, const float (&acc)[kDT][4], int half, float scale, int t4) {
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
    *reinterpret_cast<uint32_t*>(row + dt * 8 + t4 * 2) =
        pack_bf16(acc[dt][2 * half] * scale, acc[dt][2 * half + 1] * scale);
}

// Online-softmax step of one 16-row block (rows g and g + 8 of this thread) with a tile of 8·NT raw scores per row
// (masked entries −inf): m is the running maximum in scaled log2 units, l this thread's partial row sums. Rescales
// o and l, and turns s into P = exp2(s·scale_log2 − m) (one FFMA and one exp2 per element).
template <int NT, int kDT>
__device__ __forceinline__ void softmax_step(float (&s)[NT][4], float (&o)[kDT][4], float (&m)[2], float (&l)[2],
                                             float scale_log2) {
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
  }
  float base[2], alpha[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float next = fmaxf(m[r], mx[r] * scale_log2);
    base[r] = next == -INFINITY ? 0.f : next;  // a row with nothing attended so far stays at 0
    alpha[r] = exp2f(m[r] - base[r]);
    m[r] = next;
  }
  float sum[2] = {0.f, 0.f};
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[nt][e] = fast_exp2(fmaf(s[nt][e], scale_log2, -base[e >> 1]));
      sum[e >> 1] += s[nt][e];
    }
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + sum[r];  // the quad is summed at the end
  // Once a row's maximum settles (early, on real attention with its first-token sink), alpha is exactly 1 and the
  // rescale of the kDT·4 accumulators is an identity: skipped when no row of the warp moved (same bits either way).
  if (!__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) return;
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt) {
    o[dt][0] *= alpha[0];
    o[dt][1] *= alpha[0];
    o[dt][2] *= alpha[1];
    o[dt][3] *= alpha[1];
  }
}

// Query tiles in reverse launch order: under a causal mask the last tiles attend the most keys, and the scheduler
// hands out blocks roughly in launch order, so the heaviest start first and the lightest fill the tail (ncu on an
// H100: the SMs sat idle 11% of the forward's cycles with the lightest tiles first).
__device__ __forceinline__ int64_t heavy_first_query_tile() { return int64_t(gridDim.x) - 1 - int64_t(blockIdx.x); }

// A (query head, query tile) work item of a dK/dV kernel (kKeys keys per CTA, kQueries queries per item); h == h_end
// once there are none left. Items run in head order, query tiles in cuda_plan::query_tile_span order.
struct DkdvItem {
  int64_t h, n;
  cuda_plan::TileSpan span;
};

template <int kKeys, int kQueries>
__device__ __forceinline__ void next_dkdv_item(DkdvItem& it, int64_t h_end, const AttentionMask& mask,
                                               const AttentionDims& d, int64_t key0) {
  ++it.n;
  while (it.n >= it.span.count() && ++it.h < h_end) {
    it.span = cuda_plan::query_tile_span(mask, it.h, d.heads, d.seq_len, d.kv_len, key0, key0 + kKeys, kQueries);
    it.n = 0;
  }
}

}  // namespace ll::cuda::attention_detail
