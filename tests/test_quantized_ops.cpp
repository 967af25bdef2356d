// Linear and LoRA ops with a frozen 4-bit weight (core/dtype.h) on the CPU reference: the forward equals the dense
// product with the dequantized weight, dx matches finite differences, and a gradient for the 4-bit weight is refused.
#include <gtest/gtest.h>

#include "core/quantize.h"
#include "cpu/cpu_backend.h"
#include "test_util.h"

namespace ll {
namespace {

using test::dot;
using test::expect_gradient;
using test::random_vector;
using test::view;
using Vec = std::vector<double>;

// A 4-bit weight [n, k] quantized from random values, and its dequantization as doubles.
struct QuantWeight {
  std::vector<uint8_t> bytes;
  Vec dense;
  Tensor tensor(DType format, int64_t n, int64_t k) { return Tensor(bytes.data(), format, Device::CPU, {n, k}); }
};

QuantWeight make_weight(DType format, int64_t n, int64_t k, uint64_t seed) {
  Rng rng(seed);
  const Vec w = random_vector(rng, n * k);
  const std::vector<float> f(w.begin(), w.end());
  QuantWeight q;
  q.bytes.resize(storage_bytes(format, n * k));
  quantize_4bit(format, f.data(), n * k, q.bytes.data());
  std::vector<float> d(size_t(n * k));
  dequantize_4bit(format, q.bytes.data(), n * k, 0, n * k, d.data());
  q.dense.assign(d.begin(), d.end());
  return q;
}

class QuantizedLinear : public ::testing::TestWithParam<DType> {};

TEST_P(QuantizedLinear, ForwardIsTheDenseProductOfTheDequantizedWeight) {
  CpuBackend<float> cpu;
  const int64_t T = 5, K = 96, N = 7;  // 672 elements: 10.5 blocks, so blocks straddle rows
  QuantWeight q = make_weight(GetParam(), N, K, 3);
  Rng rng(4);
  const Vec xd = random_vector(rng, T * K);
  std::vector<float> x(xd.begin(), xd.end()), wf(q.dense.begin(), q.dense.end()), y4(T * N), yd(T * N);
  cpu.linear_forward(view(y4, {T, N}), view(x, {T, K}), q.tensor(GetParam(), N, K), false);
  cpu.linear_forward(view(yd, {T, N}), view(x, {T, K}), view(wf, {N, K}), false);
  EXPECT_EQ(y4, yd);
  // LoRA on top of the 4-bit base: the same as on the dequantized dense base.
  const int64_t R = 3;
  const Vec ad = random_vector(rng, R * K), bd = random_vector(rng, N * R);
  std::vector<float> a(ad.begin(), ad.end()), b(bd.begin(), bd.end()), xa4(T * R), xad(T * R);
  cpu.lora_forward(view(y4, {T, N}), view(xa4, {T, R}), view(x, {T, K}), view(x, {T, K}),
                   q.tensor(GetParam(), N, K), view(a, {R, K}), view(b, {N, R}), 2.0);
  cpu.lora_forward(view(yd, {T, N}), view(xad, {T, R}), view(x, {T, K}), view(x, {T, K}), view(wf, {N, K}),
                   view(a, {R, K}), view(b, {N, R}), 2.0);
  EXPECT_EQ(y4, yd);
  EXPECT_EQ(xa4, xad);
}

TEST_P(QuantizedLinear, DxMatchesFiniteDifferences) {
  CpuBackend<double> cpu64;
  const int64_t T = 4, K = 80, N = 6, R = 2;
  QuantWeight q = make_weight(GetParam(), N, K, 5);
  Rng rng(6);
  Vec x = random_vector(rng, T * K), y(T * N), G = random_vector(rng, T * N);
  const Tensor w = q.tensor(GetParam(), N, K);
  auto loss = [&] {
    cpu64.linear_forward(view(y, {T, N}), view(x, {T, K}), w, false);
    return dot(y, G);
  };
  Vec dx(T * K, 0.0);
  cpu64.linear_backward(view(dx, {T, K}), Tensor(), view(G, {T, N}), view(x, {T, K}), w, false);
  expect_gradient(loss, x, dx, "4-bit linear dx");

  // LoRA: dx through the frozen 4-bit base and the adapter; dA, dB as usual.
  Vec a = random_vector(rng, R * K), b = random_vector(rng, N * R), xa(T * R), dxa(T * R);
  const double s = 1.5;
  auto lora_loss = [&] {
    cpu64.lora_forward(view(y, {T, N}), view(xa, {T, R}), view(x, {T, K}), view(x, {T, K}), w, view(a, {R, K}),
                       view(b, {N, R}), s);
    return dot(y, G);
  };
  lora_loss();
  Vec ldx(T * K, 0.0), da(R * K, 0.0), db(N * R, 0.0);
  cpu64.lora_backward(view(ldx, {T, K}), Tensor(), Tensor(), view(da, {R, K}), view(db, {N, R}), view(dxa, {T, R}),
                      view(G, {T, N}), view(x, {T, K}), view(x, {T, K}), view(xa, {T, R}), w, view(a, {R, K}),
                      view(b, {N, R}), s, false);
  expect_gradient(lora_loss, x, ldx, "4-bit LoRA dx");
  expect_gradient(lora_loss, a, da, "4-bit LoRA dA");
  expect_gradient(lora_loss, b, db, "4-bit LoRA dB");
}

TEST_P(QuantizedLinear, AGradientForTheFrozenWeightIsRefused) {
  CpuBackend<float> cpu;
  const int64_t T = 2, K = 64, N = 2;
  QuantWeight q = make_weight(GetParam(), N, K, 7);
  std::vector<float> x(T * K, 1.0f), dy(T * N, 1.0f), dx(T * K), dw(N * K);
  try {
    cpu.linear_backward(view(dx, {T, K}), view(dw, {N, K}), view(dy, {T, N}), view(x, {T, K}),
                        q.tensor(GetParam(), N, K), false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("frozen"), std::string::npos) << e.what();
  }
  // A 4-bit weight of the wrong logical shape ([2, 32] against inputs of 64) is named.
  std::vector<float> y(T * N);
  try {
    cpu.linear_forward(view(y, {T, N}), view(x, {T, K}), q.tensor(GetParam(), N, K / 2), false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("`w`"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizedLinear,
                         ::testing::Values(DType::NF4, DType::NF4DQ, DType::FP4, DType::FP4DQ),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           switch (i.param) {
                             case DType::NF4: return std::string("nf4");
                             case DType::NF4DQ: return std::string("nf4_double_quant");
                             case DType::FP4: return std::string("fp4");
                             default: return std::string("fp4_double_quant");
                           }
                         });

}  // namespace
}  // namespace ll
