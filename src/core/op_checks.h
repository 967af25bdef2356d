// Argument validation of the backend ops against the contracts in backend.h, shared by every backend.
// Plain C++: each backend calls the check of an op at its API boundary, before touching any memory, with a Context
// saying where the tensors must live and which dtypes its policy gives them. Each check returns the sizes the caller
// needs; any violation throws ll::Error naming the op, the argument, what it is and what was expected.
//
// Data is read only when it is host-visible (Context::device is the CPU): token ids and cross-entropy targets are
// range-checked there; a device backend validates shapes, dtypes and devices only.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "core/backend.h"

namespace ll::op_checks {

struct Context {
  Device device;         // where every tensor argument must live
  DTypePolicy dtypes;    // the backend's policy: act, weight, stat and grad arguments are checked against it
  const char* backend;   // "cpu", "cuda": named in messages
};

// `t` is non-empty and lives on ctx.device.
void expect_device(const Context& ctx, const Tensor& t, const char* op, const char* arg);
// `t` lives on ctx.device, has dtype `dt` and is a rows × cols matrix (any rank; last dim = cols).
void expect_matrix(const Context& ctx, const Tensor& t, DType dt, int64_t rows, int64_t cols, const char* op,
                   const char* arg);
// `t` lives on ctx.device, has dtype `dt` and exactly the shape `dims`.
void expect_shape(const Context& ctx, const Tensor& t, DType dt, std::initializer_list<int64_t> dims, const char* op,
                  const char* arg);

struct RowsCols {
  int64_t rows, cols;
};
// y[T,N] = x[T,K]·W[N,K]ᵀ
struct LinearDims {
  int64_t rows, in, out;
};
struct LoraDims {
  int64_t rows, in, out, rank;
};
struct RopeDims {
  int64_t rows, heads, head_dim;
  int64_t rotary_dims;  // the rotated slice of each head: RopeParams::rotary_dims, or head_dim when that is 0
};
// GPT-NeoX's fused projection: qkv[T, H·3·Dh], q, k, v [T, H, Dh]
struct QkvDims {
  int64_t rows, heads, head_dim;
};
// q[B,L,H,Dh], k,v[B,Lk,Hkv,Dh]
struct AttentionDims {
  int64_t batch, seq_len, heads, kv_heads, head_dim, kv_len;
};

// ---- memory ---------------------------------------------------------------------------------------------------------
// Same dtype and element count (no device check: a backend checks residency itself where it needs to).
int64_t copy(const Tensor& dst, const Tensor& src);
// Both on ctx.device, floating dtypes, same element count.
int64_t convert(const Context& ctx, const Tensor& dst, const Tensor& src);

// ---- ops (backend.h) ------------------------------------------------------------------------------------------------
RowsCols embedding_forward(const Context& ctx, const Tensor& out, const Tensor& ids, const Tensor& table);
RowsCols embedding_backward(const Context& ctx, const Tensor& dtable, const Tensor& ids, const Tensor& dout);
RowsCols rmsnorm_forward(const Context& ctx, const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w);
// dx, dw may be empty (skipped).
RowsCols rmsnorm_backward(const Context& ctx, const Tensor& dx, const Tensor& dw, const Tensor& dout, const Tensor& x,
                          const Tensor& w, const Tensor& rstd);
// x[T,D]; w, b [D]; mean, rstd [T]; eps finite and >= 0.
RowsCols layernorm_forward(const Context& ctx, const Tensor& out, const Tensor& mean, const Tensor& rstd,
                           const Tensor& x, const Tensor& w, const Tensor& b, double eps);
// dx, dw, db may be empty (skipped).
RowsCols layernorm_backward(const Context& ctx, const Tensor& dx, const Tensor& dw, const Tensor& db,
                            const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                            const Tensor& rstd);
LinearDims linear_forward(const Context& ctx, const Tensor& y, const Tensor& x, const Tensor& w);
// dx, dw may be empty (skipped).
LinearDims linear_backward(const Context& ctx, const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                           const Tensor& w);
// y[T,N] act, b[N] weight.
RowsCols add_bias(const Context& ctx, const Tensor& y, const Tensor& b);
// dy[T,N] act; db[N] grad may be empty (skipped).
RowsCols bias_backward(const Context& ctx, const Tensor& db, const Tensor& dy);
LoraDims lora_forward(const Context& ctx, const Tensor& y, const Tensor& xa, const Tensor& x, const Tensor& x_lora,
                      const Tensor& w, const Tensor& a, const Tensor& b);
// dx, dx_lora (not both), dw may be empty.
LoraDims lora_backward(const Context& ctx, const Tensor& dx, const Tensor& dx_lora, const Tensor& dw, const Tensor& da,
                       const Tensor& db, const Tensor& dxa, const Tensor& dy, const Tensor& x, const Tensor& x_lora,
                       const Tensor& xa, const Tensor& w, const Tensor& a, const Tensor& b);
int64_t dropout(const Context& ctx, const Tensor& out, const Tensor& x, double p);  // returns the element count
// x[T, heads, Dh]; theta and factor > 0; the rotated slice (rotary_dims, or Dh when 0) even and at most Dh.
// `op` is rope_forward or rope_backward.
RopeDims rope(const Context& ctx, const Tensor& x, const Tensor& positions, const RopeParams& p, const char* op);
// The shape rules alone (rank, GQA multiple, queries are the last keys, the S2 / roll mask rules).
AttentionDims attention_shape(const Tensor& q, const Tensor& k, const AttentionMask& mask, const char* op);
AttentionDims attention_forward(const Context& ctx, const Tensor& out, const Tensor& lse, const Tensor& q,
                                const Tensor& k, const Tensor& v, const AttentionMask& mask);
AttentionDims attention_backward(const Context& ctx, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                 const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& out, const Tensor& lse, const AttentionMask& mask);
int64_t swiglu_forward(const Context& ctx, const Tensor& out, const Tensor& gate, const Tensor& up);
int64_t swiglu_backward(const Context& ctx, const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                        const Tensor& gate, const Tensor& up);
// q, k, v [T, H, Dh] act and qkv [T, H·3·Dh] act (the sizes from q). `op` is split_qkv or merge_qkv.
QkvDims fused_qkv(const Context& ctx, const Tensor& qkv, const Tensor& q, const Tensor& k, const Tensor& v,
                  const char* op);
// out, x [T,F] act; returns the element count.
int64_t gelu_forward(const Context& ctx, const Tensor& out, const Tensor& x);
int64_t gelu_backward(const Context& ctx, const Tensor& dx, const Tensor& dout, const Tensor& x);
int64_t add(const Context& ctx, const Tensor& out, const Tensor& a, const Tensor& b);
RowsCols cross_entropy(const Context& ctx, const Tensor& logits, const Tensor& losses, const Tensor& targets);
RowsCols argmax_rows(const Context& ctx, const Tensor& out, const Tensor& logits);
int64_t sum_squares(const Context& ctx, const Tensor& x);
int64_t scale(const Context& ctx, const Tensor& x);
// When the policy's weight and gradient dtypes agree, param is its own master and `master` must be empty; otherwise
// param is a weight-dtype working copy with an f32 master (required) or itself f32 (master optional).
// grad, m, v: grad dtype. Returns the element count.
int64_t adamw_step(const Context& ctx, const Tensor& param, const Tensor& master, const Tensor& grad, const Tensor& m,
                   const Tensor& v, const AdamWStep& step);

}  // namespace ll::op_checks
