#include "cuda/matmul.cuh"

namespace ll::cuda {

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    default: fail("gemm: unsupported output dtype ", dtype_name(t));
  }
}

}  // namespace

GemmRunner::GemmRunner() { LL_CUBLAS_CHECK(cublasLtCreate(&handle_)); }

// Destroys whatever descriptors a plan holds (a plan left half-built by a failed creation holds nulls).
void GemmRunner::destroy(Plan& p) {
  if (p.first) cublasLtMatrixLayoutDestroy(p.first);
  if (p.second) cublasLtMatrixLayoutDestroy(p.second);
  if (p.c) cublasLtMatrixLayoutDestroy(p.c);
  if (p.op) cublasLtMatmulDescDestroy(p.op);
  p = Plan{};
}

GemmRunner::~GemmRunner() {
  for (auto& [key, p] : cache_) destroy(p);
  if (handle_) cublasLtDestroy(handle_);
}

const GemmRunner::Plan& GemmRunner::plan_for(const cuda_plan::GemmKey& key) {
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  const cuda_plan::ColMajorGemm cm = cuda_plan::to_column_major(
      {key.trans_a, key.trans_b, key.m, key.n, key.k, key.lda, key.ldb, key.ldc});
  // Every descriptor created here is destroyed again if any later step throws (checked calls throw ll::Error).
  Plan p;
  struct PlanGuard {
    Plan* plan;
    ~PlanGuard() {
      if (plan) destroy(*plan);
    }
  } plan_guard{&p};
  LL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_first = cm.first.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = cm.second.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  LL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
  LL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
  LL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.first, CUDA_R_16BF, uint64_t(cm.first.rows), uint64_t(cm.first.cols),
                                             cm.first.ld));
  LL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.second, CUDA_R_16BF, uint64_t(cm.second.rows),
                                             uint64_t(cm.second.cols), cm.second.ld));
  LL_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p.c, cuda_type(key.c_type), uint64_t(cm.c_rows), uint64_t(cm.c_cols), cm.ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  LL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  struct PreferenceGuard {
    cublasLtMatmulPreference_t pref;
    ~PreferenceGuard() { cublasLtMatmulPreferenceDestroy(pref); }
  } pref_guard{pref};
  const uint64_t ws = workspace_bytes_;
  // cuBLASLt's first operand is the row-major B, its second the row-major A.
  const uint32_t align_first = uint32_t(key.align_b), align_second = uint32_t(key.align_a),
                 align_c = uint32_t(key.align_c);
  LL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  LL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_first,
                                                       sizeof(align_first)));
  LL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_second,
                                                       sizeof(align_second)));
  LL_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
  LL_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.first, p.second, p.c, p.c, pref, 1, &result, &found);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0 || result.state != CUBLAS_STATUS_SUCCESS)
    fail("cuBLASLt has no algorithm for the product ", key.str(), " (",
         cublas_status_name(st != CUBLAS_STATUS_SUCCESS ? st : result.state), ")");
  p.algo = result.algo;
  const Plan& cached = cache_.emplace(key, p).first->second;
  plan_guard.plan = nullptr;  // the cache owns the descriptors now
  return cached;
}

void GemmRunner::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const bf16* a,
                      int64_t lda, const bf16* b, int64_t ldb, float beta, void* c, DType c_type, int64_t ldc,
                      cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // the empty sum: C = beta·C
    LL_ASSERT(beta == 0.f || beta == 1.f, "gemm: k == 0 with beta ", beta, " is not supported");
    if (beta == 0.f) {
      const size_t row_bytes = size_t(n) * dtype_size(c_type), pitch = size_t(ldc) * dtype_size(c_type);
      LL_CUDA_CHECK(cudaMemset2DAsync(c, pitch, 0, row_bytes, size_t(m), stream));
    }
    return;
  }
  const cuda_plan::GemmKey key{trans_a, trans_b, m, n, k, lda, ldb, ldc, DType::BF16, c_type,
                               cuda_plan::pointer_alignment(a), cuda_plan::pointer_alignment(b),
                               cuda_plan::pointer_alignment(c)};
  const Plan& p = plan_for(key);
  LL_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, b, p.first, a, p.second, &beta, c, p.c, c, p.c, &p.algo,
                                 workspace_, workspace_bytes_, stream));
}

}  // namespace ll::cuda
