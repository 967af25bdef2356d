// Token embedding: gather forward, deterministic scatter-add backward.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "cpu/kernels.h"

namespace ll::cpu {

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t rows, int64_t dim) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) std::memcpy(out + t * dim, table + int64_t(ids[t]) * dim, sizeof(T) * dim);
}

// Rows sharing a token id are summed in increasing row order by a single thread, so the result is
// independent of the thread count (no atomics).
template <typename T>
void embedding_backward(T* dtable, const int32_t* ids, const T* dout, int64_t rows, int64_t dim) {
  std::vector<int64_t> order(rows);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  std::vector<int64_t> run_starts;
  for (int64_t i = 0; i < rows; ++i)
    if (i == 0 || ids[order[i]] != ids[order[i - 1]]) run_starts.push_back(i);
  run_starts.push_back(rows);
  const int64_t runs = int64_t(run_starts.size()) - 1;
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t r = 0; r < runs; ++r) {
    T* dst = dtable + int64_t(ids[order[run_starts[r]]]) * dim;
    for (int64_t i = run_starts[r]; i < run_starts[r + 1]; ++i) {
      const T* src = dout + order[i] * dim;
      for (int64_t d = 0; d < dim; ++d) dst[d] += src[d];
    }
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t);
template void embedding_forward<double>(double*, const int32_t*, const double*, int64_t, int64_t);
template void embedding_backward<float>(float*, const int32_t*, const float*, int64_t, int64_t);
template void embedding_backward<double>(double*, const int32_t*, const double*, int64_t, int64_t);

}  // namespace ll::cpu
