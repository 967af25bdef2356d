// The bias of a linear layer: y += b over the rows; its gradient db += the column sums of dy.
#include <algorithm>

#include "cpu/kernels.h"

namespace ll::cpu {

template <typename T>
void add_bias(T* y, const T* b, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t n = 0; n < cols; ++n) y[t * cols + n] += b[n];
}

// Column blocks in parallel, rows summed in order (double) inside a block: deterministic, as RMSNorm's dw.
template <typename T>
void bias_backward(T* db, const T* dy, int64_t rows, int64_t cols) {
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t n0 = blk * kBlock, n1 = std::min(cols, n0 + kBlock);
    double acc[kBlock] = {};
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t n = n0; n < n1; ++n) acc[n - n0] += double(dy[t * cols + n]);
    for (int64_t n = n0; n < n1; ++n) db[n] += T(acc[n - n0]);
  }
}

template void add_bias<float>(float*, const float*, int64_t, int64_t);
template void add_bias<double>(double*, const double*, int64_t, int64_t);
template void bias_backward<float>(float*, const float*, int64_t, int64_t);
template void bias_backward<double>(double*, const double*, int64_t, int64_t);

}  // namespace ll::cpu
