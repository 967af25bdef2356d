// Every op's backward against central finite differences in double precision (cpu-f64 backend),
// on random inputs and several shapes, GQA and sizes that are not powers of two included.
#include <gtest/gtest.h>

#include "cpu/cpu_backend.h"
#include "test_util.h"

namespace ll {
namespace {

using test::dot;
using test::expect_gradient;
using test::random_vector;
using test::view;
using Vec = std::vector<double>;

CpuBackend<double> cpu64;

TEST(OpGradients, Embedding) {
  Rng rng(1);
  const int64_t V = 11, D = 5, T = 9;
  Vec table = random_vector(rng, V * D), out(T * D), R = random_vector(rng, T * D);
  std::vector<int32_t> ids = {3, 0, 10, 3, 7, 3, 1, 10, 5};  // repeats exercise the scatter-add
  auto loss = [&] {
    cpu64.embedding_forward(view(out, {T, D}), view(ids, {T}), view(table, {V, D}));
    return dot(out, R);
  };
  Vec dtable(V * D, 0.0);
  cpu64.embedding_backward(view(dtable, {V, D}), view(ids, {T}), view(R, {T, D}));
  expect_gradient(loss, table, dtable, "embedding dtable");
  // Gradients accumulate: a second backward doubles them.
  Vec twice = dtable;
  cpu64.embedding_backward(view(twice, {V, D}), view(ids, {T}), view(R, {T, D}));
  for (size_t i = 0; i < dtable.size(); ++i) EXPECT_NEAR(twice[i], 2 * dtable[i], 1e-12);
}

TEST(OpGradients, EmbeddingRejectsOutOfRangeIds) {
  Vec table(4 * 2), out(2 * 2);
  std::vector<int32_t> ids = {1, 4};
  EXPECT_THROW(cpu64.embedding_forward(view(out, {2, 2}), view(ids, {2}), view(table, {4, 2})), Error);
}

class RmsNormGrad : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};
TEST_P(RmsNormGrad, MatchesFiniteDifferences) {
  const auto [T, D] = GetParam();
  Rng rng(2 + T * 31 + D);
  Vec x = random_vector(rng, T * D), w = random_vector(rng, D), out(T * D), rstd(T), R = random_vector(rng, T * D);
  const double eps = 1e-5;
  auto loss = [&] {
    cpu64.rmsnorm_forward(view(out, {T, D}), view(rstd, {T}), view(x, {T, D}), view(w, {D}), eps);
    return dot(out, R);
  };
  loss();
  Vec dx(T * D, 0.0), dw(D, 0.0);
  cpu64.rmsnorm_backward(view(dx, {T, D}), view(dw, {D}), view(R, {T, D}), view(x, {T, D}), view(w, {D}),
                         view(rstd, {T}), false);
  expect_gradient(loss, x, dx, "rmsnorm dx");
  expect_gradient(loss, w, dw, "rmsnorm dw");
  // accumulate_dx adds onto what is there.
  Vec acc(T * D, 1.0);
  cpu64.rmsnorm_backward(view(acc, {T, D}), Tensor(), view(R, {T, D}), view(x, {T, D}), view(w, {D}),
                         view(rstd, {T}), true);
  for (size_t i = 0; i < acc.size(); ++i) EXPECT_NEAR(acc[i], 1.0 + dx[i], 1e-12);
}
INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormGrad, ::testing::Values(std::make_pair(1, 8), std::make_pair(5, 7),
                                                                   std::make_pair(3, 130)));

// ---- LayerNorm (GPT-NeoX) -------------------------------------------------------------------------------------------
class LayerNormGrad : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};
TEST_P(LayerNormGrad, MatchesFiniteDifferences) {
  const auto [T, D] = GetParam();
  Rng rng(12 + T * 31 + D);
  Vec x = random_vector(rng, T * D), w = random_vector(rng, D), b = random_vector(rng, D), out(T * D), mean(T),
      rstd(T), R = random_vector(rng, T * D);
  for (int64_t i = 0; i < T * D; ++i) x[i] += 0.7 * double(i % 3);  // rows with a non-zero mean
  const double eps = 1e-5;
  auto loss = [&] {
    cpu64.layernorm_forward(view(out, {T, D}), view(mean, {T}), view(rstd, {T}), view(x, {T, D}), view(w, {D}),
                            view(b, {D}), eps);
    return dot(out, R);
  };
  loss();
  Vec dx(T * D, 0.0), dw(D, 0.0), db(D, 0.0);
  cpu64.layernorm_backward(view(dx, {T, D}), view(dw, {D}), view(db, {D}), view(R, {T, D}), view(x, {T, D}),
                           view(w, {D}), view(mean, {T}), view(rstd, {T}), false);
  expect_gradient(loss, x, dx, "layernorm dx");
  expect_gradient(loss, w, dw, "layernorm dw");
  expect_gradient(loss, b, db, "layernorm db");
  // accumulate_dx adds onto what is there; parameter gradients accumulate; empty ones are skipped.
  Vec acc(T * D, 1.0), dw2 = dw, db2(D, 0.5);
  cpu64.layernorm_backward(view(acc, {T, D}), Tensor(), view(db2, {D}), view(R, {T, D}), view(x, {T, D}),
                           view(w, {D}), view(mean, {T}), view(rstd, {T}), true);
  for (size_t i = 0; i < acc.size(); ++i) EXPECT_NEAR(acc[i], 1.0 + dx[i], 1e-12);
  for (int64_t d = 0; d < D; ++d) EXPECT_NEAR(db2[d], 0.5 + db[d], 1e-12);
  cpu64.layernorm_backward(Tensor(), view(dw2, {D}), Tensor(), view(R, {T, D}), view(x, {T, D}), view(w, {D}),
                           view(mean, {T}), view(rstd, {T}), false);
  for (int64_t d = 0; d < D; ++d) EXPECT_NEAR(dw2[d], 2 * dw[d], 1e-12);
}
INSTANTIATE_TEST_SUITE_P(Shapes, LayerNormGrad, ::testing::Values(std::make_pair(1, 8), std::make_pair(5, 7),
                                                                     std::make_pair(3, 130)));

