// The S2-Attn masks: attended sets of boundary tokens, leak-free vs roll, and agreement with two
// independent constructions (LongLoRA's cu_seqlens boundaries, and a simulated roll/regroup/roll-back).
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "core/attention_mask.h"
#include "model/config.h"
#include "util/error.h"

namespace ll {
namespace {

std::set<int64_t> keys_of(const AttentionMask& m, int64_t h, int64_t H, int64_t L, int64_t i) {
  std::set<int64_t> s;
  for (int64_t j = 0; j < L; ++j)
    if (attends(m, h, H, L, i, j)) s.insert(j);
  return s;
}

std::set<int64_t> range(int64_t lo, int64_t hi_inclusive) {
  std::set<int64_t> s;
  for (int64_t j = lo; j <= hi_inclusive; ++j) s.insert(j);
  return s;
}

std::set<int64_t> join(std::set<int64_t> a, const std::set<int64_t>& b) {
  a.insert(b.begin(), b.end());
  return a;
}

// L = 16, G = 4, H = 4: heads 0,1 unshifted (groups [0,4) [4,8) [8,12) [12,16));
// heads 2,3 shifted by G/2 = 2 (segments [0,2) [2,6) [6,10) [10,14) [14,16)).
TEST(S2Mask, BoundaryTokensLeakFree) {
  const int64_t L = 16, H = 4;
  const AttentionMask m = AttentionMask::s2(4, false);
  for (int64_t h : {0, 1}) {
    EXPECT_EQ(keys_of(m, h, H, L, 0), range(0, 0));
    EXPECT_EQ(keys_of(m, h, H, L, 3), range(0, 3));
    EXPECT_EQ(keys_of(m, h, H, L, 4), range(4, 4));
    EXPECT_EQ(keys_of(m, h, H, L, 7), range(4, 7));
    EXPECT_EQ(keys_of(m, h, H, L, 12), range(12, 12));
    EXPECT_EQ(keys_of(m, h, H, L, 15), range(12, 15));
  }
  for (int64_t h : {2, 3}) {
    EXPECT_EQ(keys_of(m, h, H, L, 0), range(0, 0));
    EXPECT_EQ(keys_of(m, h, H, L, 1), range(0, 1));
    EXPECT_EQ(keys_of(m, h, H, L, 2), range(2, 2));
    EXPECT_EQ(keys_of(m, h, H, L, 5), range(2, 5));
    EXPECT_EQ(keys_of(m, h, H, L, 6), range(6, 6));
    EXPECT_EQ(keys_of(m, h, H, L, 13), range(10, 13));
    EXPECT_EQ(keys_of(m, h, H, L, 14), range(14, 14));
    EXPECT_EQ(keys_of(m, h, H, L, 15), range(14, 15));
  }
}

TEST(S2Mask, BoundaryTokensRoll) {
  const int64_t L = 16, H = 4;
  const AttentionMask m = AttentionMask::s2(4, true);
  EXPECT_EQ(keys_of(m, 0, H, L, 3), range(0, 3));  // unshifted heads are unchanged
  EXPECT_EQ(keys_of(m, 2, H, L, 0), join(range(0, 0), range(14, 15)));
  EXPECT_EQ(keys_of(m, 3, H, L, 1), join(range(0, 1), range(14, 15)));
  EXPECT_EQ(keys_of(m, 2, H, L, 2), range(2, 2));
  EXPECT_EQ(keys_of(m, 2, H, L, 15), range(14, 15));  // the last tokens never see the first ones
}

TEST(S2Mask, RollDiffersFromLeakFreeExactlyAtTheWrapAround) {
  for (int64_t L : {8, 16, 24, 64}) {
    const int64_t G = L / 4, H = 6;
    const AttentionMask lf = AttentionMask::s2(G, false), roll = AttentionMask::s2(G, true);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j) {
          const bool expected_extra = h >= H / 2 && i < G / 2 && j >= L - G / 2;
          EXPECT_EQ(attends(roll, h, H, L, i, j), attends(lf, h, H, L, i, j) || expected_extra)
              << "L=" << L << " h=" << h << " i=" << i << " j=" << j;
          if (attends(lf, h, H, L, i, j)) {
            EXPECT_LE(j, i) << "leak-free S2 must be causal";
          }
        }
  }
}

// LongLoRA's varlen construction: per head half, segment starts arange(0, L, G) (+G/2 for the shifted
// half, with 0 prepended), the row end appended; causal attention inside each segment.
bool attends_cu_seqlens(int64_t G, bool shifted, int64_t L, int64_t i, int64_t j) {
  std::vector<int64_t> bounds;
  if (shifted) bounds.push_back(0);
  for (int64_t t = 0; t < L; t += G) {
    const int64_t start = shifted ? t + G / 2 : t;
    if (start < L && (bounds.empty() || start > bounds.back())) bounds.push_back(start);
  }
  bounds.push_back(L);
  for (size_t s = 0; s + 1 < bounds.size(); ++s)
    if (i >= bounds[s] && i < bounds[s + 1]) return j >= bounds[s] && j <= i;
  return false;
}

// Paper Algorithm 1: roll the shifted heads by −G/2, cut into groups of G, causal inside each group,
// roll back. Query i sits at rolled position (i − G/2) mod L.
bool attends_simulated_roll(int64_t G, bool shifted, int64_t L, int64_t i, int64_t j) {
  const int64_t shift = shifted ? G / 2 : 0;
  const int64_t ri = ((i - shift) % L + L) % L, rj = ((j - shift) % L + L) % L;
  return ri / G == rj / G && rj <= ri;
}

TEST(S2Mask, AgreesWithIndependentConstructions) {
  for (int64_t L : {8, 12, 16, 20, 40, 64}) {
    for (int64_t G : {int64_t(2), int64_t(4), L / 4, L / 2}) {
      if (G < 2 || L % G) continue;
      const int64_t H = 4;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < L; ++i)
          for (int64_t j = 0; j < L; ++j) {
            const bool shifted = h >= H / 2;
            ASSERT_EQ(attends(AttentionMask::s2(G, false), h, H, L, i, j), attends_cu_seqlens(G, shifted, L, i, j))
                << "leak-free L=" << L << " G=" << G << " h=" << h << " i=" << i << " j=" << j;
            if (G % 2 == 0) {
              ASSERT_EQ(attends(AttentionMask::s2(G, true), h, H, L, i, j),
                        attends_simulated_roll(G, shifted, L, i, j))
                  << "roll L=" << L << " G=" << G << " h=" << h << " i=" << i << " j=" << j;
            }
          }
    }
  }
}

