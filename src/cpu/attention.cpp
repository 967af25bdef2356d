// Attention with native GQA and the LongLoRA masks, one query row at a time: memory is O(L) per thread,
// never O(L²). The backward recomputes probabilities from the saved log-sum-exp (flash-attention style).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/kernels.h"

namespace ll::cpu {

namespace {

// Visits the attended keys of one query in increasing order of the ranges.
template <typename F>
inline void for_each_key(const KeyRanges& r, F&& f) {
  for (int64_t j = r.lo; j <= r.hi; ++j) f(j);
  for (int64_t j = r.wrap_lo; j < r.wrap_hi; ++j) f(j);
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Row pointers for [B, L, heads, Dh] tensors.
struct Layout {
  int64_t seq_len, heads, head_dim;
  int64_t at(int64_t b, int64_t l, int64_t h) const { return ((b * seq_len + l) * heads + h) * head_dim; }
};

}  // namespace

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const AttentionShape& s,
                       const AttentionMask& mask) {
  const Layout qo{s.seq_len, s.heads, s.head_dim}, kv{s.kv_len, s.kv_heads, s.head_dim};
  const int64_t group = s.heads / s.kv_heads, dh = s.head_dim, q_offset = s.kv_len - s.seq_len;
  const T scale = T(1.0 / std::sqrt(double(dh)));
#pragma omp parallel
  {
    std::vector<T> scores(s.kv_len);
    std::vector<double> acc(dh);
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h)
        for (int64_t i = 0; i < s.seq_len; ++i) {
          const KeyRanges r = attended_keys(mask, h, s.heads, s.kv_len, i + q_offset);
          const T* qi = q + qo.at(b, i, h);
          const int64_t hk = h / group;
          int64_t n = 0;
          T max_score = -INFINITY;
          for_each_key(r, [&](int64_t j) {
            scores[n] = dot(qi, k + kv.at(b, j, hk), dh) * scale;
            max_score = std::max(max_score, scores[n++]);
          });
          double sum = 0;
          std::fill(acc.begin(), acc.end(), 0.0);
          n = 0;
          for_each_key(r, [&](int64_t j) {
            const double p = std::exp(double(scores[n++] - max_score));
            sum += p;
            const T* vj = v + kv.at(b, j, hk);
            for (int64_t d = 0; d < dh; ++d) acc[d] += p * double(vj[d]);
          });
          T* oi = out + qo.at(b, i, h);
          for (int64_t d = 0; d < dh; ++d) oi[d] = T(acc[d] / sum);
          lse[(b * s.heads + h) * s.seq_len + i] = T(double(max_score) + std::log(sum));
        }
  }
}

// For each query i with P_ij = exp(s_ij − lse_i) and D_i = dO_i·O_i:
//   dS_ij = P_ij·(dO_i·V_j − D_i),  dQ_i = scale·Σ_j dS_ij K_j,  dK_j += scale·dS_ij Q_i,  dV_j += P_ij dO_i.
// One thread owns one (batch, KV head) and all its query heads, so dK/dV sums have a fixed order.
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, const AttentionShape& s, const AttentionMask& mask) {
  const Layout qo{s.seq_len, s.heads, s.head_dim}, kv{s.kv_len, s.kv_heads, s.head_dim};
  const int64_t group = s.heads / s.kv_heads, dh = s.head_dim, q_offset = s.kv_len - s.seq_len;
  const T scale = T(1.0 / std::sqrt(double(dh)));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t hk = 0; hk < s.kv_heads; ++hk) {
      for (int64_t j = 0; j < s.kv_len; ++j) {
        std::fill_n(dk + kv.at(b, j, hk), dh, T(0));
        std::fill_n(dv + kv.at(b, j, hk), dh, T(0));
      }
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
        for (int64_t i = 0; i < s.seq_len; ++i) {
          const KeyRanges r = attended_keys(mask, h, s.heads, s.kv_len, i + q_offset);
          const T* qi = q + qo.at(b, i, h);
          const T* doi = dout + qo.at(b, i, h);
          const T di = dot(doi, out + qo.at(b, i, h), dh);
          const T lse_i = lse[(b * s.heads + h) * s.seq_len + i];
          T* dqi = dq + qo.at(b, i, h);
          std::fill_n(dqi, dh, T(0));
          for_each_key(r, [&](int64_t j) {
            const T* kj = k + kv.at(b, j, hk);
            const T* vj = v + kv.at(b, j, hk);
            const T p = std::exp(dot(qi, kj, dh) * scale - lse_i);
            const T ds = p * (dot(doi, vj, dh) - di) * scale;
            T* dkj = dk + kv.at(b, j, hk);
            T* dvj = dv + kv.at(b, j, hk);
            for (int64_t d = 0; d < dh; ++d) {
              dqi[d] += ds * kj[d];
              dkj[d] += ds * qi[d];
              dvj[d] += p * doi[d];
            }
          });
        }
    }
}

template void attention_forward<float>(float*, float*, const float*, const float*, const float*,
                                       const AttentionShape&, const AttentionMask&);
template void attention_forward<double>(double*, double*, const double*, const double*, const double*,
                                        const AttentionShape&, const AttentionMask&);
template void attention_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, const float*, const AttentionShape&,
                                        const AttentionMask&);
template void attention_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, const double*, const AttentionShape&,
                                         const AttentionMask&);

}  // namespace ll::cpu
