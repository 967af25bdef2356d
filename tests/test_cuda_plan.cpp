// Host-side logic of the CUDA backend, tested on the CPU (every build, GPU or not, nvcc or not): attention tiling
// and its inverse, S2 work, decode splits, path dispatch, the row-major → cuBLASLt translation, reduction and
// scatter plans, argument validation, the memory report and device support.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "cpu/cpu_backend.h"
#include "cpu/kernels.h"
#include "cuda/attention_plan.h"
#include "cuda/device_info.h"
#include "cuda/gemm_plan.h"
#include "cuda/launch_plan.h"
#include "cuda/memory_report.h"
#include "cuda/op_checks.h"
#include "cuda/perf_model.h"
#include "core/tensor_host.h"
#include "test_util.h"

namespace ll {
namespace {

using namespace cuda_plan;

// ---- attention tiling -------------------------------------------------------------------------------------------
struct MaskCase {
  AttentionMask mask;
  int64_t heads, seq_len, kv_len;
};

std::vector<MaskCase> mask_cases() {
  std::vector<MaskCase> c;
  for (int64_t L : {1, 5, 16, 33, 64, 100})
    for (int64_t extra : {0, 1, 7, 70}) c.push_back({AttentionMask::causal(), 2, L, L + extra});
  for (int64_t L : {8, 12, 16, 48, 100, 130})
    for (int64_t G : {2, 3, 4, 5, 8, 12, 16, 33})
      if (G <= L) {
        c.push_back({AttentionMask::s2(G, false), 4, L, L});
        if (L % G == 0 && G % 2 == 0) c.push_back({AttentionMask::s2(G, true), 4, L, L});
      }
  // Sliding windows (Mistral): alone (also decoding against a longer cache) and on top of both S2 kinds.
  for (int64_t L : {1, 5, 33, 100})
    for (int64_t extra : {0, 7, 70})
      for (int64_t W : {1, 3, 16, 40}) c.push_back({AttentionMask::causal().windowed(W), 2, L, L + extra});
  for (int64_t L : {16, 48, 130})
    for (int64_t G : {4, 8, 16})
      for (int64_t W : {1, 3, 8, 21}) {
        c.push_back({AttentionMask::s2(G, false).windowed(W), 4, L, L});
        if (L % G == 0) c.push_back({AttentionMask::s2(G, true).windowed(W), 4, L, L});
      }
  return c;
}

std::string describe(const MaskCase& c) {
  return std::string("kind ") + std::to_string(int(c.mask.kind)) + " G=" + std::to_string(c.mask.group) +
         " W=" + std::to_string(c.mask.window) +
         " L=" + std::to_string(c.seq_len) + " Lk=" + std::to_string(c.kv_len);
}

TEST(AttentionPlan, AttendingQueriesIsTheExactInverseOfAttends) {
  for (const MaskCase& c : mask_cases())
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t j = 0; j < c.kv_len; ++j) {
        const QueryRanges r = attending_queries(c.mask, h, c.heads, c.seq_len, c.kv_len, j);
        for (int64_t i = 0; i < c.seq_len; ++i) {
          const bool in = (i >= r.lo && i <= r.hi) || (i >= r.wrap_lo && i < r.wrap_hi);
          ASSERT_EQ(in, attends(c.mask, h, c.heads, c.kv_len, i + c.kv_len - c.seq_len, j))
              << describe(c) << " head " << h << " query " << i << " key " << j;
        }
      }
}

std::set<int64_t> span_tiles(const TileSpan& s) {
  std::set<int64_t> out;
  for (int64_t n = 0; n < s.count(); ++n) {
    EXPECT_TRUE(out.insert(s.at(n)).second) << "tile " << s.at(n) << " visited twice";
  }
  return out;
}

TEST(AttentionPlan, KeyTileSpanIsExactlyTheTilesHoldingAttendedKeys) {
  for (const MaskCase& c : mask_cases())
    for (int64_t tile : {1, 3, 16, 64})
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t r0 = 0; r0 < c.seq_len; r0 += tile) {
          std::set<int64_t> want;
          for (int64_t i = r0; i < std::min(r0 + tile, c.seq_len); ++i)
            for (int64_t j = 0; j < c.kv_len; ++j)
              if (attends(c.mask, h, c.heads, c.kv_len, i + c.kv_len - c.seq_len, j)) want.insert(j / tile);
          const TileSpan s = key_tile_span(c.mask, h, c.heads, c.seq_len, c.kv_len, r0, r0 + tile, tile);
          ASSERT_EQ(span_tiles(s), want) << describe(c) << " head " << h << " rows from " << r0 << " tile " << tile;
        }
}

TEST(AttentionPlan, QueryTileSpanIsExactlyTheTilesHoldingAttendingQueries) {
  for (const MaskCase& c : mask_cases())
    for (int64_t key_tile : {1, 16, 64})
      for (int64_t query_tile : {1, 5, 32})
        for (int64_t h = 0; h < c.heads; ++h)
          for (int64_t k0 = 0; k0 < c.kv_len; k0 += key_tile) {
            std::set<int64_t> want;
            for (int64_t j = k0; j < std::min(k0 + key_tile, c.kv_len); ++j)
              for (int64_t i = 0; i < c.seq_len; ++i)
                if (attends(c.mask, h, c.heads, c.kv_len, i + c.kv_len - c.seq_len, j)) want.insert(i / query_tile);
            const TileSpan s =
                query_tile_span(c.mask, h, c.heads, c.seq_len, c.kv_len, k0, k0 + key_tile, query_tile);
            ASSERT_EQ(span_tiles(s), want) << describe(c) << " head " << h << " keys from " << k0;
          }
}

