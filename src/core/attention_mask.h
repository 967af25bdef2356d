// The attention masks of LongLoRA, defined once for every backend (host and device code).
//
//  Causal   : query i attends key j iff j <= i.                      (evaluation, inference, S2 off)
//  S2       : shifted sparse attention, leak-free ("varlen" reference, the default). Group size G.
//             Heads h < H/2 use segments [kG, (k+1)G); heads h >= H/2 use segments shifted by s = floor(G/2):
//             [0, s), [s, s+G), [s+G, s+2G), ...; query i attends key j iff j <= i and both lie in one segment.
//             For even G this is floor((i+off)/G) == floor((j+off)/G) with off = G/2 (the paper's form); for odd
//             G it follows LongLoRA's cu_seqlens code, whose shifted segments start at G//2 + kG.
//             Segments are clipped at L, so G need not divide L (LongLoRA's SFT rule relies on this).
//  S2Roll   : the paper-era roll implementation: identical to S2 except that, in the shifted heads,
//             queries [0, G/2) additionally attend keys [L-G/2, L) (the wrap-around of roll(-G/2)).
//             Requires L % G == 0 and G even.
//  Sliding window (Mistral's `sliding_window` W, composable with each of the above; 0 = none): additionally
//             i - W < j, i.e. a query sees itself and the W - 1 keys before it — transformers' rule
//             (masking_utils.sliding_window_overlay: kv_idx > q_idx - sliding_window). Positions are those of the
//             original sequence (absolute cache positions when decoding), so under S2 the window cuts each group's
//             causal block from the left; the roll variant's wrap-around keys lie after the query, so a window
//             removes them (windowed S2Roll attends exactly what windowed S2 does).
//
// For every query the attended keys form at most two contiguous ranges, which is how kernels iterate.
#pragma once
#include <cstdint>

#include "core/host_device.h"

namespace ll {

enum class MaskKind : int32_t { Causal = 0, S2 = 1, S2Roll = 2 };

struct AttentionMask {
  MaskKind kind = MaskKind::Causal;
  int64_t group = 0;   // G, S2 kinds only
  int64_t window = 0;  // W > 0: sliding window on top of the kind; 0 = none

  static AttentionMask causal() { return {MaskKind::Causal, 0, 0}; }
  static AttentionMask s2(int64_t group_size, bool roll) {
    return {roll ? MaskKind::S2Roll : MaskKind::S2, group_size, 0};
  }
  // This mask with a sliding window of `w` keys (0 = none).
  AttentionMask windowed(int64_t w) const { return {kind, group, w}; }
};

// Attended keys of one query: [lo, hi] (inclusive) plus, when wrap_hi > wrap_lo, [wrap_lo, wrap_hi).
struct KeyRanges {
  int64_t lo, hi;
  int64_t wrap_lo, wrap_hi;
};

// Where the shifted segments start (0 for unshifted heads and for the causal mask).
LL_HOST_DEVICE inline int64_t s2_shift(const AttentionMask& m, int64_t head, int64_t num_heads) {
  return (m.kind != MaskKind::Causal && head >= num_heads / 2) ? m.group / 2 : 0;
}

LL_HOST_DEVICE inline KeyRanges attended_keys(const AttentionMask& m, int64_t head, int64_t num_heads, int64_t seq_len,
                                              int64_t query) {
  KeyRanges r{0, query, 0, 0};
  if (m.kind != MaskKind::Causal) {
    const int64_t shift = s2_shift(m, head, num_heads);
    r.lo = query < shift ? 0 : shift + (query - shift) / m.group * m.group;
    if (m.kind == MaskKind::S2Roll && shift > 0 && query < shift && m.window <= 0) {
      r.wrap_lo = seq_len - shift;
      r.wrap_hi = seq_len;
    }
  }
  if (m.window > 0 && r.lo < query - m.window + 1) r.lo = query - m.window + 1;
  return r;
}

LL_HOST_DEVICE inline bool attends(const AttentionMask& m, int64_t head, int64_t num_heads, int64_t seq_len,
                                   int64_t query, int64_t key) {
  const KeyRanges r = attended_keys(m, head, num_heads, seq_len, query);
  return (key >= r.lo && key <= r.hi) || (key >= r.wrap_lo && key < r.wrap_hi);
}

}  // namespace ll
