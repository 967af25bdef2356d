// Argument validation of every CUDA backend op, at the API boundary, before anything is launched.
// Plain C++ (no CUDA headers): it runs, and is unit-tested, on machines without a GPU or nvcc
// (tests/test_cuda_plan.cpp builds tensors that claim to live on the device and never dereferences them).
//
// The CUDA precision policy: weights bf16, activations bf16, statistics f32, gradients f32.
// Each check returns the sizes the launcher needs; any violation throws ll::Error naming the op, the argument,
// what it is and what was expected.
#pragma once
#include <cstdint>

#include "backend.h"
#include "cuda/attention_plan.h"

namespace ll::cuda_checks {

constexpr DType kWeight = DType::BF16;
constexpr DType kAct = DType::BF16;
constexpr DType kStat = DType::F32;
constexpr DType kGrad = DType::F32;

inline DTypePolicy policy() { return {kWeight, kAct, kStat, kGrad}; }

// `t` lives on the device, has dtype `dt` and is a rows × cols matrix (any rank; last dim = cols).
void expect_matrix(const Tensor& t, DType dt, int64_t rows, int64_t cols, const char* op, const char* arg);
// `t` lives on the device, has dtype `dt` and exactly the shape `dims`.
void expect_shape(const Tensor& t, DType dt, std::initializer_list<int64_t> dims, const char* op, const char* arg);
// The device pointer of `t` is a multiple of `bytes` (vector loads, cp.async).
void expect_aligned(const Tensor& t, size_t bytes, const char* op, const char* arg);

struct RowsCols {
  int64_t rows, cols;
};

RowsCols embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table);
RowsCols embedding_backward(const Tensor& dtable, const Tensor& ids, const Tensor& dout);
RowsCols rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w, double eps);
RowsCols rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dout, const Tensor& x, const Tensor& w,
                          const Tensor& rstd);

// y[T,N] = x[T,K]·W[N,K]ᵀ
struct LinearDims {
  int64_t rows, in, out;
};
LinearDims linear_forward(const Tensor& y, const Tensor& x, const Tensor& w);
LinearDims linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w);
struct LoraDims {
  int64_t rows, in, out, rank;
};
LoraDims lora_forward(const Tensor& y, const Tensor& xa, const Tensor& x, const Tensor& x_lora, const Tensor& w,
                      const Tensor& a, const Tensor& b);
LoraDims lora_backward(const Tensor& dx, const Tensor& dx_lora, const Tensor& dw, const Tensor& da, const Tensor& db,
                       const Tensor& dxa, const Tensor& dy, const Tensor& x, const Tensor& x_lora, const Tensor& xa,
                       const Tensor& w, const Tensor& a, const Tensor& b);

int64_t dropout(const Tensor& out, const Tensor& x, double p);  // returns the element count

struct RopeDims {
  int64_t rows, heads, head_dim;
};
RopeDims rope(const Tensor& x, const Tensor& positions, const RopeParams& p, const char* op);

// The attention problem after validation, with the kernel path chosen (or the override, checked).
struct AttentionProblem {
  int64_t batch, seq_len, heads, kv_heads, head_dim, kv_len;
  cuda_plan::AttentionPath path;
};
AttentionProblem attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const AttentionMask& mask, cuda_plan::AttentionPath override_path);
AttentionProblem attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                                    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                    const Tensor& lse, const AttentionMask& mask,
                                    cuda_plan::AttentionPath override_path);

int64_t swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up);
int64_t swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout, const Tensor& gate,
                        const Tensor& up);
int64_t add(const Tensor& out, const Tensor& a, const Tensor& b);
RowsCols cross_entropy(const Tensor& logits, const Tensor& losses, const Tensor& targets);
RowsCols argmax_rows(const Tensor& out, const Tensor& logits);
int64_t sum_squares(const Tensor& x);
int64_t scale(const Tensor& x);
// param: weight dtype; master: f32 (required when param is not f32); grad, m, v: f32. Returns the element count.
int64_t adamw_step(const Tensor& param, const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                   const AdamWStep& step);
// Floating dtypes only, same element count.
int64_t convert(const Tensor& dst, const Tensor& src);
// copy: same dtype and element count.
int64_t copy(const Tensor& dst, const Tensor& src);

}  // namespace ll::cuda_checks
