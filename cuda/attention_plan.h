// Tiling rules of the CUDA attention kernels, written once for host and device (LL_HOST_DEVICE) so the
// host tests check exactly what the kernels execute.
//
// Queries are the last `seq_len` of `kv_len` key positions: query row i sits at absolute position
// i + q_offset with q_offset = kv_len − seq_len (0 in training; the S2 masks need kv_len == seq_len).
//
//  * Forward and dQ pass: one CTA per (batch, query head, query tile). It visits the key tiles of
//    `key_tile_span`, i.e. only the tiles that hold a key some row of the tile attends. Under S2 that is the
//    tile's own segment(s) (plus the wrap-around range for S2Roll), which is why S2 costs ~1/4 of full causal
//    attention at group ratio 1/4.
//  * dK/dV pass: one CTA per (batch, KV head, key tile). For each query head of the KV head's group it
//    visits the query tiles of `query_tile_span` (the inverse relation, from `attending_queries`).
//  * Elements inside a visited tile pair are masked with the per-row KeyRanges of attention_mask.h.
#pragma once
#include <cstdint>

#include "core/attention_mask.h"

namespace ll::cuda_plan {

// The queries that attend key `key`: [lo, hi] (inclusive; empty when lo > hi) plus [wrap_lo, wrap_hi).
// Exactly the inverse of attends(): i in the ranges <=> attends(mask, head, H, kv_len, i + q_offset, key).
struct QueryRanges {
  int64_t lo, hi;
  int64_t wrap_lo, wrap_hi;
};

LL_HOST_DEVICE inline QueryRanges attending_queries(const AttentionMask& m, int64_t head, int64_t num_heads,
                                                    int64_t seq_len, int64_t kv_len, int64_t key) {
  const int64_t q_offset = kv_len - seq_len;
  QueryRanges r{key - q_offset < 0 ? 0 : key - q_offset, seq_len - 1, 0, 0};
  if (m.kind != MaskKind::Causal) {
    // S2 kinds (seq_len == kv_len): queries from `key` to the end of key's segment.
    const int64_t shift = s2_shift(m, head, num_heads);
    int64_t seg_end;
    if (key < shift) {
      seg_end = shift;
    } else {
      seg_end = shift + (key - shift) / m.group * m.group + m.group;
    }
    if (seg_end > seq_len) seg_end = seq_len;
    r.lo = key;
    r.hi = seg_end - 1;
    if (m.kind == MaskKind::S2Roll && shift > 0 && key >= kv_len - shift && m.window <= 0) {
      r.wrap_lo = 0;
      r.wrap_hi = shift;
    }
  }
  // Sliding window: only queries at absolute positions below key + W see the key.
  if (m.window > 0 && r.hi > key + m.window - 1 - q_offset) r.hi = key + m.window - 1 - q_offset;
  return r;
}

// Longest query or key sequence the tensor-core kernels take: positions and tile indices then fit 32-bit registers.
constexpr int64_t kMaxAttentionLength = int64_t(1) << 30;

// Two disjoint half-open ranges of tile indices, [a0, a1) then [b0, b1) (b may be empty). 32-bit, like BlockCover:
// the kernels keep both in registers for their whole loop (positions stay below kMaxAttentionLength).
struct TileSpan {
  int32_t a0, a1, b0, b1;
  LL_HOST_DEVICE int32_t count() const { return (a1 - a0) + (b1 > b0 ? b1 - b0 : 0); }
  // The n-th tile of the span, n in [0, count()).
  LL_HOST_DEVICE int32_t at(int32_t n) const { return n < a1 - a0 ? a0 + n : b0 + (n - (a1 - a0)); }
};

// [lo, hi] inclusive element ranges → tile spans, with the second range stripped of tiles the first one has.
LL_HOST_DEVICE inline TileSpan make_span(int64_t lo, int64_t hi, int64_t wlo, int64_t whi, int64_t tile) {
  TileSpan s{0, 0, 0, 0};
  if (lo <= hi) {
    s.a0 = int32_t(lo / tile);
    s.a1 = int32_t(hi / tile + 1);
  }
  if (whi > wlo) {
    int32_t b0 = int32_t(wlo / tile), b1 = int32_t((whi - 1) / tile + 1);
    if (s.a1 > s.a0) {
      // Remove the overlap with [a0, a1). The wrap range lies after the main one for S2Roll (keys) and
      // before it (queries), so the overlap is at one end.
      if (b0 >= s.a0 && b0 < s.a1) b0 = s.a1;
      if (b1 > s.a0 && b1 <= s.a1) b1 = s.a0;
    }
    if (b1 > b0) {
      s.b0 = b0;
      s.b1 = b1;
    }
  }
  return s;
}

// The key tiles (of `key_tile` keys) that query rows [row_begin, row_end) of one head attend.
// Relies on the per-query ranges being contiguous in the row index: lo(i) is non-decreasing and
// lo(i+1) <= hi(i) + 1, so the union over rows of [lo(i), hi(i)] is [lo(first), hi(last)].
LL_HOST_DEVICE inline TileSpan key_tile_span(const AttentionMask& m, int64_t head, int64_t num_heads,
                                             int64_t seq_len, int64_t kv_len, int64_t row_begin, int64_t row_end,
                                             int64_t key_tile) {
  if (row_end > seq_len) row_end = seq_len;
  if (row_begin >= row_end) return TileSpan{0, 0, 0, 0};
  const int64_t q_offset = kv_len - seq_len;
  const KeyRanges first = attended_keys(m, head, num_heads, kv_len, row_begin + q_offset);
  const KeyRanges last = attended_keys(m, head, num_heads, kv_len, row_end - 1 + q_offset);
  // Only rows below the shift have a wrap range, and the first row has it when any row does.
  return make_span(first.lo, last.hi, first.wrap_lo, first.wrap_hi, key_tile);
}

// The query tiles (of `query_tile` rows) holding a query of head `head` that attends a key in [key_begin, key_end).
// Same contiguity argument as key_tile_span: lo(j) and hi(j) are non-decreasing in the key index.
LL_HOST_DEVICE inline TileSpan query_tile_span(const AttentionMask& m, int64_t head, int64_t num_heads,
                                               int64_t seq_len, int64_t kv_len, int64_t key_begin, int64_t key_end,
                                               int64_t query_tile) {
  if (key_end > kv_len) key_end = kv_len;
  if (key_begin >= key_end) return TileSpan{0, 0, 0, 0};
  const QueryRanges first = attending_queries(m, head, num_heads, seq_len, kv_len, key_begin);
  const QueryRanges last = attending_queries(m, head, num_heads, seq_len, kv_len, key_end - 1);
  // Only keys at the end have a wrap range, and the last key has it when any key does.
  return make_span(first.lo, last.hi, last.wrap_lo, last.wrap_hi, query_tile);
}

// Element test inside a tile: does the row with these ranges attend key j?
LL_HOST_DEVICE inline bool in_ranges(const KeyRanges& r, int64_t j) {
  return (j >= r.lo && j <= r.hi) || (j >= r.wrap_lo && j < r.wrap_hi);
}

// ---- tiles that need no per-element mask ------------------------------------------------------------------------
// What every row of a block of rows has in common: the main ranges of all rows contain [lo_max, hi_min], and when
// every row has a wrap range it is [wrap_lo, wrap_hi) (only S2Roll rows below the shift have one, and the same one).
// A tile inside either is attended by every row of the block, so the kernels skip the element mask there; that is
// every tile of a causal or S2 block except the diagonal ones. `empty`: the block holds no valid row.
struct BlockCover {
  int32_t lo_max, hi_min;
  int32_t wrap_lo, wrap_hi;
  bool empty;
};

LL_HOST_DEVICE inline bool covers_tile(const BlockCover& c, int32_t begin, int32_t count) {
  if (c.empty) return true;  // no valid row: whatever it computes is discarded
  return (c.lo_max <= begin && c.hi_min >= begin + count - 1) ||
         (c.wrap_hi > c.wrap_lo && c.wrap_lo <= begin && c.wrap_hi >= begin + count);
}

// Query rows [row_begin, row_end) of one head (clamped to seq_len), as in key_tile_span: lo and hi of the key ranges
// are non-decreasing in the row, and rows with a wrap range are a prefix, so the last row has one only if all do.
LL_HOST_DEVICE inline BlockCover row_block_cover(const AttentionMask& m, int64_t head, int64_t num_heads,
                                                 int64_t seq_len, int64_t kv_len, int64_t row_begin, int64_t row_end) {
  if (row_end > seq_len) row_end = seq_len;
  if (row_begin >= row_end) return BlockCover{0, 0, 0, 0, true};
  const int64_t q_offset = kv_len - seq_len;
  const KeyRanges first = attended_keys(m, head, num_heads, kv_len, row_begin + q_offset);
  const KeyRanges last = attended_keys(m, head, num_heads, kv_len, row_end - 1 + q_offset);
  return BlockCover{int32_t(last.lo), int32_t(first.hi), int32_t(last.wrap_lo), int32_t(last.wrap_hi), false};
}

// Keys [key_begin, key_end) of one head (clamped to kv_len), as in query_tile_span: lo and hi of the query ranges are
// non-decreasing in the key, and keys with a wrap range are a suffix, so the first key has one only if all do.
LL_HOST_DEVICE inline BlockCover key_block_cover(const AttentionMask& m, int64_t head, int64_t num_heads,
                                                 int64_t seq_len, int64_t kv_len, int64_t key_begin, int64_t key_end) {
  if (key_end > kv_len) key_end = kv_len;
  if (key_begin >= key_end) return BlockCover{0, 0, 0, 0, true};
  const QueryRanges first = attending_queries(m, head, num_heads, seq_len, kv_len, key_begin);
  const QueryRanges last = attending_queries(m, head, num_heads, seq_len, kv_len, key_end - 1);
  return BlockCover{int32_t(last.lo), int32_t(first.hi), int32_t(first.wrap_lo), int32_t(first.wrap_hi), false};
}

// ---- split-KV decoding ------------------------------------------------------------------------------------
// One (or a few) query rows against a long cache: keys are cut into `splits` chunks of `chunk` keys handled by
// separate CTAs, whose partial (max, sum, unnormalised output) are merged in split order (deterministic). The
// split count depends only on the shape, never on the device, so results are the same on every card.
struct DecodePlan {
  int64_t splits;  // CTAs per (batch, head)
  int64_t chunk;   // keys per split (a multiple of 64)
};

constexpr int64_t kDecodeMaxQueries = 8;       // the decode path serves at most this many query rows
constexpr int64_t kDecodeMinKeys = 256;        // and at least this many keys
constexpr int64_t kDecodeKeysPerSplit = 512;   // target keys per split
constexpr int64_t kDecodeMaxSplits = 128;

inline DecodePlan plan_decode(int64_t kv_len) {
  int64_t splits = (kv_len + kDecodeKeysPerSplit - 1) / kDecodeKeysPerSplit;
  if (splits < 1) splits = 1;
  if (splits > kDecodeMaxSplits) splits = kDecodeMaxSplits;
  int64_t chunk = (kv_len + splits - 1) / splits;
  chunk = (chunk + 63) / 64 * 64;
  splits = (kv_len + chunk - 1) / chunk;
  return {splits, chunk};
}

// ---- which kernel family runs an attention call ----------------------------------------------------------------
enum class AttentionPath : int {
  Auto = 0,       // (only as an override value) let choose_attention_path decide
  TensorCore,     // mma.sync flash kernels, head dim 64 or 128
  Generic,        // one warp per row, CUDA cores, any head dim <= 256 (small/odd shapes, cross-checks)
  Decode,         // split-KV forward for a few query rows against a long causal cache
};

inline const char* attention_path_name(AttentionPath p) {
  switch (p) {
    case AttentionPath::Auto: return "auto";
    case AttentionPath::TensorCore: return "tensor-core";
    case AttentionPath::Generic: return "generic";
    case AttentionPath::Decode: return "decode";
  }
  return "?";
}

constexpr int64_t kMaxHeadDim = 256;

inline bool tensor_core_head_dim(int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

// Whether a path can run a call at all (overrides used by tests and benchmarks are checked with this).
inline bool attention_path_supports(AttentionPath p, int64_t seq_len, int64_t head_dim, const AttentionMask& m,
                                    bool backward) {
  switch (p) {
    case AttentionPath::Auto: return true;
    case AttentionPath::TensorCore: return tensor_core_head_dim(head_dim);
    case AttentionPath::Generic: return head_dim >= 1 && head_dim <= kMaxHeadDim;
    case AttentionPath::Decode:
      return !backward && m.kind == MaskKind::Causal && m.window <= 0 && seq_len <= kDecodeMaxQueries && head_dim % 32 == 0 &&
             head_dim <= kMaxHeadDim;
  }
  return false;
}

// The path for a shape: decoding (a few rows against >= kDecodeMinKeys keys) goes split-KV; head dims 64/128 use
// the tensor-core kernels; anything else the generic ones.
inline AttentionPath choose_attention_path(int64_t seq_len, int64_t kv_len, int64_t head_dim, const AttentionMask& m,
                                           bool backward) {
  if (kv_len >= kDecodeMinKeys && attention_path_supports(AttentionPath::Decode, seq_len, head_dim, m, backward))
    return AttentionPath::Decode;
  return tensor_core_head_dim(head_dim) ? AttentionPath::TensorCore : AttentionPath::Generic;
}

// Tile sizes of the tensor-core kernels (also used by the host-side work estimates).
constexpr int64_t kFwdQueryTile = 128;  // 4 warps × 32 rows
// Forward key tile, both head dims (at Dh 128 it spills ~300 bytes per thread, but on an H100 it ran 6-8% faster
// than 32-key tiles, which fit the registers: half the per-tile softmax and barrier work; docs/gpu-log.md).
constexpr int64_t kFwdKeyTile = 64;
constexpr int64_t kBwdKeyTile = 64;    // dK/dV pass: 4 warps × 16 keys
constexpr int64_t kBwdQueryTile = 32;  // dK/dV pass: queries per step
constexpr int64_t kDqQueryTile = 64;   // dQ pass: 4 warps × 16 rows
constexpr int64_t kDqKeyTile = 64;

// Σ over query tiles of the key tiles visited, for one head: the forward's work in tile pairs.
inline int64_t forward_tile_pairs(const AttentionMask& m, int64_t head, int64_t num_heads, int64_t seq_len,
                                  int64_t kv_len, int64_t query_tile, int64_t key_tile) {
  int64_t pairs = 0;
  for (int64_t r = 0; r < seq_len; r += query_tile)
    pairs += key_tile_span(m, head, num_heads, seq_len, kv_len, r, r + query_tile, key_tile).count();
  return pairs;
}

}  // namespace ll::cuda_plan