TEST(S2Mask, SegmentsClipAtTheSequenceEndLikeTheSftRule) {
  // reference §1.5: L = 6000, G = 8192 → unshifted [6000], shifted [4096, 1904].
  const AttentionMask m = AttentionMask::s2(8192, false);
  EXPECT_EQ(attended_keys(m, 0, 2, 6000, 5999).lo, 0);
  EXPECT_EQ(attended_keys(m, 1, 2, 6000, 4095).lo, 0);
  EXPECT_EQ(attended_keys(m, 1, 2, 6000, 4096).lo, 4096);
  EXPECT_EQ(attended_keys(m, 1, 2, 6000, 5999).lo, 4096);
}

TEST(S2Mask, CausalMaskIsPlainCausal) {
  const AttentionMask m = AttentionMask::causal();
  for (int64_t i = 0; i < 9; ++i)
    for (int64_t j = 0; j < 9; ++j) EXPECT_EQ(attends(m, 3, 4, 9, i, j), j <= i);
}

// transformers' Mistral rule (masking_utils.sliding_window_overlay, and 4.46's `arange <= cache_position - W`
// masked): query i sees key j iff j <= i and j > i - W — itself and the W - 1 keys before it.
TEST(SlidingWindowMask, IsTransformersRuleItselfAndTheWMinusOneKeysBefore) {
  for (int64_t W : {1, 2, 3, 5, 9, 100})
    for (int64_t i = 0; i < 12; ++i)
      for (int64_t j = 0; j < 12; ++j)
        ASSERT_EQ(attends(AttentionMask::causal().windowed(W), 1, 4, 12, i, j), j <= i && j > i - W)
            << "W=" << W << " i=" << i << " j=" << j;
  EXPECT_EQ(keys_of(AttentionMask::causal().windowed(3), 0, 4, 16, 7), range(5, 7));
  EXPECT_EQ(keys_of(AttentionMask::causal().windowed(0), 0, 4, 16, 7), range(0, 7)) << "0 is no window";
}