// A tile may skip the element mask only when every (valid) row of the block attends every key of it — the kernels
// run unmasked arithmetic there, so "covered" must never be claimed wrongly; missing a covered tile would only cost
// speed, and happens only in the corner checked below.
TEST(AttentionPlan, BlockCoverIsExactlyTheFullyAttendedTiles) {
  int64_t covered_seen = 0;
  for (const MaskCase& c : mask_cases())
    for (int64_t block : {1, 4, 16, 32})
      for (int64_t tile : {1, 3, 16, 32, 64})
        for (int64_t h = 0; h < c.heads; ++h) {
          for (int64_t r0 = 0; r0 < c.seq_len; r0 += block) {
            const BlockCover rows = row_block_cover(c.mask, h, c.heads, c.seq_len, c.kv_len, r0, r0 + block);
            ASSERT_FALSE(rows.empty);
            for (int64_t k0 = 0; k0 < c.kv_len; k0 += tile) {
              bool all = k0 + tile <= c.kv_len;  // a tile reaching past the keys holds padding: always masked
              for (int64_t i = r0; all && i < std::min(r0 + block, c.seq_len); ++i)
                for (int64_t j = k0; all && j < k0 + tile; ++j)
                  all = attends(c.mask, h, c.heads, c.kv_len, i + c.kv_len - c.seq_len, j);
              const bool covered = covers_tile(rows, k0, tile);
              ASSERT_TRUE(!covered || all)  // never claimed wrongly
                  << describe(c) << " head " << h << " rows " << r0 << "+" << block << " keys " << k0 << "+" << tile;
              // Missed only where a tile straddles a row's main and wrap ranges, which touch only when L == G.
              ASSERT_TRUE(covered || !all || (c.mask.kind == MaskKind::S2Roll && c.seq_len == c.mask.group))
                  << describe(c) << " head " << h << " rows " << r0 << "+" << block << " keys " << k0 << "+" << tile;
              covered_seen += all;
            }
          }
          for (int64_t k0 = 0; k0 < c.kv_len; k0 += block) {
            const BlockCover keys = key_block_cover(c.mask, h, c.heads, c.seq_len, c.kv_len, k0, k0 + block);
            ASSERT_FALSE(keys.empty);
            for (int64_t q0 = 0; q0 < c.seq_len; q0 += tile) {
              bool all = q0 + tile <= c.seq_len;
              for (int64_t j = k0; all && j < std::min(k0 + block, c.kv_len); ++j)
                for (int64_t i = q0; all && i < q0 + tile; ++i)
                  all = attends(c.mask, h, c.heads, c.kv_len, i + c.kv_len - c.seq_len, j);
              const bool covered = covers_tile(keys, q0, tile);
              ASSERT_TRUE(!covered || all)
                  << describe(c) << " head " << h << " keys " << k0 << "+" << block << " queries " << q0 << "+" << tile;
              ASSERT_TRUE(covered || !all || (c.mask.kind == MaskKind::S2Roll && c.seq_len == c.mask.group))
                  << describe(c) << " head " << h << " keys " << k0 << "+" << block << " queries " << q0 << "+" << tile;
            }
          }
        }
  EXPECT_GT(covered_seen, 1000);  // the rule is exercised, not vacuously equal
  // Blocks past the end hold no valid row: nothing to mask.
  EXPECT_TRUE(row_block_cover(AttentionMask::causal(), 0, 1, 10, 10, 10, 20).empty);
  EXPECT_TRUE(key_block_cover(AttentionMask::causal(), 0, 1, 10, 10, 12, 20).empty);
}

TEST(AttentionPlan, S2CostsAboutAQuarterOfCausalAttention) {
  const int64_t L = 8192, H = 32;
  for (bool roll : {false, true}) {
    int64_t full = 0, s2 = 0;
    for (int64_t h = 0; h < H; ++h) {
      full += forward_tile_pairs(AttentionMask::causal(), h, H, L, L, kFwdQueryTile, kFwdKeyTile);
      s2 += forward_tile_pairs(AttentionMask::s2(L / 4, roll), h, H, L, L, kFwdQueryTile, kFwdKeyTile);
    }
    const double ratio = double(s2) / double(full);
    EXPECT_GT(ratio, 0.2) << "roll " << roll;
    EXPECT_LT(ratio, 0.27) << "roll " << roll;  // 1/4 plus diagonal tiles (and the roll wrap range)
  }
}

TEST(AttentionPlan, DecodeSplitsCoverTheCacheOnce) {
  for (int64_t kv : {1, 63, 64, 256, 1000, 4096, 100000, 1000000}) {
    const DecodePlan p = plan_decode(kv);
    EXPECT_GE(p.splits, 1);
    EXPECT_LE(p.splits, kDecodeMaxSplits);
    EXPECT_EQ(p.chunk % 64, 0);
    EXPECT_GE(p.splits * p.chunk, kv) << kv;
    EXPECT_LT((p.splits - 1) * p.chunk, kv) << kv << ": an empty split";
  }
}

TEST(AttentionPlan, PathDispatch) {
  const AttentionMask causal = AttentionMask::causal(), s2 = AttentionMask::s2(16, false);
  EXPECT_EQ(choose_attention_path(512, 512, 128, causal, false), AttentionPath::TensorCore);
  EXPECT_EQ(choose_attention_path(512, 512, 64, s2, true), AttentionPath::TensorCore);
  EXPECT_EQ(choose_attention_path(7, 7, 4, causal, false), AttentionPath::Generic);
  EXPECT_EQ(choose_attention_path(33, 33, 96, causal, true), AttentionPath::Generic);
  EXPECT_EQ(choose_attention_path(1, 4096, 128, causal, false), AttentionPath::Decode);
  EXPECT_EQ(choose_attention_path(8, 300, 64, causal, false), AttentionPath::Decode);
  EXPECT_EQ(choose_attention_path(1, 4096, 128, causal, true), AttentionPath::TensorCore);  // no decode backward
  EXPECT_EQ(choose_attention_path(1, 100, 128, causal, false), AttentionPath::TensorCore);  // short cache
  EXPECT_EQ(choose_attention_path(1, 4096, 4, causal, false), AttentionPath::Generic);     // Dh not /32
  EXPECT_FALSE(attention_path_supports(AttentionPath::TensorCore, 16, 96, causal, false));
  EXPECT_FALSE(attention_path_supports(AttentionPath::Decode, 16, 128, causal, false));
  EXPECT_FALSE(attention_path_supports(AttentionPath::Decode, 1, 128, s2, false));
  // The split-KV decode kernel has no window: windowed decoding runs the tensor-core kernels, which skip the tiles
  // before the window.
  EXPECT_EQ(choose_attention_path(1, 4096, 128, causal.windowed(1024), false), AttentionPath::TensorCore);
  EXPECT_FALSE(attention_path_supports(AttentionPath::Decode, 1, 128, causal.windowed(1024), false));
  EXPECT_TRUE(attention_path_supports(AttentionPath::Generic, 16, 256, s2, true));
  EXPECT_FALSE(attention_path_supports(AttentionPath::Generic, 16, 257, s2, true));
  EXPECT_STREQ(attention_path_name(AttentionPath::TensorCore), "tensor-core");
}

