// split_qkv / merge_qkv (backend.h), GPT-NeoX's fused query_key_value rows: the CPU reference against the layout
// written out index by index, merge as split's inverse and as its backward (the adjoint identity), argument errors.
#include <gtest/gtest.h>

#include <functional>

#include "cpu/cpu_backend.h"
#include "test_util.h"

namespace ll {
namespace {

struct Shape {
  int64_t rows, heads, head_dim;
};

// Column of qkv holding head h's part j (0 q, 1 k, 2 v), dimension d: Hugging Face's view(.., H, 3·Dh).
int64_t fused_column(const Shape& s, int64_t h, int j, int64_t d) { return h * 3 * s.head_dim + j * s.head_dim + d; }

TEST(QkvOps, SplitTakesEachHeadsQueryKeyAndValueRowsOfTheFusedProjection) {
  CpuBackend<double> be;
  Rng rng(5);
  for (const Shape s : {Shape{1, 1, 2}, Shape{3, 2, 4}, Shape{5, 4, 6}, Shape{2, 3, 32}}) {
    const int64_t width = 3 * s.heads * s.head_dim, n = s.rows * s.heads * s.head_dim;
    std::vector<double> qkv = test::random_vector(rng, s.rows * width);
    std::vector<double> parts[3] = {std::vector<double>(size_t(n)), std::vector<double>(size_t(n)),
                                    std::vector<double>(size_t(n))};
    be.split_qkv(test::view(parts[0], {s.rows, s.heads, s.head_dim}), test::view(parts[1], {s.rows, s.heads, s.head_dim}),
                 test::view(parts[2], {s.rows, s.heads, s.head_dim}), test::view(qkv, {s.rows, width}));
    for (int64_t t = 0; t < s.rows; ++t)
      for (int64_t h = 0; h < s.heads; ++h)
        for (int j = 0; j < 3; ++j)
          for (int64_t d = 0; d < s.head_dim; ++d)
            ASSERT_EQ(parts[j][size_t((t * s.heads + h) * s.head_dim + d)],
                      qkv[size_t(t * width + fused_column(s, h, j, d))])
                << "row " << t << " head " << h << " part " << j << " dim " << d;

    // merge is the inverse: it rebuilds the fused rows exactly.
    std::vector<double> merged(qkv.size(), -1.0);
    be.merge_qkv(test::view(merged, {s.rows, width}), test::view(parts[0], {s.rows, s.heads, s.head_dim}),
                 test::view(parts[1], {s.rows, s.heads, s.head_dim}), test::view(parts[2], {s.rows, s.heads, s.head_dim}));
    EXPECT_EQ(merged, qkv);
  }
}

TEST(QkvOps, MergeIsTheBackwardOfSplit) {
  // <split(x), (dq, dk, dv)> = <x, merge(dq, dk, dv)> for random x and gradients: merge is split's adjoint.
  CpuBackend<double> be;
  Rng rng(6);
  const Shape s{4, 3, 6};
  const int64_t width = 3 * s.heads * s.head_dim, n = s.rows * s.heads * s.head_dim;
  std::vector<double> x = test::random_vector(rng, s.rows * width), q(static_cast<size_t>(n)), k(static_cast<size_t>(n)), v(static_cast<size_t>(n));
  std::vector<double> dq = test::random_vector(rng, n), dk = test::random_vector(rng, n), dv = test::random_vector(rng, n);
  std::vector<double> dx(x.size());
  const auto view3 = [&](std::vector<double>& a) { return test::view(a, {s.rows, s.heads, s.head_dim}); };
  be.split_qkv(view3(q), view3(k), view3(v), test::view(x, {s.rows, width}));
  be.merge_qkv(test::view(dx, {s.rows, width}), view3(dq), view3(dk), view3(dv));
  const double lhs = test::dot(q, dq) + test::dot(k, dk) + test::dot(v, dv), rhs = test::dot(x, dx);
  EXPECT_NEAR(lhs, rhs, 1e-12 * std::abs(rhs));
  EXPECT_GT(std::abs(rhs), 1.0);
}

TEST(QkvOps, FloatAndDoubleBackendsMoveTheSameValues) {
  CpuBackend<float> be;
  Rng rng(7);
  const Shape s{3, 2, 8};
  const int64_t width = 3 * s.heads * s.head_dim, n = s.rows * s.heads * s.head_dim;
  const std::vector<double> src = test::random_vector(rng, s.rows * width);
  std::vector<float> qkv(src.begin(), src.end()), q(static_cast<size_t>(n)), k(static_cast<size_t>(n)), v(static_cast<size_t>(n)), back(qkv.size());
  const auto view3 = [&](std::vector<float>& a) { return test::view(a, {s.rows, s.heads, s.head_dim}); };
  be.split_qkv(view3(q), view3(k), view3(v), test::view(qkv, {s.rows, width}));
  be.merge_qkv(test::view(back, {s.rows, width}), view3(q), view3(k), view3(v));
  EXPECT_EQ(back, qkv);
  EXPECT_EQ(k[0], qkv[size_t(s.head_dim)]) << "head 0's key follows its query";
  EXPECT_EQ(q[size_t(s.head_dim)], qkv[size_t(3 * s.head_dim)]) << "head 1's query follows head 0's value";
}

TEST(QkvOps, ShapeErrorsNameTheOpAndTheArgument) {
  CpuBackend<float> be;
  std::vector<float> qkv(2 * 3 * 2 * 4), a(2 * 2 * 4), b(2 * 2 * 4), c(2 * 2 * 4), small(2 * 4);
  const auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  std::string msg = message([&] {
    be.split_qkv(test::view(a, {2, 2, 4}), test::view(small, {2, 1, 4}), test::view(c, {2, 2, 4}),
                 test::view(qkv, {2, 24}));
  });
  EXPECT_NE(msg.find("split_qkv"), std::string::npos) << msg;
  EXPECT_NE(msg.find("`k`"), std::string::npos) << msg;
  std::vector<float> wrong(2 * 20);
  msg = message([&] {
    be.merge_qkv(test::view(wrong, {2, 20}), test::view(a, {2, 2, 4}), test::view(b, {2, 2, 4}),
                 test::view(c, {2, 2, 4}));
  });
  EXPECT_NE(msg.find("merge_qkv"), std::string::npos) << msg;
  EXPECT_NE(msg.find("`qkv`"), std::string::npos) << msg;
}

}  // namespace
}  // namespace ll