TEST(LayerNormForward, IsTorchLayerNormBiasedVarianceEpsInsideTheRoot) {
  // torch.nn.LayerNorm written out: mean, the biased variance (divided by D, not D − 1), (x − mean)/sqrt(var + eps).
  const int64_t T = 3, D = 5;
  const double eps = 0.25;  // large, so eps outside the root (or added to rstd) would show
  Rng rng(13);
  Vec x = random_vector(rng, T * D, 2.0), w = random_vector(rng, D), b = random_vector(rng, D), out(T * D), mean(T),
      rstd(T);
  cpu64.layernorm_forward(view(out, {T, D}), view(mean, {T}), view(rstd, {T}), view(x, {T, D}), view(w, {D}),
                          view(b, {D}), eps);
  for (int64_t t = 0; t < T; ++t) {
    double m = 0, var = 0;
    for (int64_t d = 0; d < D; ++d) m += x[t * D + d] / double(D);
    for (int64_t d = 0; d < D; ++d) var += (x[t * D + d] - m) * (x[t * D + d] - m) / double(D);
    EXPECT_NEAR(mean[t], m, 1e-14);
    EXPECT_NEAR(rstd[t], 1.0 / std::sqrt(var + eps), 1e-14);
    for (int64_t d = 0; d < D; ++d)
      EXPECT_NEAR(out[t * D + d], (x[t * D + d] - m) / std::sqrt(var + eps) * w[d] + b[d], 1e-13) << t << "," << d;
  }
}

TEST(LayerNormForward, LargeRowMeansDoNotCancelTheVarianceInFloat) {
  // Rows offset by 1e4 normalise like the unshifted rows on the f32 backend: its statistics must not lose a unit
  // variance to the offset (E[x²] − E[x]² accumulated in f32 would lose every digit of it).
  CpuBackend<float> cpu32;
  const int64_t T = 4, D = 64;
  Rng rng(14);
  std::vector<float> x(T * D), shifted(T * D), w(D, 1.0f), b(D, 0.0f), out(T * D), out_s(T * D), mean(T), rstd(T),
      rstd_s(T);
  for (int64_t i = 0; i < T * D; ++i) x[i] = float(rng.normal()), shifted[i] = x[i] + 1e4f;
  cpu32.layernorm_forward(view(out, {T, D}), view(mean, {T}), view(rstd, {T}), view(x, {T, D}), view(w, {D}),
                          view(b, {D}), 1e-5);
  cpu32.layernorm_forward(view(out_s, {T, D}), view(mean, {T}), view(rstd_s, {T}), view(shifted, {T, D}), view(w, {D}),
                          view(b, {D}), 1e-5);
  for (int64_t t = 0; t < T; ++t) EXPECT_NEAR(rstd_s[t], rstd[t], 2e-3 * rstd[t]) << t;
  for (int64_t i = 0; i < T * D; ++i) EXPECT_NEAR(out_s[i], out[i], 5e-3) << i;
}

// ---- bias (GPT-NeoX's linear layers) -------------------------------------------------------------------------------
TEST(OpGradients, BiasedLinearAndBiasedLora) {
  // y = x·Wᵀ + b, and the LoRA form y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ + b: linear_forward / lora_forward then add_bias; the
  // backward adds bias_backward for db. All against finite differences.
  Rng rng(15);
  const int64_t T = 7, K = 6, N = 9, r = 2;
  const double scale = 3.0;
  Vec x = random_vector(rng, T * K), w = random_vector(rng, N * K), bias = random_vector(rng, N), y(T * N);
  Vec a = random_vector(rng, r * K), bl = random_vector(rng, N * r), xa(T * r), R = random_vector(rng, T * N);
  for (bool lora : {false, true}) {
    auto loss = [&] {
      if (lora)
        cpu64.lora_forward(view(y, {T, N}), view(xa, {T, r}), view(x, {T, K}), view(x, {T, K}), view(w, {N, K}),
                           view(a, {r, K}), view(bl, {N, r}), scale);
      else
        cpu64.linear_forward(view(y, {T, N}), view(x, {T, K}), view(w, {N, K}), false);
      cpu64.add_bias(view(y, {T, N}), view(bias, {N}));
      return dot(y, R);
    };
    loss();
    Vec dx(T * K), dw(N * K, 0.0), dbias(N, 0.0), da(r * K, 0.0), dbl(N * r, 0.0), dxa(T * r);
    cpu64.bias_backward(view(dbias, {N}), view(R, {T, N}));
    if (lora)
      cpu64.lora_backward(view(dx, {T, K}), Tensor(), view(dw, {N, K}), view(da, {r, K}), view(dbl, {N, r}),
                          view(dxa, {T, r}), view(R, {T, N}), view(x, {T, K}), view(x, {T, K}), view(xa, {T, r}),
                          view(w, {N, K}), view(a, {r, K}), view(bl, {N, r}), scale, false);
    else
      cpu64.linear_backward(view(dx, {T, K}), view(dw, {N, K}), view(R, {T, N}), view(x, {T, K}), view(w, {N, K}),
                            false);
    const std::string what = lora ? "biased lora " : "biased linear ";
    expect_gradient(loss, bias, dbias, what + "db");
    expect_gradient(loss, x, dx, what + "dx");
    expect_gradient(loss, w, dw, what + "dW");
    if (lora) {
      expect_gradient(loss, a, da, what + "dA");
      expect_gradient(loss, bl, dbl, what + "dB");
    }
  }
}

