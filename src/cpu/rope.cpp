// Rotary position embedding with linear position interpolation, Hugging Face rotate_half layout, over the first
// rotary_dims dims of each head, at the frequencies core/rope_frequencies.h gives (all of them for Llama; GPT-NeoX's partial rotary leaves the rest untouched).
// The cos/sin table is its own kernel so that CpuBackend can reuse it: q and k, forward and backward, every layer
// rotate by the same positions (the angles were most of RoPE's cost). Angles are computed in double for every precision (the reference caches fp32/bf16 tables; the
// difference is a documented tolerance, see docs/architecture.md).
#include <cmath>

#include "cpu/kernels.h"

namespace ll::cpu {

template <typename T>
void rope_table(T* cos_t, T* sin_t, const int32_t* positions, int64_t rows, int64_t half, const double* inv_freq,
                double factor) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    const double pos = double(positions[t]) / factor;
    for (int64_t i = 0; i < half; ++i) {
      cos_t[t * half + i] = T(std::cos(pos * inv_freq[i]));
      sin_t[t * half + i] = T(std::sin(pos * inv_freq[i]));
    }
  }
}

template <typename T>
void rope_rotate(T* x, const T* cos_t, const T* sin_t, int64_t rows, int64_t heads, int64_t head_dim,
                 int64_t rotary_dims, int sign) {
  const int64_t half = rotary_dims / 2;  // pairs (i, i + half) inside the rotated slice
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    const T* c = cos_t + t * half;
    const T* sn = sin_t + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      T* xh = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const T a = xh[i], b = xh[i + half], s = sign > 0 ? sn[i] : -sn[i];  // negation is exact
        xh[i] = a * c[i] - b * s;
        xh[i + half] = b * c[i] + a * s;
      }
    }
  }
}

template void rope_table<float>(float*, float*, const int32_t*, int64_t, int64_t, const double*, double);
template void rope_table<double>(double*, double*, const int32_t*, int64_t, int64_t, const double*, double);
template void rope_rotate<float>(float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, int);
template void rope_rotate<double>(double*, const double*, const double*, int64_t, int64_t, int64_t, int64_t, int);

}  // namespace ll::cpu
