// GPT-NeoX's fused query_key_value output: the per-head [H, 3, Dh] rows split into q, k, v and merged back.
#include <cstring>

#include "cpu/kernels.h"

namespace ll::cpu {

// Row t, head h: qkv's block of 3·Dh values holds q, k, v of that head one after the other.
template <typename T>
void split_qkv(T* q, T* k, T* v, const T* qkv, int64_t rows, int64_t heads, int64_t head_dim) {
  const size_t bytes = size_t(head_dim) * sizeof(T);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const T* src = qkv + (t * heads + h) * 3 * head_dim;
      const int64_t dst = (t * heads + h) * head_dim;
      std::memcpy(q + dst, src, bytes);
      std::memcpy(k + dst, src + head_dim, bytes);
      std::memcpy(v + dst, src + 2 * head_dim, bytes);
    }
}

template <typename T>
void merge_qkv(T* qkv, const T* q, const T* k, const T* v, int64_t rows, int64_t heads, int64_t head_dim) {
  const size_t bytes = size_t(head_dim) * sizeof(T);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      T* dst = qkv + (t * heads + h) * 3 * head_dim;
      const int64_t src = (t * heads + h) * head_dim;
      std::memcpy(dst, q + src, bytes);
      std::memcpy(dst + head_dim, k + src, bytes);
      std::memcpy(dst + 2 * head_dim, v + src, bytes);
    }
}

template void split_qkv<float>(float*, float*, float*, const float*, int64_t, int64_t, int64_t);
template void split_qkv<double>(double*, double*, double*, const double*, int64_t, int64_t, int64_t);
template void merge_qkv<float>(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t);
template void merge_qkv<double>(double*, const double*, const double*, const double*, int64_t, int64_t, int64_t);

}  // namespace ll::cpu
