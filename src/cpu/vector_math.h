// Float math the compiler can vectorise: the CPU backend's element-wise loops (SwiGLU, the attention softmax) spent
// most of their time in scalar calls to the C library's expf. Every function here is a fixed sequence of IEEE
// additions, multiplications and integer bit operations, and the Makefile compiles with -ffp-contract=off (without
// it the AVX-512 clone would fuse multiply-adds the baseline one cannot), so a vector lane, a scalar remainder and
// every instruction set compute bit-identical results: a run does not depend on the machine's vector width.
#pragma once
#include <cstdint>
#include <cstring>

// Compiles a function once per instruction set (AVX-512, AVX2, baseline) and picks one at load time. Use it on
// non-template functions holding the vectorisable loop; an OpenMP parallel loop calls them on spans (GCC outlines a
// parallel region's body before it clones, so a clone attribute on the function holding the region would not reach
// the loop).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LL_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LL_VECTOR_CLONES
#endif

namespace ll::cpu {

// e^x in float, within 1 ulp of the correctly rounded value for x in [-87.3, 88.7] (tests/test_vector_math.cpp
// checks every 127th float there against double-precision exp); +inf above ~88.72, sub-normal results below ~-87.3
// (a few units of the smallest sub-normal off), 0 below ~-103.3, NaN for NaN. Method: x = n·ln2 + r with |r| ≤ ln2/2 (Cody-Waite: ln2 split in a 9-bit high part so
// n·ln2_hi is exact), e^r by its Taylor series to r⁷ (truncation ≤ 5e-9 relative on that interval), and 2ⁿ applied as
// two exact power-of-two factors so that n may reach ±150 without building an out-of-range exponent.
inline float exp_f32(float x) {
  const float lo = -110.0f, hi = 89.0f;  // beyond these the result is 0 or +inf anyway; keeps n in range
  const bool nan = x != x;               // computed from 0 (a NaN would make the integer conversion undefined)
  const float xc = nan ? 0.0f : (x < lo ? lo : (x > hi ? hi : x));
  const float round_shift = 12582912.0f;             // 1.5·2²³: adding it rounds to an integer
  const float t = xc * 1.44269504088896341f + round_shift;
  const float n = t - round_shift;
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t ni = int32_t(n);  // |ni| ≤ 159: exact
  const int32_t half = ni / 2;     // both biased exponents below are in [47, 191]
  const uint32_t bits1 = uint32_t(half + 127) << 23, bits2 = uint32_t(ni - half + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &bits1, sizeof s1);
  std::memcpy(&s2, &bits2, sizeof s2);
  return nan ? x : p * s1 * s2;
}

// σ(g) = 1 / (1 + e^−g).
inline float sigmoid_f32(float g) { return 1.0f / (1.0f + exp_f32(-g)); }

}  // namespace ll::cpu
