// RMSNorm: y = x · rstd · w with rstd = 1/sqrt(mean(x²) + eps).
#include <algorithm>
#include <cmath>

#include "cpu/kernels.h"
#include "cpu/row_kernels.h"

namespace ll::cpu {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int64_t rows, int64_t dim, double eps) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    const T* xr = x + t * dim;
    const double sum_sq = dot_in_double(xr, xr, dim);
    const T r = T(1.0 / std::sqrt(sum_sq / double(dim) + eps));
    rstd[t] = r;
    T* yr = out + t * dim;
#pragma omp simd
    for (int64_t d = 0; d < dim; ++d) yr[d] = xr[d] * r * w[d];
  }
}

// With g = dout ⊙ w:  dx = rstd·g − rstd³·x·(Σ g·x)/D,  dw += Σ_t dout·x·rstd.
template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int64_t rows, int64_t dim,
                      bool accumulate_dx) {
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < rows; ++t) {
      const T* xr = x + t * dim;
      const T* gr = dout + t * dim;
      const double dot = dot_in_double(gr, w, xr, dim);
      const T r = rstd[t];
      const T c = T(double(r) * double(r) * double(r) * dot / double(dim));
      T* dxr = dx + t * dim;
      if (accumulate_dx) {
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) dxr[d] = dxr[d] + (r * gr[d] * w[d] - c * xr[d]);
      } else {
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) dxr[d] = r * gr[d] * w[d] - c * xr[d];
      }
    }
  }
  if (dw) {
    // Column blocks in parallel, rows summed in order inside a block: deterministic.
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t d0 = blk * kBlock, d1 = std::min(dim, d0 + kBlock);
      double acc[kBlock] = {};
      for (int64_t t = 0; t < rows; ++t) {
        const double r = rstd[t];
        const T* dout_t = dout + t * dim;
        const T* x_t = x + t * dim;
#pragma omp simd
        for (int64_t d = d0; d < d1; ++d) acc[d - d0] += double(dout_t[d]) * double(x_t[d]) * r;
      }
      for (int64_t d = d0; d < d1; ++d) dw[d] += T(acc[d - d0]);
    }
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int64_t, int64_t, double);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int64_t, int64_t, double);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*, int64_t,
                                      int64_t, bool);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*, const double*, const double*,
                                       int64_t, int64_t, bool);

}  // namespace ll::cpu
