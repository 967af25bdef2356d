// The CPU backend's vectorised float math (src/cpu/vector_math.h, row_kernels.h): accuracy against double precision,
// the edge values, and that a vector lane computes the same bits as the scalar code (so results do not depend on
// the instruction set the clone dispatcher picks, nor on where a span ends).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/row_kernels.h"
#include "cpu/vector_math.h"

namespace {

using ll::cpu::exp_f32;
using AttentionMaskForTest = ll::AttentionMask;

// Position of a float on the ordered line of floats: the distance between two is their ulp distance.
int64_t float_order(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i < 0 ? -int64_t(i & 0x7fffffff) : int64_t(i);
}

// Every 127th float of [lo, hi] (lo < 0 < hi), walked by magnitude bits on each side of zero.
float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}
std::vector<float> sweep(float lo, float hi) {
  std::vector<float> xs;
  for (uint32_t m = bits_of(-lo);; m -= 127) {
    xs.push_back(-from_bits(m));
    if (m < 127) break;
  }
  for (uint32_t m = 0; from_bits(m) <= hi; m += 127) xs.push_back(from_bits(m));
  return xs;
}

TEST(VectorMath, ExpIsWithinOneUlpOfTheRoundedExactValue) {
  const std::vector<float> xs = sweep(-87.3f, 88.7f);
  ASSERT_GT(xs.size(), size_t(14'000'000));
  std::vector<float> got(xs.size());
  // Through the vectorised row kernel: e^(x − 0) over the whole sweep.
  got = xs;
  ll::cpu::exp_minus(got.data(), int64_t(got.size()), 0.0f);
  int64_t worst = 0;
  float worst_x = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const float exact = float(std::exp(double(xs[i])));
    const int64_t ulps = std::llabs(float_order(got[i]) - float_order(exact));
    if (ulps > worst) worst = ulps, worst_x = xs[i];
  }
  EXPECT_LE(worst, 1) << "at x = " << worst_x;
}

TEST(VectorMath, ExpEdgeValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(exp_f32(-inf), 0.0f);
  EXPECT_EQ(exp_f32(inf), inf);
  EXPECT_TRUE(std::isnan(exp_f32(std::nanf(""))));
  EXPECT_EQ(exp_f32(0.0f), 1.0f);
  EXPECT_EQ(exp_f32(-0.0f), 1.0f);
  EXPECT_EQ(exp_f32(1000.0f), inf);
  EXPECT_EQ(exp_f32(88.73f), inf);                       // e^88.73 > FLT_MAX
  EXPECT_EQ(exp_f32(88.72f), float(std::exp(double(88.72f))));  // the largest finite results
  EXPECT_EQ(exp_f32(-1000.0f), 0.0f);
  EXPECT_EQ(exp_f32(-104.0f), 0.0f);
  // Sub-normal results: within a few units of the smallest sub-normal, never negative.
  for (float x = -103.0f; x < -87.4f; x += 0.37f) {
    const double exact = std::exp(double(x));
    EXPECT_GE(exp_f32(x), 0.0f);
    EXPECT_NEAR(double(exp_f32(x)), exact, 4 * 1.4013e-45 + 1e-6 * exact) << x;
  }
}

TEST(VectorMath, VectorLanesEqualTheScalarCode) {
  // Inputs of every kind, at every alignment and remainder length of the vector loop.
  std::vector<float> xs = {2.0f, -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity(),
                           std::nanf(""), -200.0f, 200.0f};  // inside every span below, in different lanes
  for (int i = 0; i < 5000; ++i) xs.push_back(float(std::sin(i * 0.731) * 95.0));
  for (size_t offset : {size_t(0), size_t(1), size_t(3), size_t(7)})
    for (size_t n : {size_t(1), size_t(5), size_t(16), size_t(17), size_t(4095)}) {
      std::vector<float> v(xs.begin() + long(offset), xs.begin() + long(offset + n));
      ll::cpu::exp_minus(v.data(), int64_t(n), 1.5f);
      for (size_t i = 0; i < n; ++i) {
        volatile float x = xs[offset + i] - 1.5f;  // scalar, not vectorised
        ASSERT_EQ(float_order(v[i]), float_order(exp_f32(x))) << "offset " << offset << " n " << n << " i " << i;
      }
    }
}