TEST(BiasOps, AddBiasBroadcastsOverRowsAndBiasBackwardAccumulatesColumnSums) {
  const int64_t T = 3, N = 70;  // two 64-column blocks, the second partial
  Rng rng(16);
  Vec y = random_vector(rng, T * N), y0 = y, b = random_vector(rng, N), dy = random_vector(rng, T * N);
  cpu64.add_bias(view(y, {T, N}), view(b, {N}));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) EXPECT_EQ(y[t * N + n], y0[t * N + n] + b[n]);
  Vec db(N, 1.0);
  cpu64.bias_backward(view(db, {N}), view(dy, {T, N}));
  for (int64_t n = 0; n < N; ++n) EXPECT_NEAR(db[n], 1.0 + dy[n] + dy[N + n] + dy[2 * N + n], 1e-14) << n;
  cpu64.bias_backward(Tensor(), view(dy, {T, N}));  // frozen bias: nothing to do, no error
  Vec short_b(N - 1);
  EXPECT_THROW(cpu64.add_bias(view(y, {T, N}), view(short_b, {N - 1})), Error);
}

class LinearGrad : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};
TEST_P(LinearGrad, MatchesFiniteDifferences) {
  const auto [T, K, N] = GetParam();
  Rng rng(3 + T + K * 7 + N * 13);
  Vec x = random_vector(rng, T * K), w = random_vector(rng, N * K), y(T * N), R = random_vector(rng, T * N);
  auto loss = [&] {
    cpu64.linear_forward(view(y, {T, N}), view(x, {T, K}), view(w, {N, K}), false);
    return dot(y, R);
  };
  Vec dx(T * K, 0.0), dw(N * K, 0.0);
  cpu64.linear_backward(view(dx, {T, K}), view(dw, {N, K}), view(R, {T, N}), view(x, {T, K}), view(w, {N, K}), false);
  expect_gradient(loss, x, dx, "linear dx");
  expect_gradient(loss, w, dw, "linear dw");
  // Frozen weight: no dW is computed, dx is unchanged.
  Vec dx2(T * K, 0.0);
  cpu64.linear_backward(view(dx2, {T, K}), Tensor(), view(R, {T, N}), view(x, {T, K}), view(w, {N, K}), false);
  EXPECT_EQ(dx2, dx);
  // accumulate flag on the forward adds x·Wᵀ to y.
  Vec y2(T * N, 0.5);
  cpu64.linear_forward(view(y2, {T, N}), view(x, {T, K}), view(w, {N, K}), true);
  loss();
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y2[i], y[i] + 0.5, 1e-12);
}
INSTANTIATE_TEST_SUITE_P(Shapes, LinearGrad,
                         ::testing::Values(std::make_tuple(1, 3, 2), std::make_tuple(7, 5, 9),
                                           std::make_tuple(12, 16, 6)));

class LoraGrad : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t>> {};
TEST_P(LoraGrad, MatchesFiniteDifferences) {
  const auto [T, K, N, r] = GetParam();
  Rng rng(4 + T + K + N + r);
  const double scale = 16.0 / double(r);
  Vec x = random_vector(rng, T * K), w = random_vector(rng, N * K), a = random_vector(rng, r * K);
  Vec b = random_vector(rng, N * r), y(T * N), xa(T * r), R = random_vector(rng, T * N);
  auto loss = [&] {
    cpu64.lora_forward(view(y, {T, N}), view(xa, {T, r}), view(x, {T, K}), view(x, {T, K}), view(w, {N, K}),
                       view(a, {r, K}), view(b, {N, r}), scale);
    return dot(y, R);
  };
  // The forward equals x·Wᵀ + s·(x·Aᵀ)·Bᵀ written out by hand.
  loss();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0;
      for (int64_t k = 0; k < K; ++k) ref += x[t * K + k] * w[n * K + k];
      for (int64_t j = 0; j < r; ++j) {
        double xaj = 0;
        for (int64_t k = 0; k < K; ++k) xaj += x[t * K + k] * a[j * K + k];
        ref += scale * xaj * b[n * r + j];
      }
      ASSERT_NEAR(y[t * N + n], ref, 1e-10);
    }
  Vec dx(T * K), dw(N * K, 0.0), da(r * K, 0.0), db(N * r, 0.0), dxa(T * r);
  cpu64.lora_backward(view(dx, {T, K}), Tensor(), view(dw, {N, K}), view(da, {r, K}), view(db, {N, r}),
                      view(dxa, {T, r}), view(R, {T, N}), view(x, {T, K}), view(x, {T, K}), view(xa, {T, r}),
                      view(w, {N, K}), view(a, {r, K}), view(b, {N, r}), scale, false);
  expect_gradient(loss, x, dx, "lora dx");
  expect_gradient(loss, a, da, "lora dA");
  expect_gradient(loss, b, db, "lora dB");
  expect_gradient(loss, w, dw, "lora dW (when W trains)");
}
INSTANTIATE_TEST_SUITE_P(Shapes, LoraGrad,
                         ::testing::Values(std::make_tuple(5, 6, 7, 2), std::make_tuple(9, 12, 4, 3),
                                           std::make_tuple(1, 8, 8, 8)));

