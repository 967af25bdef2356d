// Element-wise ops: SwiGLU (out = silu(gate) ⊙ up, silu(g) = g·σ(g)), exact GELU, residual add, dropout.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cpu/kernels.h"
#include "cpu/vector_math.h"
#include "core/dropout_mask.h"

namespace ll::cpu {

namespace {

// Spans of an element-wise loop for the OpenMP threads; each span is one call of a vectorised kernel.
template <typename F>
void for_spans(int64_t n, F&& span) {
  constexpr int64_t kSpan = 4096;
  const int64_t spans = (n + kSpan - 1) / kSpan;
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < spans; ++s) span(s * kSpan, std::min(n, (s + 1) * kSpan));
}

LL_VECTOR_CLONES void swiglu_forward_span(float* out, const float* gate, const float* up, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * sigmoid_f32(gate[i]) * up[i];
}

LL_VECTOR_CLONES void swiglu_backward_span(float* dgate, float* dup, const float* dout, const float* gate,
                                           const float* up, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i], s = sigmoid_f32(g);
    dgate[i] = dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    dup[i] = dout[i] * g * s;
  }
}

}  // namespace

template <typename T>
static inline T sigmoid(T g) {
  return T(1) / (T(1) + std::exp(-g));
}

// float: vector_math.h's exp (within 1 ulp of the rounded e^x; libm's expf rounds a few inputs in a thousand the
// other way); double, the gradient-check reference: the C library's exp.
template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    for_spans(n, [&](int64_t b, int64_t e) { swiglu_forward_span(out + b, gate + b, up + b, e - b); });
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
  }
}

// d/dg silu(g) = σ(g)·(1 + g·(1 − σ(g))).
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    for_spans(n, [&](int64_t b, int64_t e) {
      swiglu_backward_span(dgate + b, dup + b, dout + b, gate + b, up + b, e - b);
    });
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T g = gate[i], s = sigmoid(g);
      dgate[i] = dout[i] * up[i] * s * (T(1) + g * (T(1) - s));
      dup[i] = dout[i] * g * s;
    }
  }
}

// GELU(x) = x·Φ(x), Φ(x) = (1 + erf(x/√2))/2; d/dx = Φ(x) + x·φ(x), φ(x) = exp(−x²/2)/√(2π). Computed in double
// (the reference for the f32 and bf16 backends), rounded once. Each element is read before it is written, so out
// may alias x and dx may alias dout.
static inline double normal_cdf(double x) { return 0.5 * (1.0 + std::erf(x * M_SQRT1_2)); }

template <typename T>
void gelu_forward(T* out, const T* x, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double v = double(x[i]);
    out[i] = T(v * normal_cdf(v));
  }
}

template <typename T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n) {
  const double inv_sqrt_2pi = 0.5 * M_2_SQRTPI * M_SQRT1_2;  // 1/√(2π)
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double v = double(x[i]);
    dx[i] = T(double(dout[i]) * (normal_cdf(v) + v * std::exp(-0.5 * v * v) * inv_sqrt_2pi));
  }
}

template <typename T>
void add(T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void dropout(T* out, const T* x, int64_t n, double p, uint64_t seed) {
  const T keep_scale = T(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = dropout_keep(seed, uint64_t(i), p) ? x[i] * keep_scale : T(0);
}

template void swiglu_forward<float>(float*, const float*, const float*, int64_t);
template void swiglu_forward<double>(double*, const double*, const double*, int64_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_backward<double>(double*, double*, const double*, const double*, const double*, int64_t);
template void gelu_forward<float>(float*, const float*, int64_t);
template void gelu_forward<double>(double*, const double*, int64_t);
template void gelu_backward<float>(float*, const float*, const float*, int64_t);
template void gelu_backward<double>(double*, const double*, const double*, int64_t);
template void add<float>(float*, const float*, const float*, int64_t);
template void add<double>(double*, const double*, const double*, int64_t);
template void dropout<float>(float*, const float*, int64_t, double, uint64_t);
template void dropout<double>(double*, const double*, int64_t, double, uint64_t);

}  // namespace ll::cpu