TEST(VectorMath, SumsUseEightFixedLanes) {
  // The documented order: lane l sums elements l, l+8, …; then ((0+1)+(2+3))+((4+5)+(6+7)). Values chosen so that
  // another order rounds differently.
  for (int64_t n : {1, 7, 8, 9, 100, 1001}) {
    const size_t len = static_cast<size_t>(n);
    std::vector<float> x(len), y(len), z(len);
    for (int64_t i = 0; i < n; ++i) {
      x[size_t(i)] = float((i % 3 == 0 ? 1e8 : 1.0) * std::cos(double(i)));
      y[size_t(i)] = float(1.0 + 1e-3 * double(i));
      z[size_t(i)] = float(0.5 - 1e-4 * double(i));
    }
    double lanes[8] = {}, dlanes[8] = {}, tlanes[8] = {};
    for (int64_t i = 0; i < n; ++i) {
      lanes[i % 8] += double(x[size_t(i)]);
      dlanes[i % 8] += double(x[size_t(i)]) * double(y[size_t(i)]);
      tlanes[i % 8] += double(x[size_t(i)]) * double(y[size_t(i)]) * double(z[size_t(i)]);
    }
    const auto tree = [](const double* a) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); };
    ll::cpu::LaneSums sums;  // in two pieces, the second starting at index 3
    ll::cpu::add_to_lanes(sums, x.data(), std::min<int64_t>(n, 3), 0);
    if (n > 3) ll::cpu::add_to_lanes(sums, x.data() + 3, n - 3, 3);
    EXPECT_EQ(sums.total(), tree(lanes)) << n;
    EXPECT_EQ(ll::cpu::dot_in_double(x.data(), y.data(), n), tree(dlanes)) << n;
    EXPECT_EQ(ll::cpu::dot_in_double(x.data(), y.data(), z.data(), n), tree(tlanes)) << n;
    float mx = x[0];
    for (float v : x) mx = std::max(mx, v);
    EXPECT_EQ(ll::cpu::max_of(x.data(), n), mx) << n;
  }
}

// A query's attention output must not depend on which other queries share its block: the KV-cache path (a decode
// step, a prefill after a reused prefix) computes the same bits as the full forward. (The softmax sum's lanes are
// keyed by key position, so even its double rounding cannot depend on where the block's key range starts; masked
// keys add exact zeros.)
TEST(VectorMath, AttentionRowsDoNotDependOnTheirBlock) {
  const int64_t L = 200, H = 4, Hkv = 2, Dh = 16;
  std::vector<float> q(size_t(L * H * Dh)), k(size_t(L * Hkv * Dh)), v(k.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = float(24.0 * std::sin(0.37 * double(i)));  // widely spread scores
  for (size_t i = 0; i < k.size(); ++i) k[i] = float(std::cos(0.11 * double(i))), v[i] = float(std::sin(0.05 * double(i)));
  for (const auto& mask : {AttentionMaskForTest::causal(), AttentionMaskForTest::causal().windowed(37)}) {
    std::vector<float> full(q.size()), lse(size_t(H * L));
    ll::cpu::attention_forward(full.data(), lse.data(), q.data(), k.data(), v.data(), {1, L, H, Hkv, Dh, L}, mask);
    // The last `n` queries alone against all L keys, as a cached prefill (n > 1) or a decode step (n = 1) runs them.
    for (int64_t n : {1, 3, 70, 133}) {
      std::vector<float> part(size_t(n * H * Dh)), part_lse(size_t(H * n));
      ll::cpu::attention_forward(part.data(), part_lse.data(), q.data() + (L - n) * H * Dh, k.data(), v.data(),
                                 {1, n, H, Hkv, Dh, L}, mask);
      for (int64_t i = 0; i < n * H * Dh; ++i)
        ASSERT_EQ(float_order(part[size_t(i)]), float_order(full[size_t((L - n) * H * Dh + i)]))
            << "window " << mask.window << ", last " << n << " queries, element " << i;
    }
  }
}

}  // namespace
