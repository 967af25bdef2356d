// Attention with native GQA and the LongLoRA masks, blocked over queries: for one (batch, head, block of
// kBlock queries) the scores against the block's key ranges are one matrix product, masked per row, soft-maxed,
// and multiplied by V — so memory is O(kBlock·L) per thread, never O(L²), and the products run in BLAS.
// The backward recomputes probabilities from the saved log-sum-exp (flash-attention style); one thread owns
// one (batch, KV head), so dK/dV sums have a fixed order (deterministic whatever the thread count).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/row_kernels.h"

namespace ll::cpu {

namespace {

constexpr int64_t kBlock = 64;

// Row pointers for [B, L, heads, Dh] tensors.
struct Layout {
  int64_t seq_len, heads, head_dim;
  int64_t at(int64_t b, int64_t l, int64_t h) const { return ((b * seq_len + l) * heads + h) * head_dim; }
  int64_t row_stride() const { return heads * head_dim; }
};

// The keys some query of rows [i0, i1) attends: at most two contiguous ranges (the segment part and, for the
// roll variant, the wrap-around), as [begin, end) pairs; columns of the score block follow this order.
struct BlockKeys {
  int64_t begin[2] = {0, 0}, end[2] = {0, 0};
  int64_t count() const { return (end[0] - begin[0]) + (end[1] - begin[1]); }
  int64_t column(int64_t key) const {  // column of `key`, which must lie in a range
    return key < end[0] && key >= begin[0] ? key - begin[0] : (end[0] - begin[0]) + key - begin[1];
  }
};

BlockKeys block_keys(const AttentionMask& mask, int64_t h, const AttentionShape& s, int64_t i0, int64_t i1) {
  const int64_t off = s.kv_len - s.seq_len;
  BlockKeys k;
  k.begin[0] = s.kv_len;
  for (int64_t i = i0; i < i1; ++i) {  // lo is not monotone under every mask: take the union explicitly
    const KeyRanges r = attended_keys(mask, h, s.heads, s.kv_len, i + off);
    k.begin[0] = std::min(k.begin[0], r.lo);
    k.end[0] = std::max(k.end[0], r.hi + 1);
    if (r.wrap_hi > r.wrap_lo) k.begin[1] = r.wrap_lo, k.end[1] = r.wrap_hi;
  }
  if (k.end[1] > k.begin[1] && k.begin[1] < k.end[0]) {  // overlapping ranges (tiny L): merge
    k.end[0] = std::max(k.end[0], k.end[1]);
    k.begin[1] = k.end[1] = 0;
  }
  return k;
}

// Scores block S[rows, cols] = scale · Q_block · K_keysᵀ (one product per key range).
template <typename T>
void scores(T* S, const T* q0, int64_t ldq, const T* k_head, int64_t ldk, const BlockKeys& keys, int64_t rows,
            int64_t dh, T scale) {
  const int64_t cols = keys.count();
  int64_t col = 0;
  for (int r = 0; r < 2; ++r) {
    const int64_t n = keys.end[r] - keys.begin[r];
    if (n <= 0) continue;
    gemm<T>(false, true, rows, n, dh, scale, q0, ldq, k_head + keys.begin[r] * ldk, ldk, T(0), S + col, cols);
    col += n;
  }
}

// C[rows, dh] (+)= P[rows, cols] · V_keys (one product per key range).
template <typename T>
void times_values(T* C, int64_t ldc, const T* P, const T* v_head, int64_t ldv, const BlockKeys& keys, int64_t rows,
                  int64_t dh, T alpha, bool accumulate) {
  const int64_t cols = keys.count();
  int64_t col = 0;
  for (int r = 0; r < 2; ++r) {
    const int64_t n = keys.end[r] - keys.begin[r];
    if (n <= 0) continue;
    gemm<T>(false, false, rows, dh, n, alpha, P + col, cols, v_head + keys.begin[r] * ldv, ldv,
            accumulate || col > 0 ? T(1) : T(0), C, ldc);
    col += n;
  }
}

// dKV_keys[·, dh] += alpha · M[rows, cols]ᵀ · X[rows, dh] (one product per key range).
template <typename T>
void transposed_into_keys(T* dkv_head, int64_t ldkv, const T* M, const T* X, int64_t ldx, const BlockKeys& keys,
                          int64_t rows, int64_t dh, T alpha) {
  const int64_t cols = keys.count();
  int64_t col = 0;
  for (int r = 0; r < 2; ++r) {
    const int64_t n = keys.end[r] - keys.begin[r];
    if (n <= 0) continue;
    gemm<T>(true, false, n, dh, rows, alpha, M + col, cols, X, ldx, T(1), dkv_head + keys.begin[r] * ldkv, ldkv);
    col += n;
  }
}

// Masks the scores of row `i` that its query does not attend (they become −inf).
template <typename T>
void mask_row(T* row, const BlockKeys& keys, const KeyRanges& r) {
  for (int g = 0; g < 2; ++g)
    for (int64_t j = keys.begin[g]; j < keys.end[g]; ++j) {
      const bool on = (j >= r.lo && j <= r.hi) || (j >= r.wrap_lo && j < r.wrap_hi);
      if (!on) row[keys.column(j)] = -INFINITY;
    }
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const AttentionShape& s,
                       const AttentionMask& mask) {
  const Layout qo{s.seq_len, s.heads, s.head_dim}, kv{s.kv_len, s.kv_heads, s.head_dim};
  const int64_t group = s.heads / s.kv_heads, dh = s.head_dim, off = s.kv_len - s.seq_len;
  const int64_t blocks = (s.seq_len + kBlock - 1) / kBlock;
  const T scale = T(1.0 / std::sqrt(double(dh)));
#pragma omp parallel
  {
    std::vector<T> S;
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h)
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t i0 = blk * kBlock, i1 = std::min(s.seq_len, i0 + kBlock), rows = i1 - i0;
          const BlockKeys keys = block_keys(mask, h, s, i0, i1);
          const int64_t cols = keys.count(), hk = h / group;
          S.resize(size_t(rows * cols));
          scores(S.data(), q + qo.at(b, i0, h), qo.row_stride(), k + kv.at(b, 0, hk), kv.row_stride(), keys, rows,
                 dh, scale);
          std::vector<T> inv_sum(rows);
          for (int64_t r = 0; r < rows; ++r) {
            T* row = S.data() + r * cols;
            mask_row(row, keys, attended_keys(mask, h, s.heads, s.kv_len, i0 + r + off));
            const T mx = max_of(row, cols);
            exp_minus(row, cols, mx);  // exp(−inf) = 0 for masked keys
            LaneSums lanes;  // lanes keyed by key position: the sum does not depend on the block's key ranges
            for (int g = 0, col = 0; g < 2; ++g) {
              const int64_t n = keys.end[g] - keys.begin[g];
              if (n <= 0) continue;
              add_to_lanes(lanes, row + col, n, keys.begin[g]);
              col += int(n);
            }
            const double sum = lanes.total();
            inv_sum[r] = T(1.0 / sum);
            lse[(b * s.heads + h) * s.seq_len + i0 + r] = T(double(mx) + std::log(sum));
          }
          T* o0 = out + qo.at(b, i0, h);
          times_values(o0, qo.row_stride(), S.data(), v + kv.at(b, 0, hk), kv.row_stride(), keys, rows, dh, T(1),
                       false);
          for (int64_t r = 0; r < rows; ++r) {
            T* o_row = o0 + r * qo.row_stride();
            const T f = inv_sum[r];
#pragma omp simd
            for (int64_t d = 0; d < dh; ++d) o_row[d] *= f;
          }
        }
  }
}

