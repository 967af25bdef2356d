// LayerNorm (torch.nn.LayerNorm): y = (x − mean)·rstd·w + b with the biased variance and rstd = 1/sqrt(var + eps).
// Statistics in double (two passes: the mean, then the squared deviations), rounded to T and saved; the output and
// the backward use the rounded statistics, so forward and backward see the same x̂.
#include <algorithm>
#include <cmath>

#include "cpu/kernels.h"

namespace ll::cpu {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t dim,
                       double eps) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    const T* xr = x + t * dim;
    double sum = 0;
    for (int64_t d = 0; d < dim; ++d) sum += double(xr[d]);
    const double m = sum / double(dim);
    double sq = 0;
    for (int64_t d = 0; d < dim; ++d) sq += (double(xr[d]) - m) * (double(xr[d]) - m);
    const T mt = T(m), r = T(1.0 / std::sqrt(sq / double(dim) + eps));
    mean[t] = mt;
    rstd[t] = r;
    T* yr = out + t * dim;
    for (int64_t d = 0; d < dim; ++d) yr[d] = (xr[d] - mt) * r * w[d] + b[d];
  }
}

// With x̂ = (x − mean)·rstd and g = dout ⊙ w:  dx = rstd·(g − mean(g) − x̂·mean(g·x̂)),
// dw += Σ_t dout·x̂,  db += Σ_t dout.
template <typename T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, const T* mean, const T* rstd,
                        int64_t rows, int64_t dim, bool accumulate_dx) {
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < rows; ++t) {
      const T* xr = x + t * dim;
      const T* gr = dout + t * dim;
      const T m = mean[t], r = rstd[t];
      double sum_g = 0, sum_gx = 0;
      for (int64_t d = 0; d < dim; ++d) {
        const double g = double(gr[d]) * double(w[d]);
        sum_g += g;
        sum_gx += g * double((xr[d] - m) * r);
      }
      const T mean_g = T(sum_g / double(dim)), mean_gx = T(sum_gx / double(dim));
      T* dxr = dx + t * dim;
      for (int64_t d = 0; d < dim; ++d) {
        const T v = r * (gr[d] * w[d] - mean_g - (xr[d] - m) * r * mean_gx);
        dxr[d] = accumulate_dx ? dxr[d] + v : v;
      }
    }
  }
  if (dw || db) {
    // Column blocks in parallel, rows summed in order inside a block: deterministic.
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t d0 = blk * kBlock, d1 = std::min(dim, d0 + kBlock);
      double acc_w[kBlock] = {}, acc_b[kBlock] = {};
      for (int64_t t = 0; t < rows; ++t) {
        const T m = mean[t], r = rstd[t];
        for (int64_t d = d0; d < d1; ++d) {
          const double g = double(dout[t * dim + d]);
          acc_w[d - d0] += g * double((x[t * dim + d] - m) * r);
          acc_b[d - d0] += g;
        }
      }
      for (int64_t d = d0; d < d1; ++d) {
        if (dw) dw[d] += T(acc_w[d - d0]);
        if (db) db[d] += T(acc_b[d - d0]);
      }
    }
  }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t,
                                       int64_t, double);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*, const double*,
                                        int64_t, int64_t, double);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, int64_t, int64_t, bool);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, int64_t, int64_t, bool);

}  // namespace ll::cpu