TEST(OpGradients, LoraWithDropoutOnTheAdapterInput) {
  // y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ: the model composes dropout, lora_backward's dx_lora output and the
  // dropout backward; check that composition against finite differences.
  Rng rng(41);
  const int64_t T = 6, K = 10, N = 5, r = 3;
  const double scale = 2.0, p = 0.3;
  const uint64_t seed = 1234;
  Vec x = random_vector(rng, T * K), w = random_vector(rng, N * K), a = random_vector(rng, r * K);
  Vec b = random_vector(rng, N * r), y(T * N), xa(T * r), xl(T * K), R = random_vector(rng, T * N);
  auto loss = [&] {
    cpu64.dropout(view(xl, {T, K}), view(x, {T, K}), p, seed);
    cpu64.lora_forward(view(y, {T, N}), view(xa, {T, r}), view(x, {T, K}), view(xl, {T, K}), view(w, {N, K}),
                       view(a, {r, K}), view(b, {N, r}), scale);
    return dot(y, R);
  };
  loss();
  Vec dx(T * K), dxl(T * K), da(r * K, 0.0), db(N * r, 0.0), dxa(T * r);
  cpu64.lora_backward(view(dx, {T, K}), view(dxl, {T, K}), Tensor(), view(da, {r, K}), view(db, {N, r}),
                      view(dxa, {T, r}), view(R, {T, N}), view(x, {T, K}), view(xl, {T, K}), view(xa, {T, r}),
                      view(w, {N, K}), view(a, {r, K}), view(b, {N, r}), scale, false);
  cpu64.dropout(view(dxl, {T, K}), view(dxl, {T, K}), p, seed);
  cpu64.add(view(dx, {T, K}), view(dx, {T, K}), view(dxl, {T, K}));
  expect_gradient(loss, x, dx, "lora+dropout dx");
  expect_gradient(loss, a, da, "lora+dropout dA");
  expect_gradient(loss, b, db, "lora+dropout dB");
}

TEST(Dropout, MaskIsCounterBasedScaledAndSelfAdjoint) {
  Rng rng(42);
  const int64_t n = 20000;
  const double p = 0.25;
  Vec x(n, 1.0), out(n), out2(n), other(n);
  cpu64.dropout(view(out, {n}), view(x, {n}), p, 7);
  cpu64.dropout(view(out2, {n}), view(x, {n}), p, 7);
  cpu64.dropout(view(other, {n}), view(x, {n}), p, 8);
  EXPECT_EQ(out, out2) << "same seed, same mask";
  EXPECT_NE(out, other) << "another seed draws another mask";
  int64_t kept = 0;
  for (double v : out) {
    EXPECT_TRUE(v == 0.0 || std::abs(v - 1.0 / (1.0 - p)) < 1e-15) << v;
    kept += v != 0.0;
  }
  EXPECT_NEAR(double(kept) / double(n), 1.0 - p, 0.015);
  // <dropout(u), v> = <u, dropout(v)>: the op is its own backward.
  Vec u = random_vector(rng, n), v = random_vector(rng, n), du(n), dv(n);
  cpu64.dropout(view(du, {n}), view(u, {n}), p, 9);
  cpu64.dropout(view(dv, {n}), view(v, {n}), p, 9);
  EXPECT_NEAR(dot(du, v), dot(u, dv), 1e-9);
  Vec zero_p(n);
  cpu64.dropout(view(zero_p, {n}), view(u, {n}), 0.0, 9);
  EXPECT_EQ(zero_p, u);
  EXPECT_THROW(cpu64.dropout(view(out, {n}), view(x, {n}), 1.0, 1), Error);
}

class RopeGrad : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, double>> {};
TEST_P(RopeGrad, MatchesFiniteDifferences) {
  const auto [T, heads, Dh, factor] = GetParam();
  Rng rng(5 + T + heads + Dh);
  Vec x = random_vector(rng, T * heads * Dh), y, R = random_vector(rng, T * heads * Dh);
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = int32_t((t * 37) % 101);  // arbitrary, unsorted positions
  const RopeParams p{10000.0, factor};
  auto loss = [&] {
    y = x;
    cpu64.rope_forward(view(y, {T, heads, Dh}), view(pos, {T}), p);
    return dot(y, R);
  };
  Vec dx = R;
  cpu64.rope_backward(view(dx, {T, heads, Dh}), view(pos, {T}), p);
  expect_gradient(loss, x, dx, "rope dx");
  // Forward then backward is the identity (rotation matrices are orthogonal).
  Vec round = x;
  cpu64.rope_forward(view(round, {T, heads, Dh}), view(pos, {T}), p);
  cpu64.rope_backward(view(round, {T, heads, Dh}), view(pos, {T}), p);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(round[i], x[i], 1e-12);
}
INSTANTIATE_TEST_SUITE_P(Shapes, RopeGrad,
                         ::testing::Values(std::make_tuple(5, 3, 4, 1.0), std::make_tuple(7, 2, 6, 2.0),
                                           std::make_tuple(3, 1, 10, 25.0)));

TEST(RopeForward, RotateHalfLayoutAndInterpolatedPositions) {
  // One head, Dh = 4: pairs (x0, x2) and (x1, x3) rotate by angles pos/factor·θ^0 and pos/factor·θ^(-1/2).
  const double theta = 10000.0, factor = 4.0;
  Vec x = {1.0, 2.0, 3.0, 4.0};
  std::vector<int32_t> pos = {6};
  cpu64.rope_forward(view(x, {1, 1, 4}), view(pos, {1}), RopeParams{theta, factor});
  const double a0 = 6.0 / factor, a1 = 6.0 / factor * std::pow(theta, -0.5);
  EXPECT_NEAR(x[0], 1 * std::cos(a0) - 3 * std::sin(a0), 1e-12);
  EXPECT_NEAR(x[2], 3 * std::cos(a0) + 1 * std::sin(a0), 1e-12);
  EXPECT_NEAR(x[1], 2 * std::cos(a1) - 4 * std::sin(a1), 1e-12);
  EXPECT_NEAR(x[3], 4 * std::cos(a1) + 2 * std::sin(a1), 1e-12);
}

