// Rotary position embedding with linear position interpolation, Hugging Face rotate_half layout, over the first
// rotary_dims dims of each head, at the frequencies core/rope_frequencies.h gives (all of them for Llama; GPT-NeoX's partial rotary leaves the rest untouched).
// Angles are computed in double for every precision (the reference caches fp32/bf16 tables; the
// difference is a documented tolerance, see docs/architecture.md).
#include <cmath>
#include <vector>

#include "cpu/kernels.h"

namespace ll::cpu {

template <typename T>
void rope_rotate(T* x, const int32_t* positions, int64_t rows, int64_t heads, int64_t head_dim, int64_t rotary_dims,
                 const double* inv_freq, double factor, int sign) {
  const int64_t half = rotary_dims / 2;  // pairs (i, i + half) inside the rotated slice
#pragma omp parallel
  {
    std::vector<T> cos_t(half), sin_t(half);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < rows; ++t) {
      const double pos = double(positions[t]) / factor;
      for (int64_t i = 0; i < half; ++i) {
        cos_t[i] = T(std::cos(pos * inv_freq[i]));
        sin_t[i] = T(sign * std::sin(pos * inv_freq[i]));
      }
      for (int64_t h = 0; h < heads; ++h) {
        T* xh = x + (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const T a = xh[i], b = xh[i + half];
          xh[i] = a * cos_t[i] - b * sin_t[i];
          xh[i + half] = b * cos_t[i] + a * sin_t[i];
        }
      }
    }
  }
}

template void rope_rotate<float>(float*, const int32_t*, int64_t, int64_t, int64_t, int64_t, const double*, double, int);
template void rope_rotate<double>(double*, const int32_t*, int64_t, int64_t, int64_t, int64_t, const double*,
                                  double, int);

}  // namespace ll::cpu