// ---- GEMM translation --------------------------------------------------------------------------------------------
// Naive column-major D = op(X)·op(Y) + beta·C, the way cuBLASLt reads its operands.
void col_major_gemm(const ColMajorGemm& g, const std::vector<double>& x, const std::vector<double>& y, double alpha,
                    double beta, std::vector<double>& c) {
  auto at = [](const ColMajorOperand& o, const std::vector<double>& v, int64_t r, int64_t col) {
    // element (r, col) of op(o)
    return o.transposed ? v[size_t(r * o.ld + col)] : v[size_t(col * o.ld + r)];
  };
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      double s = 0;
      for (int64_t l = 0; l < g.k; ++l) s += at(g.first, x, i, l) * at(g.second, y, l, j);
      double& cij = c[size_t(j * g.ldc + i)];
      cij = alpha * s + beta * cij;
    }
}

TEST(GemmPlan, ColumnMajorTranslationComputesTheRowMajorProduct) {
  Rng rng(11);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{3, 5, 7}, {1, 9, 2}, {8, 1, 3}, {4, 4, 1}}) {
        const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
        const RowMajorGemm rg{ta, tb, m, n, k, a_cols + 2, b_cols + 1, n + 3};
        std::vector<double> a = test::random_vector(rng, a_rows * rg.lda), b = test::random_vector(rng, b_rows * rg.ldb);
        std::vector<double> c = test::random_vector(rng, m * rg.ldc), want = c;
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (int64_t l = 0; l < k; ++l)
              s += (ta ? a[l * rg.lda + i] : a[i * rg.lda + l]) * (tb ? b[j * rg.ldb + l] : b[l * rg.ldb + j]);
            want[i * rg.ldc + j] = 0.5 * s + 2.0 * want[i * rg.ldc + j];
          }
        const ColMajorGemm cm = to_column_major(rg);
        EXPECT_EQ(cm.m, n);
        EXPECT_EQ(cm.n, m);
        EXPECT_EQ(cm.c_rows, n);
        EXPECT_EQ(cm.c_cols, m);
        // Operand shapes as stored: op(first) is m'×k', op(second) is k'×n'.
        EXPECT_EQ(cm.first.transposed ? cm.first.cols : cm.first.rows, cm.m);
        EXPECT_EQ(cm.second.transposed ? cm.second.rows : cm.second.cols, cm.n);
        col_major_gemm(cm, b, a, 0.5, 2.0, c);
        for (size_t i = 0; i < c.size(); ++i)
          ASSERT_NEAR(c[i], want[i], 1e-12) << "ta " << ta << " tb " << tb << " m " << m << " n " << n << " k " << k;
      }
}

TEST(GemmPlan, RejectsShortLeadingDimensions) {
  EXPECT_THROW(to_column_major({false, false, 4, 5, 6, 5, 5, 5}), Error);  // lda < k
  EXPECT_THROW(to_column_major({false, true, 4, 5, 6, 6, 5, 5}), Error);   // ldb < k (B is n×k)
  EXPECT_THROW(to_column_major({false, false, 4, 5, 6, 6, 5, 4}), Error);  // ldc < n
  EXPECT_NO_THROW(to_column_major({true, true, 4, 5, 6, 4, 6, 5}));
}

TEST(GemmPlan, PointerAlignmentAndCacheKeys) {
  EXPECT_EQ(pointer_alignment(nullptr), 256);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<void*>(0x1000)), 256);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<void*>(0x1010)), 16);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<void*>(0x1002)), 2);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<void*>(0x1001)), 1);
  const GemmKey base{false, true, 8, 16, 32, 32, 32, 16, DType::BF16, DType::BF16, 256, 256, 256};
  std::vector<GemmKey> variants(13, base);
  variants[0].trans_a = true, variants[1].trans_b = false, variants[2].m = 9, variants[3].n = 17, variants[4].k = 33;
  variants[5].lda = 40, variants[6].ldb = 40, variants[7].ldc = 24, variants[8].ab_type = DType::F16;
  variants[9].c_type = DType::F32, variants[10].align_a = 16, variants[11].align_b = 16, variants[12].align_c = 16;
  for (const GemmKey& v : variants) EXPECT_TRUE(v < base || base < v) << v.str();
  EXPECT_FALSE(base < base);
  EXPECT_NE(base.str().find("m=8 n=16 k=32"), std::string::npos) << base.str();
}

// ---- reductions, scatter, scalars -----------------------------------------------------------------------------------
TEST(LaunchPlan, ColumnReduceChunksCoverTheRowsOnce) {
  for (int64_t rows : {1, 31, 32, 33, 1000, 8192, 1 << 20}) {
    const ColumnReducePlan p = plan_column_reduce(rows);
    EXPECT_GE(p.rows_per_chunk, kColumnReduceMinRows);
    EXPECT_LE(p.chunks, kColumnReduceMaxChunks);
    EXPECT_GE(p.chunks * p.rows_per_chunk, rows);
    EXPECT_LT((p.chunks - 1) * p.rows_per_chunk, rows);
    EXPECT_EQ(plan_column_reduce(rows).chunks, p.chunks) << "deterministic";
  }
  EXPECT_EQ(plan_column_reduce(0).chunks, 0);
}

TEST(LaunchPlan, SumSquaresBlocks) {
  EXPECT_EQ(plan_sum_squares(0).blocks, 0);
  EXPECT_EQ(plan_sum_squares(1).blocks, 1);
  EXPECT_EQ(plan_sum_squares(kSumSquaresBlockElems).blocks, 1);
  EXPECT_EQ(plan_sum_squares(kSumSquaresBlockElems + 1).blocks, 2);
  EXPECT_EQ(elementwise_blocks(0, 256), 1);
  EXPECT_EQ(elementwise_blocks(257, 256), 2);
  EXPECT_EQ(elementwise_blocks(int64_t(1) << 40, 256), 65535);
}

// The device kernel's algorithm (runs in plan order, rows of a run in order, f32 accumulation), replayed on the host,
// is bit-identical to the CPU reference.
TEST(LaunchPlan, EmbeddingBackwardPlanReplaysTheCpuSummationOrderExactly) {
  Rng rng(5);
  const int64_t rows = 300, dim = 7, vocab = 23;
  std::vector<int32_t> ids(rows);
  for (auto& id : ids) id = int32_t(rng.below(vocab));
  std::vector<float> dout(rows * dim), table0(vocab * dim);
  for (auto& x : dout) x = bf16_to_f32(f32_to_bf16(float(rng.normal())));
  for (auto& x : table0) x = float(rng.normal());
  std::vector<float> want = table0, got = table0;
  cpu::embedding_backward(want.data(), ids.data(), dout.data(), rows, dim);
  const EmbeddingBackwardPlan p = plan_embedding_backward(ids.data(), rows, vocab);
  ASSERT_EQ(p.run_start.size(), p.run_id.size() + 1);
  EXPECT_EQ(p.run_start.back(), rows);
  for (int64_t i = 1; i < rows; ++i) {
    ASSERT_LE(ids[p.order[i - 1]], ids[p.order[i]]);
    if (ids[p.order[i - 1]] == ids[p.order[i]]) {
      ASSERT_LT(p.order[i - 1], p.order[i]) << "not stable";
    }
  }
  std::set<int32_t> distinct(ids.begin(), ids.end());
  EXPECT_EQ(p.runs(), int64_t(distinct.size()));
  for (int64_t r = 0; r < p.runs(); ++r)
    for (int64_t d = 0; d < dim; ++d) {
      float acc = got[p.run_id[r] * dim + d];
      for (int32_t i = p.run_start[r]; i < p.run_start[r + 1]; ++i) acc += dout[p.order[i] * dim + d];
      got[p.run_id[r] * dim + d] = acc;
    }
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)));
  ids[17] = int32_t(vocab);
  try {
    plan_embedding_backward(ids.data(), rows, vocab);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 17"), std::string::npos) << e.what();
  }
}

