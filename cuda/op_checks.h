// The CUDA-specific part of the argument validation, on top of the checks every backend shares (src/op_checks.h).
// Plain C++ (no CUDA headers): it runs, and is unit-tested, on machines without a GPU or nvcc
// (tests/test_cuda_plan.cpp builds tensors that claim to live on the device and never dereferences them).
//
// The CUDA precision policy: weights bf16, activations bf16, statistics f32, gradients f32. The backend validates
// an op with op_checks::OP(kContext, ...) unless a function below adds what the CUDA kernels need on top: the
// attention kernel path and the tensor-core path's alignment, and the kernels' size and parameter limits.
// Each check returns the sizes the launcher needs; any violation throws ll::Error naming the op, the argument,
// what it is and what was expected.
#pragma once
#include <cstdint>

#include "cuda/attention_plan.h"
#include "core/op_checks.h"

namespace ll::cuda_checks {

constexpr DType kWeight = DType::BF16;
constexpr DType kAct = DType::BF16;
constexpr DType kStat = DType::F32;
constexpr DType kGrad = DType::F32;

// The shared checks' context: device memory, the CUDA policy.
inline constexpr op_checks::Context kContext{Device::CUDA, {kWeight, kAct, kStat, kGrad}, "cuda"};

inline DTypePolicy policy() { return kContext.dtypes; }

// The device pointer of `t` is a multiple of `bytes` (vector loads, cp.async).
void expect_aligned(const Tensor& t, size_t bytes, const char* op, const char* arg);

// ---- the shared checks plus the CUDA kernels' requirements ----------------------------------------------------------
// copy: both on the device, same dtype and element count.
int64_t copy(const Tensor& dst, const Tensor& src);
// + eps finite and >= 0.
op_checks::RowsCols rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w,
                                    double eps);
// + x of rank 3, head dimension within the kernel's limit.
op_checks::RopeDims rope(const Tensor& x, const Tensor& positions, const RopeParams& p, const char* op);
// + a vocabulary that fits int32 targets.
op_checks::RowsCols cross_entropy(const Tensor& logits, const Tensor& losses, const Tensor& targets);
// + betas in [0, 1).
int64_t adamw_step(const Tensor& param, const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                   const AdamWStep& step);

// The attention problem after validation, with the kernel path chosen (or the override, checked): head dimension
// and launch grid within the kernels' limits, 16-byte aligned operands on the tensor-core path.
struct AttentionProblem : op_checks::AttentionDims {
  cuda_plan::AttentionPath path;
};
AttentionProblem attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const AttentionMask& mask, cuda_plan::AttentionPath override_path);
AttentionProblem attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                                    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                    const Tensor& lse, const AttentionMask& mask,
                                    cuda_plan::AttentionPath override_path);

}  // namespace ll::cuda_checks
