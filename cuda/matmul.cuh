// Matrix products through cuBLASLt: bf16 operands, f32 compute and scale, bf16 or f32 output; row-major at the
// interface (cuda_plan::to_column_major does the translation). Matmul descriptors, layouts and the heuristic's
// algorithm are cached per GemmKey (shape, layouts, dtypes, pointer alignments); one workspace serves every call.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>

#include "cuda/common.cuh"
#include "cuda/gemm_plan.h"

// Checked cuBLAS/cuBLASLt call: a failure throws ll::Error naming the statement and the status.
#define LL_CUBLAS_CHECK(stmt)                                                                            \
  do {                                                                                                   \
    const cublasStatus_t ll_cublas_status_ = (stmt);                                                     \
    if (ll_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                                      \
      ::ll::fail("cuBLAS call `", #stmt, "` failed at ", __FILE__, ":", __LINE__, ": ",                 \
                 ::ll::cuda::cublas_status_name(ll_cublas_status_), " (", int(ll_cublas_status_), ")"); \
  } while (0)

namespace ll::cuda {

const char* cublas_status_name(cublasStatus_t s);

class GemmRunner {
 public:
  GemmRunner();
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  void set_workspace(void* ptr, size_t bytes) {
    workspace_ = ptr;
    workspace_bytes_ = bytes;
  }

  // Row-major C[m,n] = alpha·op(A)·op(B) + beta·C; A, B bf16; C of c_type (bf16 or f32), updated in place.
  // k == 0 gives C = beta·C (beta must be 0 or 1 then).
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const bf16* a, int64_t lda,
            const bf16* b, int64_t ldb, float beta, void* c, DType c_type, int64_t ldc, cudaStream_t stream);

  size_t cached_plans() const { return cache_.size(); }

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t first = nullptr, second = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  const Plan& plan_for(const cuda_plan::GemmKey& key);
  static void destroy(Plan& p);

  cublasLtHandle_t handle_ = nullptr;
  std::map<cuda_plan::GemmKey, Plan> cache_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace ll::cuda