// ---- partial rotary (GPT-NeoX: rotary_pct of each head rotates) ------------------------------------------------------
class PartialRopeGrad : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t, double>> {};
TEST_P(PartialRopeGrad, MatchesFiniteDifferencesAndPassesTheRestThrough) {
  const auto [T, heads, Dh, R, factor] = GetParam();
  Rng rng(18 + T + heads + Dh + R);
  Vec x = random_vector(rng, T * heads * Dh), y, G = random_vector(rng, T * heads * Dh);
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = int32_t((t * 37) % 101);
  const RopeParams p{10000.0, factor, R};
  auto loss = [&] {
    y = x;
    cpu64.rope_forward(view(y, {T, heads, Dh}), view(pos, {T}), p);
    return dot(y, G);
  };
  loss();
  for (int64_t th = 0; th < T * heads; ++th)
    for (int64_t d = R; d < Dh; ++d) ASSERT_EQ(y[th * Dh + d], x[th * Dh + d]) << "dim " << d << " must pass through";
  Vec dx = G;
  cpu64.rope_backward(view(dx, {T, heads, Dh}), view(pos, {T}), p);
  for (int64_t th = 0; th < T * heads; ++th)
    for (int64_t d = R; d < Dh; ++d) ASSERT_EQ(dx[th * Dh + d], G[th * Dh + d]) << "backward, dim " << d;
  expect_gradient(loss, x, dx, "partial rope dx");
}
INSTANTIATE_TEST_SUITE_P(Shapes, PartialRopeGrad,
                         ::testing::Values(std::make_tuple(5, 3, 8, 2, 1.0), std::make_tuple(7, 2, 10, 4, 2.0),
                                           std::make_tuple(3, 2, 64, 16, 4.0), std::make_tuple(4, 1, 7, 6, 1.0)));

TEST(RopeForward, PartialRotaryRotatesHalvesInsideTheSliceWithItsOwnFrequencies) {
  // Dh = 6, R = 4: pairs (x0, x2) and (x1, x3) rotate by (pos/factor)·θ^0 and (pos/factor)·θ^(−2/4) — frequencies
  // of R, not of Dh — and x4, x5 are untouched.
  const double theta = 10000.0, factor = 2.0;
  Vec x = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0};
  std::vector<int32_t> pos = {6};
  cpu64.rope_forward(view(x, {1, 1, 6}), view(pos, {1}), RopeParams{theta, factor, 4});
  const double a0 = 6.0 / factor, a1 = 6.0 / factor * std::pow(theta, -0.5);
  EXPECT_NEAR(x[0], 1 * std::cos(a0) - 3 * std::sin(a0), 1e-12);
  EXPECT_NEAR(x[2], 3 * std::cos(a0) + 1 * std::sin(a0), 1e-12);
  EXPECT_NEAR(x[1], 2 * std::cos(a1) - 4 * std::sin(a1), 1e-12);
  EXPECT_NEAR(x[3], 4 * std::cos(a1) + 2 * std::sin(a1), 1e-12);
  EXPECT_EQ(x[4], 5.0);
  EXPECT_EQ(x[5], 6.0);
}

TEST(RopeForward, RotaryDimsEqualToTheHeadIsTheDefaultBitForBit) {
  // rotary_dims = Dh and the default 0 (every Llama call) run the same arithmetic, in f32 and f64.
  CpuBackend<float> cpu32;
  const int64_t T = 9, H = 3, Dh = 16;
  Rng rng(19);
  std::vector<float> a(T * H * Dh), b;
  for (float& v : a) v = float(rng.normal());
  b = a;
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = int32_t(t * 113 % 4096);
  cpu32.rope_forward(view(a, {T, H, Dh}), view(pos, {T}), RopeParams{5e5, 4.0});
  cpu32.rope_forward(view(b, {T, H, Dh}), view(pos, {T}), RopeParams{5e5, 4.0, Dh});
  EXPECT_EQ(a, b);
  cpu32.rope_backward(view(a, {T, H, Dh}), view(pos, {T}), RopeParams{5e5, 4.0});
  cpu32.rope_backward(view(b, {T, H, Dh}), view(pos, {T}), RopeParams{5e5, 4.0, Dh});
  EXPECT_EQ(a, b);
}

TEST(RopeForward, ReusedAngleTableFollowsEveryChangeOfPositionsAndParameters) {
  // CpuBackend keeps the last cos/sin table: a backend that has rotated other positions, factors, thetas, rotary
  // widths or Llama-3 frequency rules before must give what a fresh backend gives, bit for bit.
  const int64_t T = 7, H = 2, Dh = 8;
  Rng rng(23);
  std::vector<float> x0(T * H * Dh);
  for (float& v : x0) v = float(rng.normal());
  std::vector<int32_t> pos(T), shifted(T), shorter(T - 2);
  for (int64_t t = 0; t < T; ++t) pos[t] = int32_t(t), shifted[t] = int32_t(t + 3);
  for (int64_t t = 0; t < T - 2; ++t) shorter[t] = int32_t(t);
  const RopeParams params[] = {{1e4, 1.0},
                               {1e4, 2.0},
                               {5e5, 2.0},
                               {5e5, 2.0, 4},
                               {5e5, 2.0, 0, {8.0, 1, 4, 16}},
                               {5e5, 2.0, 0, {4.0, 1, 4, 16}},
                               {5e5, 2.0, 0, {4.0, 2, 4, 16}},
                               {5e5, 2.0, 0, {4.0, 2, 8, 16}},
                               {5e5, 2.0, 0, {4.0, 2, 8, 32}},
                               {5e5, 2.0}};
  CpuBackend<float> reused;
  for (std::vector<int32_t>* p : {&pos, &shifted, &shorter, &pos})
    for (const RopeParams& rp : params)
      for (bool backward : {false, true}) {
        const int64_t rows = int64_t(p->size());
        std::vector<float> a(x0.begin(), x0.begin() + rows * H * Dh), b = a;
        CpuBackend<float> fresh;
        if (backward) {
          reused.rope_backward(view(a, {rows, H, Dh}), view(*p, {rows}), rp);
          fresh.rope_backward(view(b, {rows, H, Dh}), view(*p, {rows}), rp);
        } else {
          reused.rope_forward(view(a, {rows, H, Dh}), view(*p, {rows}), rp);
          fresh.rope_forward(view(b, {rows, H, Dh}), view(*p, {rows}), rp);
        }
        ASSERT_EQ(a, b) << "rows " << rows << ", theta " << rp.theta << ", factor " << rp.factor << ", rotary "
                        << rp.rotary_dims << ", " << describe_rope_llama3(rp.llama3)
                        << (backward ? ", backward" : ", forward");
      }
}

