// CPU reference kernels on raw pointers, templated on the scalar type (float for the production CPU backend,
// double for the gradient-check backend). Shapes are validated by CpuBackend before these are called.
// Every loop with a reduction runs the reduction inside one thread, sequentially or in row_kernels.h's eight fixed
// lanes, so results depend neither on the OpenMP thread count nor on the machine's vector width.
#pragma once
#include <cstdint>

#include "core/attention_mask.h"

namespace ll::cpu {

// C[M,N] = alpha·op(A)·op(B) + beta·C, row-major; op(X) = Xᵀ when trans_X.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc);

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t rows, int64_t dim);
template <typename T>
void embedding_backward(T* dtable, const int32_t* ids, const T* dout, int64_t rows, int64_t dim);

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int64_t rows, int64_t dim, double eps);
template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int64_t rows, int64_t dim,
                      bool accumulate_dx);

// mean, rstd in double, rounded to T; out from the rounded statistics.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t dim,
                       double eps);
// dx, dw, db may be null (skipped).
template <typename T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, const T* mean, const T* rstd,
                        int64_t rows, int64_t dim, bool accumulate_dx);

// y[rows, cols] += b broadcast over rows; db += column sums of dy (rows in order).
template <typename T>
void add_bias(T* y, const T* b, int64_t rows, int64_t cols);
template <typename T>
void bias_backward(T* db, const T* dy, int64_t rows, int64_t cols);

// RoPE in two steps: rope_table fills cos/sin [rows, rotary_dims/2] of the angles positions[t] / factor ·
// inv_freq[i] (in double, rounded to T); rope_rotate rotates the first rotary_dims (even, <= head_dim) of each head
// by them: sign = +1 applies the rotation, −1 its transpose (the backward).
template <typename T>
void rope_table(T* cos_t, T* sin_t, const int32_t* positions, int64_t rows, int64_t half, const double* inv_freq,
                double factor);
template <typename T>
void rope_rotate(T* x, const T* cos_t, const T* sin_t, int64_t rows, int64_t heads, int64_t head_dim,
                 int64_t rotary_dims, int sign);

// Queries are the last seq_len positions of kv_len keys (seq_len == kv_len except when decoding from a cache):
// query i sits at absolute position i + kv_len − seq_len.
struct AttentionShape {
  int64_t batch, seq_len, heads, kv_heads, head_dim, kv_len;
};
template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const AttentionShape& s,
                       const AttentionMask& mask);
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, const AttentionShape& s, const AttentionMask& mask);

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n);
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n);

// GPT-NeoX's fused QKV: qkv[rows, heads·3·head_dim] (per head: q, k, v) ↔ q, k, v [rows, heads, head_dim].
template <typename T>
void split_qkv(T* q, T* k, T* v, const T* qkv, int64_t rows, int64_t heads, int64_t head_dim);
template <typename T>
void merge_qkv(T* qkv, const T* q, const T* k, const T* v, int64_t rows, int64_t heads, int64_t head_dim);

// Exact GELU, computed in double and rounded to T. out may alias x; dx may alias dout.
template <typename T>
void gelu_forward(T* out, const T* x, int64_t n);
template <typename T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n);

template <typename T>
void add(T* out, const T* a, const T* b, int64_t n);

template <typename T>
void dropout(T* out, const T* x, int64_t n, double p, uint64_t seed);

template <typename T>
void cross_entropy(T* logits, T* losses, const int32_t* targets, int64_t rows, int64_t vocab, double grad_scale,
                   bool compute_grad);

template <typename T>
void argmax_rows(int32_t* out, const T* logits, int64_t rows, int64_t vocab);

template <typename T>
double sum_squares(const T* x, int64_t n);
template <typename T>
void scale(T* x, int64_t n, double s);
template <typename T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
                double weight_decay, int64_t step);

}  // namespace ll::cpu