TEST(LaunchPlan, RopeRatesAndAdamWScalars) {
  const std::vector<float> r = rope_angle_rates(10000.0, 4.0, 8);
  ASSERT_EQ(r.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(r[i], float(std::pow(10000.0, -2.0 * i / 8.0) / 4.0));
  // Partial rotary: the frequencies of the rotated slice (R = 16 of a 64-dim head), not of the head.
  const std::vector<float> partial = rope_angle_rates(10000.0, 1.0, 16);
  ASSERT_EQ(partial.size(), 8u);
  EXPECT_FLOAT_EQ(partial[1], float(std::pow(10000.0, -2.0 / 16.0)));
  // Llama-3.1's per-frequency rule: the CUDA rope's table is the CPU rope's frequencies (rope_inv_freq) / factor.
  const RopeLlama3 llama31{8.0, 1.0, 4.0, 8192};
  const std::vector<float> l3 = rope_angle_rates(500000.0, 2.0, 128, llama31);
  const std::vector<double> cpu_freq = rope_inv_freq(500000.0, 128, llama31);
  ASSERT_EQ(l3.size(), cpu_freq.size());
  for (size_t i = 0; i < l3.size(); ++i) EXPECT_EQ(l3[i], float(cpu_freq[i] / 2.0)) << i;
  EXPECT_NE(l3.back(), rope_angle_rates(500000.0, 2.0, 128).back()) << "the lowest frequency is divided by 8";
  const AdamWArgs a = make_adamw_args(1e-3, 0.9, 0.95, 1e-8, 0.1, 3);
  EXPECT_FLOAT_EQ(a.lr_decay, float(1 - 1e-4));
  EXPECT_FLOAT_EQ(a.step_size, float(1e-3 / (1 - std::pow(0.9, 3))));
  EXPECT_FLOAT_EQ(a.bc2_sqrt, float(std::sqrt(1 - std::pow(0.95, 3))));
  EXPECT_FLOAT_EQ(a.one_minus_beta2, 0.05f);
  EXPECT_THROW(make_adamw_args(1e-3, 0.9, 0.95, 1e-8, 0, 0), Error);
}

// ---- argument validation ---------------------------------------------------------------------------------------------
// Tensors that claim to live on the device; never dereferenced.
Tensor dev(DType dt, std::initializer_list<int64_t> dims, uintptr_t addr = 0x100000) {
  return Tensor(reinterpret_cast<void*>(addr), dt, Device::CUDA, dims);
}
constexpr DType kB = DType::BF16, kF = DType::F32, kI = DType::I32;
constexpr op_checks::Context kCuda = cuda_checks::kContext;  // the shared checks as the CUDA backend runs them

template <typename F>
void expect_error(F&& f, const std::string& fragment) {
  try {
    f();
    FAIL() << "expected an error mentioning `" << fragment << "`";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(CudaOpChecks, PolicyAndElementwiseOps) {
  const DTypePolicy p = cuda_checks::policy();
  EXPECT_EQ(p.weight, kB);
  EXPECT_EQ(p.act, kB);
  EXPECT_EQ(p.stat, kF);
  EXPECT_EQ(p.grad, kF);
  EXPECT_EQ(op_checks::add(kCuda, dev(kB, {3, 4}), dev(kB, {3, 4}), dev(kB, {12, 1}).view({3, 4})), 12);
  expect_error([] { op_checks::add(kCuda, dev(kB, {3, 4}), dev(kF, {3, 4}), dev(kB, {3, 4})); }, "`a` has dtype f32");
  expect_error([] { op_checks::add(kCuda, dev(kB, {3, 4}), dev(kB, {3, 4}), dev(kB, {3, 5})); }, "`b` is [3,5]");
  std::vector<uint16_t> host(12);
  const Tensor on_host(host.data(), kB, Device::CPU, {3, 4});
  expect_error([&] { op_checks::add(kCuda, dev(kB, {3, 4}), on_host, dev(kB, {3, 4})); }, "lives on cpu");
  expect_error([] { op_checks::add(kCuda, Tensor(), dev(kB, {3, 4}), dev(kB, {3, 4})); }, "`out` is empty");
  EXPECT_EQ(op_checks::swiglu_backward(kCuda, dev(kB, {2, 6}), dev(kB, {2, 6}), dev(kB, {2, 6}), dev(kB, {2, 6}),
                                       dev(kB, {2, 6})),
            12);
  expect_error([] { op_checks::dropout(kCuda, dev(kB, {2, 2}), dev(kB, {2, 2}), 1.0); }, "[0, 1)");
  EXPECT_EQ(op_checks::sum_squares(kCuda, dev(kF, {5, 3})), 15);
  expect_error([] { op_checks::scale(kCuda, dev(kB, {5})); }, "expected f32");
  EXPECT_EQ(op_checks::convert(kCuda, dev(kF, {2, 3}), dev(kB, {6})), 6);
  expect_error([] { op_checks::convert(kCuda, dev(kF, {2, 3}), dev(kB, {5})); }, "element count");
  expect_error([] { op_checks::convert(kCuda, dev(kI, {6}), dev(kB, {6})); }, "not a floating-point conversion");
  expect_error([] { cuda_checks::copy(dev(kF, {6}), dev(kB, {6})); }, "does not match");
}

TEST(CudaOpChecks, EmbeddingNormRopeAndLoss) {
  const auto e = op_checks::embedding_forward(kCuda, dev(kB, {6, 8}), dev(kI, {6}), dev(kB, {50, 8}));
  EXPECT_EQ(e.rows, 6);
  EXPECT_EQ(e.cols, 8);
  expect_error([] { op_checks::embedding_backward(kCuda, dev(kB, {50, 8}), dev(kI, {6}), dev(kB, {6, 8})); },
               "`dtable` has dtype bf16, expected f32");
  expect_error([] { op_checks::embedding_forward(kCuda, dev(kB, {6, 8}), dev(kF, {6}), dev(kB, {50, 8})); }, "`ids`");
  const auto r = cuda_checks::rmsnorm_forward(dev(kB, {4, 16}), dev(kF, {4}), dev(kB, {4, 16}), dev(kB, {16}), 1e-5);
  EXPECT_EQ(r.rows, 4);
  expect_error([] { cuda_checks::rmsnorm_forward(dev(kB, {4, 16}), dev(kB, {4}), dev(kB, {4, 16}), dev(kB, {16}), 1e-5); },
               "`rstd` has dtype bf16, expected f32");
  // Empty dx / dw are allowed (skipped), wrong ones are not.
  EXPECT_NO_THROW(op_checks::rmsnorm_backward(kCuda, Tensor(), Tensor(), dev(kB, {4, 16}), dev(kB, {4, 16}),
                                              dev(kB, {16}), dev(kF, {4})));
  expect_error([] {
    op_checks::rmsnorm_backward(kCuda, Tensor(), dev(kB, {16}), dev(kB, {4, 16}), dev(kB, {4, 16}), dev(kB, {16}),
                                dev(kF, {4}));
  }, "`dw` has dtype bf16");
  const auto rp = cuda_checks::rope(dev(kB, {10, 4, 8}), dev(kI, {10}), RopeParams{10000, 2}, "rope_forward");
  EXPECT_EQ(rp.head_dim, 8);
  expect_error([] { cuda_checks::rope(dev(kB, {10, 4, 7}), dev(kI, {10}), RopeParams{}, "rope_forward"); }, "even");
  expect_error([] { cuda_checks::rope(dev(kB, {10, 4, 8}), dev(kI, {10}), RopeParams{10000, 0}, "rope_backward"); },
               "rope_backward");
  EXPECT_EQ(cuda_checks::cross_entropy(dev(kB, {3, 11}), dev(kF, {3}), dev(kI, {3})).cols, 11);
  expect_error([] { cuda_checks::cross_entropy(dev(kF, {3, 11}), dev(kF, {3}), dev(kI, {3})); }, "`logits`");
  EXPECT_EQ(op_checks::argmax_rows(kCuda, dev(kI, {3}), dev(kB, {3, 11})).rows, 3);
}

TEST(CudaOpChecks, GptNeoxOpsLayerNormBiasGeluPartialRope) {
  const auto ln = op_checks::layernorm_forward(kCuda, dev(kB, {4, 16}), dev(kF, {4}), dev(kF, {4}), dev(kB, {4, 16}),
                                               dev(kB, {16}), dev(kB, {16}), 1e-5);
  EXPECT_EQ(ln.rows, 4);
  EXPECT_EQ(ln.cols, 16);
  expect_error([] {
    op_checks::layernorm_forward(kCuda, dev(kB, {4, 16}), dev(kF, {4}), dev(kF, {4}), dev(kB, {4, 16}), dev(kB, {16}),
                                 dev(kF, {16}), 1e-5);
  }, "layernorm_forward: argument `b` has dtype f32, expected bf16");
  expect_error([] {
    op_checks::layernorm_forward(kCuda, dev(kB, {4, 16}), dev(kB, {4}), dev(kF, {4}), dev(kB, {4, 16}), dev(kB, {16}),
                                 dev(kB, {16}), 1e-5);
  }, "`mean` has dtype bf16, expected f32");
  expect_error([] {
    op_checks::layernorm_forward(kCuda, dev(kB, {4, 16}), dev(kF, {4}), dev(kF, {4}), dev(kB, {4, 16}), dev(kB, {16}),
                                 dev(kB, {16}), NAN);
  }, "eps must be finite");
  // Every gradient of the backward may be empty (skipped); a present one is checked.
  EXPECT_NO_THROW(op_checks::layernorm_backward(kCuda, Tensor(), Tensor(), Tensor(), dev(kB, {4, 16}), dev(kB, {4, 16}),
                                                dev(kB, {16}), dev(kF, {4}), dev(kF, {4})));
  expect_error([] {
    op_checks::layernorm_backward(kCuda, Tensor(), Tensor(), dev(kB, {16}), dev(kB, {4, 16}), dev(kB, {4, 16}),
                                  dev(kB, {16}), dev(kF, {4}), dev(kF, {4}));
  }, "`db` has dtype bf16, expected f32");
  EXPECT_EQ(op_checks::add_bias(kCuda, dev(kB, {6, 12}), dev(kB, {12})).cols, 12);
  expect_error([] { op_checks::add_bias(kCuda, dev(kB, {6, 12}), dev(kB, {6})); }, "add_bias: argument `b` has shape [6]");
  EXPECT_EQ(op_checks::bias_backward(kCuda, Tensor(), dev(kB, {6, 12})).rows, 6);
  expect_error([] { op_checks::bias_backward(kCuda, dev(kF, {11}), dev(kB, {6, 12})); }, "`db` has shape [11]");
  EXPECT_EQ(op_checks::gelu_forward(kCuda, dev(kB, {3, 5}), dev(kB, {3, 5})), 15);
  expect_error([] { op_checks::gelu_backward(kCuda, dev(kB, {3, 5}), dev(kF, {3, 5}), dev(kB, {3, 5})); },
               "gelu_backward: argument `dout` has dtype f32");
  // Partial rotary: the resolved slice; 0 means the whole head.
  EXPECT_EQ(cuda_checks::rope(dev(kB, {10, 4, 64}), dev(kI, {10}), RopeParams{10000, 1, 16}, "rope_forward").rotary_dims,
            16);
  EXPECT_EQ(cuda_checks::rope(dev(kB, {10, 4, 64}), dev(kI, {10}), RopeParams{}, "rope_forward").rotary_dims, 64);
  expect_error([] { cuda_checks::rope(dev(kB, {10, 4, 64}), dev(kI, {10}), RopeParams{10000, 1, 15}, "rope_forward"); },
               "rotary_dims 15 must be even and in [2, 64]");
  expect_error([] { cuda_checks::rope(dev(kB, {10, 4, 64}), dev(kI, {10}), RopeParams{10000, 1, 66}, "rope_backward"); },
               "rope_backward: rotary_dims 66");
}

TEST(CudaOpChecks, MatrixProducts) {
  const auto l = op_checks::linear_forward(kCuda, dev(kB, {6, 5}), dev(kB, {6, 3}), dev(kB, {5, 3}));
  EXPECT_EQ(l.rows, 6);
  EXPECT_EQ(l.in, 3);
  EXPECT_EQ(l.out, 5);
  expect_error([] { op_checks::linear_forward(kCuda, dev(kB, {6, 5}), dev(kB, {6, 3}), dev(kF, {5, 3})); }, "`w`");
  expect_error([] { op_checks::linear_backward(kCuda, Tensor(), dev(kB, {5, 3}), dev(kB, {6, 5}), dev(kB, {6, 3}),
                                               dev(kB, {5, 3})); },
               "`dw` has dtype bf16, expected f32");
  const auto lo = op_checks::lora_forward(kCuda, dev(kB, {6, 5}), dev(kB, {6, 2}), dev(kB, {6, 3}), dev(kB, {6, 3}),
                                          dev(kB, {5, 3}), dev(kB, {2, 3}), dev(kB, {5, 2}));
  EXPECT_EQ(lo.rank, 2);
  expect_error([] {
    op_checks::lora_backward(kCuda, Tensor(), Tensor(), Tensor(), dev(kF, {2, 3}), dev(kF, {5, 2}), dev(kB, {6, 2}),
                             dev(kB, {6, 5}), dev(kB, {6, 3}), dev(kB, {6, 3}), dev(kB, {6, 2}), dev(kB, {5, 3}),
                             dev(kB, {2, 3}), dev(kB, {5, 2}));
  }, "needs dx or dx_lora");
  expect_error([] {
    op_checks::lora_backward(kCuda, dev(kB, {6, 3}), Tensor(), Tensor(), dev(kB, {2, 3}), dev(kF, {5, 2}),
                             dev(kB, {6, 2}), dev(kB, {6, 5}), dev(kB, {6, 3}), dev(kB, {6, 3}), dev(kB, {6, 2}),
                             dev(kB, {5, 3}), dev(kB, {2, 3}), dev(kB, {5, 2}));
  }, "`da` has dtype bf16");
}

TEST(CudaOpChecks, AttentionShapesMasksAndPaths) {
  const AttentionPath autop = AttentionPath::Auto;
  auto fwd = [&](int64_t B, int64_t L, int64_t Lk, int64_t H, int64_t Hkv, int64_t Dh, AttentionMask m,
                 AttentionPath forced = AttentionPath::Auto, uintptr_t addr = 0x100000) {
    return cuda_checks::attention_forward(dev(kB, {B, L, H, Dh}, addr), dev(kF, {B, H, L}), dev(kB, {B, L, H, Dh}, addr),
                                          dev(kB, {B, Lk, Hkv, Dh}, addr), dev(kB, {B, Lk, Hkv, Dh}, addr), m, forced);
  };
  const auto s = fwd(2, 100, 100, 8, 2, 128, AttentionMask::s2(25, false));
  EXPECT_EQ(s.path, AttentionPath::TensorCore);
  EXPECT_EQ(s.kv_heads, 2);
  EXPECT_EQ(fwd(1, 1, 5000, 8, 8, 128, AttentionMask::causal()).path, AttentionPath::Decode);
  EXPECT_EQ(fwd(1, 7, 7, 2, 1, 4, AttentionMask::causal()).path, AttentionPath::Generic);
  EXPECT_EQ(fwd(1, 64, 64, 2, 1, 64, AttentionMask::causal(), AttentionPath::Generic).path, AttentionPath::Generic);
  expect_error([&] { fwd(1, 64, 64, 2, 1, 96, AttentionMask::causal(), AttentionPath::TensorCore); },
               "forced attention path `tensor-core`");
  expect_error([&] { fwd(1, 64, 32, 2, 1, 64, AttentionMask::causal()); }, "queries are the last positions");
  expect_error([&] { fwd(1, 64, 65, 2, 2, 64, AttentionMask::s2(16, false)); }, "as many queries as keys");
  expect_error([&] { fwd(1, 64, 64, 3, 3, 64, AttentionMask::s2(16, false)); }, "even number of query heads");
  expect_error([&] { fwd(1, 64, 64, 4, 3, 64, AttentionMask::causal()); }, "multiple of KV heads");
  expect_error([&] { fwd(1, 64, 64, 0, 1, 64, AttentionMask::causal()); }, "multiple of KV heads");  // no query heads
  expect_error([&] { fwd(1, 60, 60, 4, 2, 64, AttentionMask::s2(16, true)); }, "roll variant");
  expect_error([&] { fwd(1, 64, 64, 4, 2, 512, AttentionMask::causal()); }, "head dimension 512");
  expect_error([&] { fwd(1, 64, 64, 4, 2, 64, AttentionMask::causal(), autop, 0x100008); }, "16-byte aligned");
  EXPECT_NO_THROW(fwd(1, 64, 64, 4, 2, 4, AttentionMask::causal(), autop, 0x100002));  // generic: any alignment
  // Backward: decode is a forward-only path, so it falls back; lse must be f32.
  auto bwd = [&](int64_t L, int64_t Lk, int64_t Dh, AttentionPath forced, DType lse_type) {
    const int64_t B = 1, H = 4, Hkv = 2;
    return cuda_checks::attention_backward(dev(kB, {B, L, H, Dh}), dev(kB, {B, Lk, Hkv, Dh}), dev(kB, {B, Lk, Hkv, Dh}),
                                           dev(kB, {B, L, H, Dh}), dev(kB, {B, L, H, Dh}), dev(kB, {B, Lk, Hkv, Dh}),
                                           dev(kB, {B, Lk, Hkv, Dh}), dev(kB, {B, L, H, Dh}), dev(lse_type, {B, H, L}),
                                           AttentionMask::causal(), forced);
  };
  EXPECT_EQ(bwd(1, 4096, 128, autop, kF).path, AttentionPath::TensorCore);
  EXPECT_EQ(bwd(3, 3, 32, autop, kF).path, AttentionPath::Generic);
  expect_error([&] { bwd(3, 3, 32, AttentionPath::Decode, kF); }, "cannot run this call");
  expect_error([&] { bwd(3, 3, 32, autop, kB); }, "`lse` has dtype bf16");
}

TEST(CudaOpChecks, AdamW) {
  const AdamWStep st{1e-3, 0.9, 0.999, 1e-8, 0, 1};
  EXPECT_EQ(cuda_checks::adamw_step(dev(kB, {4, 3}), dev(kF, {4, 3}), dev(kF, {4, 3}), dev(kF, {4, 3}),
                                    dev(kF, {4, 3}), st),
            12);
  EXPECT_NO_THROW(cuda_checks::adamw_step(dev(kF, {12}), Tensor(), dev(kF, {12}), dev(kF, {12}), dev(kF, {12}), st));
  expect_error([&] { cuda_checks::adamw_step(dev(kB, {12}), Tensor(), dev(kF, {12}), dev(kF, {12}), dev(kF, {12}), st); },
               "f32 master");
  expect_error([&] { cuda_checks::adamw_step(dev(kB, {12}), dev(kB, {12}), dev(kF, {12}), dev(kF, {12}), dev(kF, {12}), st); },
               "`master` has dtype bf16");
  AdamWStep bad = st;
  bad.step = 0;
  expect_error([&] { cuda_checks::adamw_step(dev(kF, {12}), Tensor(), dev(kF, {12}), dev(kF, {12}), dev(kF, {12}), bad); },
               "step must be >= 1");
}

// ---- memory report, device support ---------------------------------------------------------------------------------
TEST(MemoryReport, FitsOrSaysWhatItNeedsAndWhatWouldFit) {
  const size_t GiB = size_t(1) << 30;
  DeviceMemoryNeeds n;
  n.frozen_weights = 13 * GiB;
  n.trainable_weights = GiB / 4;
  n.gradients = GiB / 2;
  n.optimizer = 2 * GiB;
  n.activations = 70 * GiB;
  n.workspace = GiB / 8;
  DeviceMemorySettings s;
  s.batch = 1;
  s.seq_len = 16384;
  s.activations_by_checkpoint_layers = {70 * GiB, 70 * GiB, 50 * GiB, 30 * GiB, 7 * GiB};  // k = 0..4 of 4 layers
  EXPECT_EQ(device_memory_shortfall(n, s, 200 * GiB, 200 * GiB, "big"), "");
  const std::string msg = device_memory_shortfall(n, s, 79 * GiB, 80 * GiB, "NVIDIA H100 80GB HBM3 (device 0)");
  EXPECT_NE(msg.find("needs 85.9 GiB"), std::string::npos) << msg;
  EXPECT_NE(msg.find("79.0 GiB free of 80.0 GiB"), std::string::npos) << msg;
  EXPECT_NE(msg.find("activations 70.0 GiB"), std::string::npos) << msg;
  // room = 79 − 0.5 − 15.875 = 62.625 GiB: the fewest recomputed layers that fit are 2 (50 GiB).
  EXPECT_NE(msg.find("would fit: --gradient_checkpointing 2 (2 of 4 layers checkpointed, activations 50.0 GiB)"),
            std::string::npos)
      << msg;
  // Without checkpointing: 62.625 GiB at 70 GiB / 16384 tokens → 14657 tokens.
  EXPECT_NE(msg.find("--model_max_length 14657 or less"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--gradient_checkpointing true"), std::string::npos) << msg;  // all layers fit too: not the fewest
  // Already recomputing 2 layers (activations 50 GiB) on a smaller card: room 79 − 40 − 15.875 − 0.5 = 22.625 GiB →
  // 3 layers (30 GiB) do not fit, all 4 (7 GiB) do.
  DeviceMemoryNeeds two = n;
  two.activations = 50 * GiB;
  s.checkpoint_layers = 2;
  const std::string all = device_memory_shortfall(two, s, 79 * GiB - 40 * GiB, 80 * GiB, "card");
  EXPECT_NE(all.find("would fit: --gradient_checkpointing true (all 4 layers checkpointed, activations 7.0 GiB)"),
            std::string::npos)
      << all;
  // Not even every layer recomputed fits (room 6.125 GiB < 7 GiB): a shorter length with all recomputed,
  // 6.125 / 7 · 16384 = 14336 tokens.
  const std::string none = device_memory_shortfall(two, s, 79 * GiB - 56.5 * GiB, 80 * GiB, "card");
  EXPECT_EQ(none.find("layers checkpointed"), std::string::npos) << none;
  EXPECT_NE(none.find("--gradient_checkpointing true with --model_max_length 14336 or less"), std::string::npos)
      << none;
  // Recomputing every layer already, or no per-k plans known: no checkpointing advice.
  s.checkpoint_layers = 4;
  EXPECT_EQ(device_memory_shortfall(n, s, 79 * GiB, 80 * GiB, "card").find("--gradient_checkpointing"),
            std::string::npos);
  s.checkpoint_layers = 0;
  s.activations_by_checkpoint_layers.clear();
  EXPECT_EQ(device_memory_shortfall(n, s, 79 * GiB, 80 * GiB, "card").find("--gradient_checkpointing"),
            std::string::npos);
  n.frozen_weights = 138 * GiB;
  const std::string too_big = device_memory_shortfall(n, s, 79 * GiB, 80 * GiB, "card");
  EXPECT_NE(too_big.find("weights and optimizer state alone"), std::string::npos) << too_big;
  EXPECT_EQ(format_gib(GiB + GiB / 2), "1.5 GiB");
  const std::string alloc = device_allocation_failure(3 * GiB, GiB, 80 * GiB, 70 * GiB, "card", "an arena");
  EXPECT_NE(alloc.find("needs 3.0 GiB for an arena, 1.0 GiB free of 80.0 GiB on card (70.0 GiB already allocated"),
            std::string::npos)
      << alloc;
}

TEST(CudaDeviceSupport, SassCompatibilityRules) {
  const std::vector<int> built = {80, 90};
  std::string why;
  EXPECT_TRUE(cuda_device_supported(8, 0, built, &why));
  EXPECT_TRUE(cuda_device_supported(8, 6, built, &why));  // sm_80 SASS runs on 8.x
  EXPECT_TRUE(cuda_device_supported(8, 9, built, &why));
  EXPECT_TRUE(cuda_device_supported(9, 0, built, &why));
  EXPECT_FALSE(cuda_device_supported(7, 5, built, &why));
  EXPECT_NE(why.find("below 8.0"), std::string::npos) << why;
  EXPECT_FALSE(cuda_device_supported(10, 0, built, &why));
  EXPECT_NE(why.find("CUDA_ARCH=\"100\""), std::string::npos) << why;
  EXPECT_FALSE(cuda_device_supported(9, 0, {80}, &why));
}

TEST(CudaDeviceSupport, ProbeListsTheCompiledArchitectures) {
  const CudaProbe probe = probe_cuda();
#ifdef LONGLORA_WITH_CUDA
  EXPECT_FALSE(probe.built_archs.empty()) << "nvcc defines __CUDA_ARCH_LIST__";
  for (int a : probe.built_archs) EXPECT_GE(a, 80);
#else
  EXPECT_TRUE(probe.built_archs.empty());
#endif
}

// ---- the convert op (added to the seam for f32 masters) on the CPU ---------------------------------------------------
TEST(BackendConvert, CpuConvertsBetweenFloatingTypes) {
  CpuBackend<float> cpu;
  std::vector<float> src = {1.0f, -2.5f, 3.14159265f, 1e-3f, 65504.0f, NAN};
  std::vector<uint16_t> bf(src.size()), half(src.size());
  std::vector<double> wide(src.size());
  std::vector<float> back(src.size());
  cpu.convert(Tensor(bf.data(), DType::BF16, Device::CPU, {6}), test::view(src, {2, 3}));
  cpu.convert(Tensor(half.data(), DType::F16, Device::CPU, {6}), test::view(src, {6}));
  cpu.convert(test::view(wide, {6}), test::view(src, {6}));
  cpu.convert(test::view(back, {6}), Tensor(bf.data(), DType::BF16, Device::CPU, {6}));
  for (size_t i = 0; i + 1 < src.size(); ++i) {
    EXPECT_EQ(bf[i], f32_to_bf16(src[i]));
    EXPECT_EQ(half[i], f32_to_f16(src[i]));
    EXPECT_EQ(wide[i], double(src[i]));
    EXPECT_EQ(back[i], bf16_to_f32(bf[i]));
  }
  EXPECT_TRUE(std::isnan(back[5]));
  std::vector<float> small(5);
  EXPECT_THROW(cpu.convert(test::view(small, {5}), test::view(src, {6})), Error);
}


// ---- benchmark FLOP conventions ------------------------------------------------------------------------------------
TEST(PerfModel, FlashAttentionConventionAndMaskedPairs) {
  // benchmark_flash_attention.py: 4·B·L²·H·Dh, ÷2 causal, ×3.5 forward+backward.
  EXPECT_DOUBLE_EQ(perf::flash_attention_flops(2, 8192, 16, 128, true, perf::Pass::Forward),
                   4.0 * 2 * 8192.0 * 8192 * 16 * 128 / 2);
  EXPECT_DOUBLE_EQ(perf::flash_attention_flops(1, 1024, 1, 64, false, perf::Pass::ForwardBackward),
                   3.5 * 4.0 * 1024 * 1024 * 64);
  // Exact pair counts: causal = L(L+1)/2 per head; S2 at ratio 1/4 ≈ a quarter of that.
  const double causal = perf::masked_attention_flops(1, 1024, 2, 64, AttentionMask::causal(), perf::Pass::Forward);
  EXPECT_DOUBLE_EQ(causal, 4.0 * 64 * 2 * (1024.0 * 1025 / 2));
  const double s2 = perf::masked_attention_flops(1, 1024, 2, 64, AttentionMask::s2(256, false), perf::Pass::Forward);
  // Unshifted heads: 4 segments of G(G+1)/2 pairs (~0.251 of causal); shifted heads: two half segments at the ends
  // (~0.220). Averaged over the two halves ~0.235.
  EXPECT_GT(s2 / causal, 0.22);
  EXPECT_LT(s2 / causal, 0.26);
}

TEST(PerfModel, LlamaTwo7BLoraFlopsPerTokenMatchThePerfNotes) {
  ModelConfig c;
  c.hidden_size = 4096, c.intermediate_size = 11008, c.num_attention_heads = 32, c.num_key_value_heads = 32;
  c.num_hidden_layers = 32, c.vocab_size = 32000;
  EXPECT_NEAR(perf::matmul_params(c) / 1e9, 6.607, 0.001);
  // perf.md §4.3: LoRA + S2 (model) 28.0 GF/token at 8k; with recompute (hardware) 41.8; full causal LoRA 32.9.
  EXPECT_NEAR(perf::lora_model_flops_per_token(c, 8192, 2048) / 1e9, 28.0, 0.05);
  EXPECT_NEAR(perf::lora_hardware_flops_per_token(c, 8192, 2048, true) / 1e9, 41.8, 0.05);
  EXPECT_NEAR(perf::lora_model_flops_per_token(c, 8192, 0) / 1e9, 32.9, 0.05);
  EXPECT_NEAR(perf::lora_model_flops_per_token(c, 100000, 25000) / 1e9, 46.1, 0.05);
  EXPECT_EQ(perf::bf16_peak_tflops("NVIDIA H100 80GB HBM3"), 989.4);
  EXPECT_EQ(perf::bf16_peak_tflops("NVIDIA A100-SXM4-80GB"), 312.0);
  EXPECT_EQ(perf::bf16_peak_tflops("NVIDIA GeForce RTX 4090"), 0.0);
}

TEST(AttentionWgmmaChoice, ParsesAutoNoneAndPassLists) {
  using W = AttentionWgmma;
  EXPECT_EQ(parse_attention_wgmma("", true, "X"), (W{true, true, true}));
  EXPECT_EQ(parse_attention_wgmma("auto", true, "X"), (W{true, true, true}));
  EXPECT_EQ(parse_attention_wgmma("auto", false, "X"), W{});  // auto never asks for what cannot run
  EXPECT_EQ(parse_attention_wgmma("", false, "X"), W{});
  EXPECT_EQ(parse_attention_wgmma("none", true, "X"), W{});
  EXPECT_EQ(parse_attention_wgmma("none", false, "X"), W{});
  EXPECT_EQ(parse_attention_wgmma("fwd", true, "X"), (W{true, false, false}));
  EXPECT_EQ(parse_attention_wgmma("dq,dkdv", true, "X"), (W{false, true, true}));
  EXPECT_EQ(parse_attention_wgmma("dkdv,fwd", true, "X"), (W{true, false, true}));
  EXPECT_EQ(to_string(W{}), "none");
  EXPECT_EQ(to_string(W{true, false, true}), "fwd,dkdv");
  for (const W w : {W{}, W{true, false, false}, W{false, true, true}, W{true, true, true}})
    EXPECT_EQ(parse_attention_wgmma(to_string(w), true, "X"), w) << to_string(w);
}

TEST(AttentionWgmmaChoice, RejectsUnknownItemsAndPassesThatCannotRun) {
  auto error_of = [](const std::string& spec, bool available) {
    try {
      parse_attention_wgmma(spec, available, "LONGLORA_ATTENTION_WGMMA");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  for (const char* bad : {"fwd,", "mma", "wgmma", "fwd;dq", "FWD", ",dq"}) {
    const std::string e = error_of(bad, true);
    EXPECT_NE(e.find("LONGLORA_ATTENTION_WGMMA"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("fwd, dq, dkdv"), std::string::npos) << bad << ": " << e;
  }
  const std::string e = error_of("dq", false);
  EXPECT_NE(e.find("compute capability 9.0"), std::string::npos) << e;
}

}  // namespace
}  // namespace ll
