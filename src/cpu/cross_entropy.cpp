// Cross-entropy over the vocabulary for a chunk of rows, gradient written in place over the logits.
#include <algorithm>
#include <cmath>

#include "cpu/kernels.h"

namespace ll::cpu {

constexpr int32_t kIgnoreIndex = -100;

template <typename T>
void cross_entropy(T* logits, T* losses, const int32_t* targets, int64_t rows, int64_t vocab, double grad_scale,
                   bool compute_grad) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    T* row = logits + r * vocab;
    const int32_t target = targets[r];
    if (target == kIgnoreIndex) {
      losses[r] = T(0);
      if (compute_grad) std::fill(row, row + vocab, T(0));
      continue;
    }
    double max_logit = row[0];
    for (int64_t j = 1; j < vocab; ++j) max_logit = std::max(max_logit, double(row[j]));
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(row[j]) - max_logit);
    const double lse = max_logit + std::log(sum);
    losses[r] = T(lse - double(row[target]));
    if (compute_grad) {
      for (int64_t j = 0; j < vocab; ++j) {
        const double p = std::exp(double(row[j]) - lse);
        row[j] = T(grad_scale * (p - (j == target ? 1.0 : 0.0)));
      }
    }
  }
}

template <typename T>
void argmax_rows(int32_t* out, const T* logits, int64_t rows, int64_t vocab) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = logits + r * vocab;
    out[r] = int32_t(std::max_element(row, row + vocab) - row);
  }
}

template void argmax_rows<float>(int32_t*, const float*, int64_t, int64_t);
template void argmax_rows<double>(int32_t*, const double*, int64_t, int64_t);
template void cross_entropy<float>(float*, float*, const int32_t*, int64_t, int64_t, double, bool);
template void cross_entropy<double>(double*, double*, const int32_t*, int64_t, int64_t, double, bool);

}  // namespace ll::cpu
