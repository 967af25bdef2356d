// Element-wise ops: SwiGLU (out = silu(gate) ⊙ up, silu(g) = g·σ(g)), residual add, dropout.
#include <cmath>

#include "cpu/kernels.h"
#include "dropout_mask.h"

namespace ll::cpu {

template <typename T>
static inline T sigmoid(T g) {
  return T(1) / (T(1) + std::exp(-g));
}

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

// d/dg silu(g) = σ(g)·(1 + g·(1 − σ(g))).
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i], s = sigmoid(g);
    dgate[i] = dout[i] * up[i] * s * (T(1) + g * (T(1) - s));
    dup[i] = dout[i] * g * s;
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
template void add<float>(float*, const float*, const float*, int64_t);
template void add<double>(double*, const double*, const double*, int64_t);
template void dropout<float>(float*, const float*, int64_t, double, uint64_t);
template void dropout<double>(double*, const double*, int64_t, double, uint64_t);

}  // namespace ll::cpu