// With S2 the window applies to positions in the original sequence, inside each head's segment; the roll variant's
// wrap-around keys lie after the query, so the window removes them and windowed roll equals windowed leak-free.
TEST(SlidingWindowMask, ComposesWithS2AsTheIntersectionInOriginalPositions) {
  const int64_t L = 16, H = 4;
  for (int64_t W : {1, 3, 4, 6, 20})
    for (bool roll : {false, true})
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < L; ++i)
          for (int64_t j = 0; j < L; ++j) {
            const AttentionMask s2 = AttentionMask::s2(8, roll);
            ASSERT_EQ(attends(s2.windowed(W), h, H, L, i, j),
                      attends(AttentionMask::s2(8, false), h, H, L, i, j) && j > i - W)
                << "W=" << W << " roll=" << roll << " h=" << h << " i=" << i << " j=" << j;
          }
  // Shifted head (segments [0,4) [4,12) [12,16)), W = 3: query 5 sees 4..5 (its segment starts at 4), query 11 sees
  // 9..11; and the roll variant's query 1 no longer sees the wrap-around keys 12..15.
  EXPECT_EQ(keys_of(AttentionMask::s2(8, false).windowed(3), 2, H, L, 5), range(4, 5));
  EXPECT_EQ(keys_of(AttentionMask::s2(8, false).windowed(3), 2, H, L, 11), range(9, 11));
  EXPECT_EQ(keys_of(AttentionMask::s2(8, true), 2, H, L, 1), join(range(0, 1), range(12, 15)));
  EXPECT_EQ(keys_of(AttentionMask::s2(8, true).windowed(3), 2, H, L, 1), range(0, 1));
}

TEST(S2Config, GroupSizeRule) {
  EXPECT_EQ(s2_group_size(8192, 0.25), 2048);
  EXPECT_EQ(s2_group_size(16, 0.25), 4);
  EXPECT_EQ(s2_group_size(100000, 0.25), 25000);
  try {
    s2_group_size(18, 0.25);  // G = 4, 18 % 4 != 0
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by the group size 4"), std::string::npos) << e.what();
  }
  EXPECT_THROW(s2_group_size(4, 0.25), Error);  // G = 1
}

TEST(S2Config, SftGroupRuleMatchesTheReferenceTable) {
  ModelConfig c;
  c.hidden_size = 64, c.intermediate_size = 128, c.num_attention_heads = 4, c.num_key_value_heads = 4;
  c.num_hidden_layers = 1, c.vocab_size = 10;
  AttentionConfig a;
  a.use_s2 = a.sft_rule = true;
  EXPECT_EQ(training_mask(a, c, 16384).group, 4096);  // L % 4096 == 0 → L/4
  EXPECT_EQ(training_mask(a, c, 8192).group, 2048);
  EXPECT_EQ(training_mask(a, c, 8193).group, 8192);   // the reference's quirk
  EXPECT_EQ(training_mask(a, c, 6000).group, 8192);   // clipped: [6000 | 4096, 1904]
  const AttentionMask m = training_mask(a, c, 6000);
  EXPECT_EQ(attended_keys(m, 3, 4, 6000, 5999).lo, 4096);
  a.variant = S2Variant::Roll;
  EXPECT_THROW(training_mask(a, c, 6000), Error);
}

TEST(S2Config, RejectsHeadLayoutsWhereAShiftedHeadSharesAKvHeadWithAnUnshiftedOne) {
  ModelConfig c;
  c.hidden_size = 64, c.intermediate_size = 128, c.num_attention_heads = 8, c.num_hidden_layers = 1, c.vocab_size = 10;
  AttentionConfig s2;
  s2.use_s2 = true;
  c.num_key_value_heads = 2;  // heads 4..7 → KV head 1: fine (70B's 64/8 layout is the same shape)
  EXPECT_EQ(training_mask(s2, c, 16).kind, MaskKind::S2);
  c.num_key_value_heads = 1;  // MQA: the single KV head serves both patterns
  try {
    training_mask(s2, c, 16);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_key_value_heads = 1 is odd"), std::string::npos) << e.what();
  }
  c.num_key_value_heads = 8;
  s2.variant = S2Variant::Roll;
  EXPECT_EQ(training_mask(s2, c, 16).kind, MaskKind::S2Roll);
  EXPECT_THROW(training_mask(s2, c, 12), Error);  // G = 3: the roll variant needs an even group
  EXPECT_EQ(training_mask(s2, c, 12 * 2).group, 6);
  s2.use_s2 = false;
  EXPECT_EQ(training_mask(s2, c, 7).kind, MaskKind::Causal);
}

}  // namespace
}  // namespace ll