TEST(RopeErrors, RotaryDimsMustBeEvenAndWithinTheHead) {
  Vec x(2 * 8);
  std::vector<int32_t> pos = {0, 1};
  for (int64_t bad : {3, 10, -2}) {
    try {
      cpu64.rope_forward(view(x, {2, 1, 8}), view(pos, {2}), RopeParams{10000.0, 1.0, bad});
      FAIL() << "rotary_dims " << bad << " must be refused";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rotary_dims " + std::to_string(bad)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("[2, 8]"), std::string::npos) << e.what();
    }
  }
  Vec odd(2 * 7);  // an odd head is fine when only an even slice rotates
  EXPECT_NO_THROW(cpu64.rope_forward(view(odd, {2, 1, 7}), view(pos, {2}), RopeParams{10000.0, 1.0, 6}));
  EXPECT_THROW(cpu64.rope_forward(view(odd, {2, 1, 7}), view(pos, {2}), RopeParams{}), Error);
}

struct AttnCase {
  friend void PrintTo(const AttnCase& c, std::ostream* os) { *os << c.label; }
  int64_t B, L, H, Hkv, Dh;
  AttentionMask mask;
  const char* label;
};
class AttentionGrad : public ::testing::TestWithParam<AttnCase> {};
TEST_P(AttentionGrad, MatchesFiniteDifferences) {
  const AttnCase c = GetParam();
  Rng rng(6 + c.L * 3 + c.H);
  const int64_t nq = c.B * c.L * c.H * c.Dh, nk = c.B * c.L * c.Hkv * c.Dh;
  Vec q = random_vector(rng, nq), k = random_vector(rng, nk), v = random_vector(rng, nk);
  Vec out(nq), lse(c.B * c.H * c.L), R = random_vector(rng, nq);
  auto loss = [&] {
    cpu64.attention_forward(view(out, {c.B, c.L, c.H, c.Dh}), view(lse, {c.B, c.H, c.L}),
                            view(q, {c.B, c.L, c.H, c.Dh}), view(k, {c.B, c.L, c.Hkv, c.Dh}),
                            view(v, {c.B, c.L, c.Hkv, c.Dh}), c.mask);
    return dot(out, R);
  };
  loss();
  Vec dq(nq), dk(nk), dv(nk);
  cpu64.attention_backward(view(dq, {c.B, c.L, c.H, c.Dh}), view(dk, {c.B, c.L, c.Hkv, c.Dh}),
                           view(dv, {c.B, c.L, c.Hkv, c.Dh}), view(R, {c.B, c.L, c.H, c.Dh}),
                           view(q, {c.B, c.L, c.H, c.Dh}), view(k, {c.B, c.L, c.Hkv, c.Dh}),
                           view(v, {c.B, c.L, c.Hkv, c.Dh}), view(out, {c.B, c.L, c.H, c.Dh}),
                           view(lse, {c.B, c.H, c.L}), c.mask);
  expect_gradient(loss, q, dq, std::string(c.label) + " dq");
  expect_gradient(loss, k, dk, std::string(c.label) + " dk");
  expect_gradient(loss, v, dv, std::string(c.label) + " dv");
}
INSTANTIATE_TEST_SUITE_P(
    Masks, AttentionGrad,
    ::testing::Values(AttnCase{2, 7, 3, 3, 4, AttentionMask::causal(), "causal_mha_odd_len"},
                      AttnCase{1, 9, 6, 2, 6, AttentionMask::causal(), "causal_gqa3"},
                      AttnCase{2, 12, 4, 2, 4, AttentionMask::s2(3, false), "s2_gqa_odd_group"},
                      AttnCase{1, 16, 4, 4, 8, AttentionMask::s2(4, false), "s2_mha"},
                      AttnCase{1, 10, 4, 2, 4, AttentionMask::s2(4, false), "s2_clipped_segments"},
                      AttnCase{2, 16, 4, 2, 4, AttentionMask::s2(4, true), "s2_roll_gqa"},
                      AttnCase{1, 24, 8, 4, 2, AttentionMask::s2(6, true), "s2_roll_mqa_pairs"},
                      // Sliding windows (Mistral): alone with GQA, narrower and wider than the S2 groups, and with
                      // the roll variant (whose wrap-around the window removes).
                      AttnCase{2, 11, 4, 2, 4, AttentionMask::causal().windowed(3), "window3_gqa"},
                      AttnCase{1, 9, 3, 3, 4, AttentionMask::causal().windowed(2), "window2_mha"},
                      AttnCase{1, 16, 4, 2, 4, AttentionMask::s2(8, false).windowed(3), "s2_window_inside_groups"},
                      AttnCase{1, 12, 4, 2, 4, AttentionMask::s2(3, false).windowed(5), "s2_window_wider_than_group"},
                      AttnCase{2, 16, 4, 2, 4, AttentionMask::s2(8, true).windowed(5), "s2_roll_window"}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(AttentionForward, MatchesDenseSoftmaxWithExplicitMask) {
  // Dense reference: full L×L scores, the mask from attends(), softmax, weighted sum, GQA by index.
  const int64_t B = 2, L = 12, H = 4, Hkv = 2, Dh = 5;
  for (const AttentionMask mask : {AttentionMask::causal(), AttentionMask::s2(4, false), AttentionMask::s2(4, true),
                                   AttentionMask::causal().windowed(3), AttentionMask::s2(6, false).windowed(4)}) {
    Rng rng(7);
    Vec q = random_vector(rng, B * L * H * Dh), k = random_vector(rng, B * L * Hkv * Dh);
    Vec v = random_vector(rng, B * L * Hkv * Dh), out(B * L * H * Dh), lse(B * H * L);
    cpu64.attention_forward(view(out, {B, L, H, Dh}), view(lse, {B, H, L}), view(q, {B, L, H, Dh}),
                            view(k, {B, L, Hkv, Dh}), view(v, {B, L, Hkv, Dh}), mask);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < L; ++i) {
          const int64_t hk = h / (H / Hkv);
          std::vector<double> s(L, -INFINITY);
          double mx = -INFINITY;
          for (int64_t j = 0; j < L; ++j) {
            if (!attends(mask, h, H, L, i, j)) continue;
            double d = 0;
            for (int64_t e = 0; e < Dh; ++e) d += q[((b * L + i) * H + h) * Dh + e] * k[((b * L + j) * Hkv + hk) * Dh + e];
            s[j] = d / std::sqrt(double(Dh));
            mx = std::max(mx, s[j]);
          }
          double z = 0;
          for (int64_t j = 0; j < L; ++j) z += std::exp(s[j] - mx);
          EXPECT_NEAR(lse[(b * H + h) * L + i], mx + std::log(z), 1e-12);
          for (int64_t e = 0; e < Dh; ++e) {
            double o = 0;
            for (int64_t j = 0; j < L; ++j) o += std::exp(s[j] - mx) / z * v[((b * L + j) * Hkv + hk) * Dh + e];
            ASSERT_NEAR(out[((b * L + i) * H + h) * Dh + e], o, 1e-12) << "mask kind " << int(mask.kind);
          }
        }
  }
}

TEST(AttentionForward, QueriesAsTheLastRowsOfLongerKeysMatchTheFullComputation) {
  // Decoding from a KV cache: 3 queries against 10 keys equal rows 7..9 of full causal attention over 10.
  const int64_t B = 1, L = 10, C = 3, H = 6, Hkv = 2, Dh = 4;
  Rng rng(77);
  Vec q = random_vector(rng, B * L * H * Dh), k = random_vector(rng, B * L * Hkv * Dh);
  Vec v = random_vector(rng, B * L * Hkv * Dh), out(B * L * H * Dh), lse(B * H * L);
  cpu64.attention_forward(view(out, {B, L, H, Dh}), view(lse, {B, H, L}), view(q, {B, L, H, Dh}),
                          view(k, {B, L, Hkv, Dh}), view(v, {B, L, Hkv, Dh}), AttentionMask::causal());
  Vec q_last(q.end() - C * H * Dh, q.end()), out_last(C * H * Dh), lse_last(H * C);
  cpu64.attention_forward(view(out_last, {B, C, H, Dh}), view(lse_last, {B, H, C}), view(q_last, {B, C, H, Dh}),
                          view(k, {B, L, Hkv, Dh}), view(v, {B, L, Hkv, Dh}), AttentionMask::causal());
  for (int64_t i = 0; i < C * H * Dh; ++i) EXPECT_NEAR(out_last[i], out[(L - C) * H * Dh + i], 1e-14);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < C; ++i) EXPECT_NEAR(lse_last[h * C + i], lse[h * L + L - C + i], 1e-14);
  // Its backward against finite differences, keys included.
  Vec R = random_vector(rng, C * H * Dh);
  auto loss = [&] {
    cpu64.attention_forward(view(out_last, {B, C, H, Dh}), view(lse_last, {B, H, C}), view(q_last, {B, C, H, Dh}),
                            view(k, {B, L, Hkv, Dh}), view(v, {B, L, Hkv, Dh}), AttentionMask::causal());
    return dot(out_last, R);
  };
  loss();
  Vec dq(C * H * Dh), dk(k.size()), dv(v.size());
  cpu64.attention_backward(view(dq, {B, C, H, Dh}), view(dk, {B, L, Hkv, Dh}), view(dv, {B, L, Hkv, Dh}),
                           view(R, {B, C, H, Dh}), view(q_last, {B, C, H, Dh}), view(k, {B, L, Hkv, Dh}),
                           view(v, {B, L, Hkv, Dh}), view(out_last, {B, C, H, Dh}), view(lse_last, {B, H, C}),
                           AttentionMask::causal());
  expect_gradient(loss, q_last, dq, "offset dq");
  expect_gradient(loss, k, dk, "offset dk");
  expect_gradient(loss, v, dv, "offset dv");
  // S2 is a training mask: it refuses fewer queries than keys.
  EXPECT_THROW(cpu64.attention_forward(view(out_last, {B, C, H, Dh}), view(lse_last, {B, H, C}),
                                       view(q_last, {B, C, H, Dh}), view(k, {B, L, Hkv, Dh}), view(v, {B, L, Hkv, Dh}),
                                       AttentionMask::s2(2, false)),
               Error);
}

