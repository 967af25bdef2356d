#include "cuda/op_checks.h"

#include <cmath>
#include <utility>

namespace ll::cuda_checks {

void expect_aligned(const Tensor& t, size_t bytes, const char* op, const char* arg) {
  LL_ASSERT(reinterpret_cast<uintptr_t>(t.data) % bytes == 0, op, ": argument `", arg, "` must be ", bytes,
           "-byte aligned for vector loads; it starts at ", t.data,
           " (views from Tensor::slice_rows keep the alignment when row sizes are multiples of 16 bytes)");
}

int64_t copy(const Tensor& dst, const Tensor& src) {
  op_checks::expect_device(kContext, dst, "copy", "dst");
  op_checks::expect_device(kContext, src, "copy", "src");
  return op_checks::copy(dst, src);
}

op_checks::RowsCols rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w,
                                    double eps) {
  const op_checks::RowsCols d = op_checks::rmsnorm_forward(kContext, out, rstd, x, w);
  LL_CHECK(eps >= 0 && std::isfinite(eps), "rmsnorm_forward: eps must be finite and >= 0, got ", eps);
  return d;
}

op_checks::RopeDims rope(const Tensor& x, const Tensor& positions, const RopeParams& p, const char* op) {
  LL_CHECK(x.ndim == 3, op, ": x must be [T, heads, head_dim], got ", x.shape_str());
  const op_checks::RopeDims d = op_checks::rope(kContext, x, positions, p, op);
  LL_CHECK(d.head_dim <= 2 * cuda_plan::kMaxHeadDim, op, ": head dimension ", d.head_dim, " exceeds the supported ",
           2 * cuda_plan::kMaxHeadDim);
  return d;
}

op_checks::RowsCols cross_entropy(const Tensor& logits, const Tensor& losses, const Tensor& targets) {
  const op_checks::RowsCols d = op_checks::cross_entropy(kContext, logits, losses, targets);
  LL_CHECK(d.cols <= (int64_t(1) << 31) - 1, "cross_entropy: vocabulary of ", d.cols, " does not fit int32 targets");
  return d;
}

int64_t adamw_step(const Tensor& param, const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                   const AdamWStep& st) {
  const int64_t n = op_checks::adamw_step(kContext, param, master, grad, m, v, st);
  LL_CHECK(st.beta1 >= 0 && st.beta1 < 1 && st.beta2 >= 0 && st.beta2 < 1, "adamw_step: betas must be in [0, 1), got ",
           st.beta1, ", ", st.beta2);
  return n;
}

namespace {

// The kernels' limits, then the path: the heuristic's choice, or the forced one when it can run this call.
AttentionProblem attention_problem(const op_checks::AttentionDims& d, const AttentionMask& mask, const char* op,
                                   bool backward, cuda_plan::AttentionPath override_path) {
  AttentionProblem s{d, cuda_plan::AttentionPath::Auto};
  LL_CHECK(s.head_dim >= 1 && s.head_dim <= cuda_plan::kMaxHeadDim, op, ": head dimension ", s.head_dim,
           " is outside the supported range [1, ", cuda_plan::kMaxHeadDim, "]");
  LL_CHECK(s.batch * s.heads <= (int64_t(1) << 31) - 1 && s.seq_len <= (int64_t(1) << 31) - 1, op,
           ": batch × heads and the sequence length must fit the launch grid");
  if (override_path == cuda_plan::AttentionPath::Auto) {
    s.path = cuda_plan::choose_attention_path(s.seq_len, s.kv_len, s.head_dim, mask, backward);
  } else {
    LL_CHECK(cuda_plan::attention_path_supports(override_path, s.seq_len, s.head_dim, mask, backward), op,
             ": the forced attention path `", cuda_plan::attention_path_name(override_path),
             "` cannot run this call (L=", s.seq_len, ", Dh=", s.head_dim, ", ", backward ? "backward" : "forward", ")");
    s.path = override_path;
  }
  if (backward && s.path == cuda_plan::AttentionPath::Decode) s.path = cuda_plan::AttentionPath::Generic;
  return s;
}

}  // namespace

AttentionProblem attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const AttentionMask& mask, cuda_plan::AttentionPath override_path) {
  const char* op = "attention_forward";
  const op_checks::AttentionDims d = op_checks::attention_forward(kContext, out, lse, q, k, v, mask);
  const AttentionProblem s = attention_problem(d, mask, op, false, override_path);
  if (s.path == cuda_plan::AttentionPath::TensorCore)
    for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "out"}}) expect_aligned(*t, 16, op, name);
  return s;
}

AttentionProblem attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                                    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                    const Tensor& lse, const AttentionMask& mask,
                                    cuda_plan::AttentionPath override_path) {
  const char* op = "attention_backward";
  const op_checks::AttentionDims d =
      op_checks::attention_backward(kContext, dq, dk, dv, dout, q, k, v, out, lse, mask);
  const AttentionProblem s = attention_problem(d, mask, op, true, override_path);
  if (s.path == cuda_plan::AttentionPath::TensorCore)
    for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&dout, "dout"}, {&dq, "dq"}, {&dk, "dk"},
                           {&dv, "dv"}})
      expect_aligned(*t, 16, op, name);
  return s;
}

}  // namespace ll::cuda_checks