// For each query i with P_ij = exp(s_ij − lse_i) and D_i = dO_i·O_i:
//   dS_ij = P_ij·(dO_i·V_j − D_i),  dQ_i = scale·Σ_j dS_ij K_j,  dK_j += scale·dS_ij Q_i,  dV_j += P_ij dO_i.
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, const AttentionShape& s, const AttentionMask& mask) {
  const Layout qo{s.seq_len, s.heads, s.head_dim}, kv{s.kv_len, s.kv_heads, s.head_dim};
  const int64_t group = s.heads / s.kv_heads, dh = s.head_dim, off = s.kv_len - s.seq_len;
  const int64_t blocks = (s.seq_len + kBlock - 1) / kBlock;
  const T scale = T(1.0 / std::sqrt(double(dh)));
#pragma omp parallel
  {
    std::vector<T> P, dP, D;
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t hk = 0; hk < s.kv_heads; ++hk) {
        T* dk_head = dk + kv.at(b, 0, hk);
        T* dv_head = dv + kv.at(b, 0, hk);
        for (int64_t j = 0; j < s.kv_len; ++j) {
          std::fill_n(dk_head + j * kv.row_stride(), dh, T(0));
          std::fill_n(dv_head + j * kv.row_stride(), dh, T(0));
        }
        const T* k_head = k + kv.at(b, 0, hk);
        const T* v_head = v + kv.at(b, 0, hk);
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
          for (int64_t blk = 0; blk < blocks; ++blk) {
            const int64_t i0 = blk * kBlock, i1 = std::min(s.seq_len, i0 + kBlock), rows = i1 - i0;
            const BlockKeys keys = block_keys(mask, h, s, i0, i1);
            const int64_t cols = keys.count(), ldq = qo.row_stride(), ldkv = kv.row_stride();
            const T* q0 = q + qo.at(b, i0, h);
            const T* do0 = dout + qo.at(b, i0, h);
            const T* o0 = out + qo.at(b, i0, h);
            P.resize(size_t(rows * cols));
            dP.resize(size_t(rows * cols));
            D.resize(size_t(rows));
            scores(P.data(), q0, ldq, k_head, ldkv, keys, rows, dh, scale);
            for (int64_t r = 0; r < rows; ++r) {
              T* row = P.data() + r * cols;
              mask_row(row, keys, attended_keys(mask, h, s.heads, s.kv_len, i0 + r + off));
              exp_minus(row, cols, lse[(b * s.heads + h) * s.seq_len + i0 + r]);
              D[r] = T(dot_in_double(do0 + r * ldq, o0 + r * ldq, dh));
            }
            transposed_into_keys(dv_head, ldkv, P.data(), do0, ldq, keys, rows, dh, T(1));  // dV += Pᵀ dO
            // dP = dO · V_keysᵀ
            int64_t col = 0;
            for (int g = 0; g < 2; ++g) {
              const int64_t n = keys.end[g] - keys.begin[g];
              if (n <= 0) continue;
              gemm<T>(false, true, rows, n, dh, T(1), do0, ldq, v_head + keys.begin[g] * ldkv, ldkv, T(0),
                      dP.data() + col, cols);
              col += n;
            }
            for (int64_t r = 0; r < rows; ++r) {  // dS = P ⊙ (dP − D), stored over dP
              T* ds_row = dP.data() + r * cols;
              const T* p_row = P.data() + r * cols;
              const T d = D[r];
#pragma omp simd
              for (int64_t c = 0; c < cols; ++c) ds_row[c] = p_row[c] * (ds_row[c] - d);
            }
            times_values(dq + qo.at(b, i0, h), ldq, dP.data(), k_head, ldkv, keys, rows, dh, scale, false);
            transposed_into_keys(dk_head, ldkv, dP.data(), q0, ldq, keys, rows, dh, scale);  // dK += scale dSᵀ Q
          }
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