TEST(OpGradients, SwiGLU) {
  Rng rng(8);
  const int64_t T = 6, F = 13;
  Vec g = random_vector(rng, T * F, 2.0), u = random_vector(rng, T * F), out(T * F), R = random_vector(rng, T * F);
  auto loss = [&] {
    cpu64.swiglu_forward(view(out, {T, F}), view(g, {T, F}), view(u, {T, F}));
    return dot(out, R);
  };
  Vec dg(T * F), du(T * F);
  cpu64.swiglu_backward(view(dg, {T, F}), view(du, {T, F}), view(R, {T, F}), view(g, {T, F}), view(u, {T, F}));
  expect_gradient(loss, g, dg, "swiglu dgate");
  expect_gradient(loss, u, du, "swiglu dup");
}

TEST(OpGradients, GeluExact) {
  Rng rng(17);
  const int64_t T = 6, F = 13;
  Vec x = random_vector(rng, T * F, 2.0), out(T * F), R = random_vector(rng, T * F);
  auto loss = [&] {
    cpu64.gelu_forward(view(out, {T, F}), view(x, {T, F}));
    return dot(out, R);
  };
  Vec dx(T * F);
  cpu64.gelu_backward(view(dx, {T, F}), view(R, {T, F}), view(x, {T, F}));
  expect_gradient(loss, x, dx, "gelu dx");
  // In place: out may alias x, dx may alias dout.
  loss();
  Vec inplace = x, dinplace = R;
  cpu64.gelu_forward(view(inplace, {T, F}), view(inplace, {T, F}));
  cpu64.gelu_backward(view(dinplace, {T, F}), view(dinplace, {T, F}), view(x, {T, F}));
  EXPECT_EQ(inplace, out);
  EXPECT_EQ(dinplace, dx);
}

