// Attention kernels (GQA-native, causal / S2 / S2-roll masks from attention_mask.h; scale 1/sqrt(Dh)).
//
// Layouts (row-major, bf16): q, out, dq, dout [B, L, H, Dh]; k, v, dk, dv [B, Lk, Hkv, Dh]; lse [B, H, L] f32.
// Query head h reads KV head h / (H / Hkv); repeated K/V are never materialised. Queries are the last L of Lk
// positions (KV-cache decoding); the S2 masks need Lk == L.
//
// Kernel families (cuda_plan::AttentionPath):
//  * TensorCore (attention.cu): flash-attention-2-style tiles with online softmax, mma.sync m16n8k16 bf16→f32
//    for QKᵀ and PV (forward) and for S, dP, dV, dK, dQ (backward); head dim 64 or 128. Forward saves only the
//    log-sum-exp. Backward recomputes P from it in two passes, both deterministic (no atomics):
//      dK/dV: one CTA per (batch, KV head, 64-key tile) loops over the query heads of the group and the query
//             tiles that attend its keys (cuda_plan::query_tile_span), accumulating dK, dV in registers;
//      dQ:    one CTA per (batch, head, 64-query tile) loops over the key tiles of its rows (key_tile_span).
//  * Generic (attention_generic.cu): one warp per query row (forward, dQ) or key row (dK/dV), f32 CUDA cores,
//    any head dim <= 256. For small or odd shapes, and a second implementation for cross-checks.
//  * Decode (attention_generic.cu): split-KV forward for <= 8 query rows against a long causal cache: each split
//    CTA writes (max, sum, unnormalised output) partials, a combine kernel merges them in split order.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/attention_mask.h"
#include "cuda/attention_plan.h"
#include "cuda/common.cuh"

namespace ll::cuda {

struct AttentionDims {
  int64_t batch, seq_len, kv_len, heads, kv_heads, head_dim;
};

struct AttentionForwardArgs {
  AttentionDims dims;
  AttentionMask mask;
  const bf16 *q, *k, *v;
  bf16* out;
  float* lse;
};

struct AttentionBackwardArgs {
  AttentionDims dims;
  AttentionMask mask;
  const bf16 *q, *k, *v, *out, *dout;
  const float* lse;
  bf16 *dq, *dk, *dv;
  float* delta;  // scratch [B, H, L]: rowsum(dout ⊙ out)
  // Head dim 128: the dQ and dK/dV passes of attention_wgmma.cu instead of attention.cu's (each needs
  // attention_wgmma_available()).
  bool dq_wgmma = false, dkdv_wgmma = false;
};

// The grid and length limits every tensor-core launch checks (throws ll::Error naming them).
void check_attention_grid(const AttentionDims& d);

// Tensor-core kernels (head dim 64 or 128).
void launch_attention_forward_tc(const AttentionForwardArgs& a, cudaStream_t s);
// The wgmma kernels (attention_wgmma.cu, head dim 128): the forward, and the dQ and dK/dV passes that backward_tc
// runs instead of the mma.sync ones when AttentionBackwardArgs::dq_wgmma / dkdv_wgmma are set. Available when the device runs this build's
// sm_90a machine code (compute capability 9.0 and CUDA_ARCH with 90).
bool attention_wgmma_available();
void launch_attention_forward_wgmma(const AttentionForwardArgs& a, cudaStream_t s);
void launch_attention_dq_wgmma(const AttentionBackwardArgs& a, cudaStream_t s);
void launch_attention_dkdv_wgmma(const AttentionBackwardArgs& a, cudaStream_t s);
void launch_attention_backward_tc(const AttentionBackwardArgs& a, cudaStream_t s);

// Generic kernels (any head dim <= 256).
void launch_attention_forward_generic(const AttentionForwardArgs& a, cudaStream_t s);
void launch_attention_backward_generic(const AttentionBackwardArgs& a, cudaStream_t s);

// delta[b,h,i] = Σ_d dout·out (shared by both backward families).
void launch_attention_delta(const AttentionBackwardArgs& a, cudaStream_t s);

// Split-KV decoding. partial_o: [B·H, splits, L, Dh] f32; partial_ml: [B·H, splits, L, 2] f32.
void launch_attention_decode(const AttentionForwardArgs& a, const cuda_plan::DecodePlan& plan, float* partial_o,
                             float* partial_ml, cudaStream_t s);
inline size_t decode_scratch_floats(const AttentionDims& d, const cuda_plan::DecodePlan& plan) {
  return size_t(d.batch * d.heads * plan.splits * d.seq_len) * size_t(d.head_dim + 2);
}

}  // namespace ll::cuda