TEST(GeluForward, IsTheErfFormNotTheTanhApproximation) {
  // x·Φ(x) at known points; the tanh form ("gelu_new") gives 0.841192 at 1, off by 1.5e-4.
  Vec x = {-3.0, -1.0, 0.0, 0.5, 1.0, 2.0}, out(6);
  cpu64.gelu_forward(view(out, {6}), view(x, {6}));
  const double want[] = {-0.00404969409489031, -0.15865525393145707, 0.0, 0.34573123063700656, 0.8413447460685429,
                         1.9544997361036416};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(out[i], want[i], 1e-15) << "x = " << x[i];
}

TEST(OpGradients, ResidualAddIsIdentityInBothInputs) {
  Rng rng(9);
  const int64_t T = 4, D = 7;
  Vec a = random_vector(rng, T * D), b = random_vector(rng, T * D), out(T * D), R = random_vector(rng, T * D);
  auto loss = [&] {
    cpu64.add(view(out, {T, D}), view(a, {T, D}), view(b, {T, D}));
    return dot(out, R);
  };
  expect_gradient(loss, a, R, "add da");
  expect_gradient(loss, b, R, "add db");
  // In place (out aliases a).
  Vec a2 = a;
  cpu64.add(view(a2, {T, D}), view(a2, {T, D}), view(b, {T, D}));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_DOUBLE_EQ(a2[i], a[i] + b[i]);
}

TEST(OpGradients, CrossEntropyWithIgnoredRowsAndScale) {
  Rng rng(10);
  const int64_t R = 7, V = 23;
  const double scale = 0.37;
  Vec logits = random_vector(rng, R * V, 3.0), losses(R);
  std::vector<int32_t> targets = {4, -100, 22, 0, -100, 9, 9};
  auto loss = [&] {
    Vec tmp = logits;
    cpu64.cross_entropy(view(tmp, {R, V}), view(losses, {R}), view(targets, {R}), 0.0, false);
    double s = 0;
    for (double l : losses) s += scale * l;
    return s;
  };
  loss();
  for (int64_t r = 0; r < R; ++r) {
    if (targets[r] == -100) {
      EXPECT_EQ(losses[r], 0.0);
      continue;
    }
    double z = 0;
    for (int64_t j = 0; j < V; ++j) z += std::exp(logits[r * V + j]);
    EXPECT_NEAR(losses[r], std::log(z) - logits[r * V + targets[r]], 1e-12);
  }
  Vec grad = logits;
  cpu64.cross_entropy(view(grad, {R, V}), view(losses, {R}), view(targets, {R}), scale, true);
  expect_gradient(loss, logits, grad, "cross-entropy dlogits");
  for (int64_t j = 0; j < V; ++j) EXPECT_EQ(grad[1 * V + j], 0.0) << "ignored rows get a zero gradient";
}

TEST(OpErrors, ShapeAndDtypeMismatchesNameTheArgument) {
  Vec x(12), w(6), out(12), rstd(4);
  try {
    cpu64.rmsnorm_forward(view(out, {4, 3}), view(rstd, {4}), view(x, {4, 3}), view(w, {6}), 1e-5);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("`w`"), std::string::npos) << e.what();
  }
  std::vector<float> xf(12);
  Vec w3(3);
  EXPECT_THROW(cpu64.rmsnorm_forward(view(out, {4, 3}), view(rstd, {4}), view(xf, {4, 3}), view(w3, {3}), 1e-5),
               Error);
  // LayerNorm names its bias and refuses a negative eps; GELU names a mismatched argument.
  Vec b(6), mean(4);
  try {
    cpu64.layernorm_forward(view(out, {4, 3}), view(mean, {4}), view(rstd, {4}), view(x, {4, 3}), view(w3, {3}),
                            view(b, {6}), 1e-5);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layernorm_forward: argument `b`"), std::string::npos) << e.what();
  }
  Vec b3(3);
  EXPECT_THROW(cpu64.layernorm_forward(view(out, {4, 3}), view(mean, {4}), view(rstd, {4}), view(x, {4, 3}),
                                       view(w3, {3}), view(b3, {3}), -1.0),
               Error);
  Vec g13(13);
  try {
    cpu64.gelu_backward(view(out, {4, 3}), view(g13, {13}), view(x, {4, 3}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gelu_backward: argument `dout`"), std::string::npos) << e.what();
  }
  std::vector<int32_t> bad_targets = {0, 5};
  Vec logits(2 * 5), losses(2);
  EXPECT_THROW(cpu64.cross_entropy(view(logits, {2, 5}), view(losses, {2}), view(bad_targets, {2}), 1.0, true), Error);
}

}  // namespace
}  // namespace ll
