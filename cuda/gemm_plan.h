// Row-major matrix products expressed for cuBLASLt (column-major), plus the keys under which cuBLASLt
// descriptors and heuristic results are cached. Plain C++: tested on CPU by running the column-major plan
// through a naive reference product (tests/test_cuda_plan.cpp).
//
// A row-major matrix X (r × c, leading dimension ld) read as column-major is Xᵀ (c × r, same ld). So the
// row-major C[M,N] = op(A)·op(B) is the column-major Cᵀ[N,M] = op(B)ᵀ·op(A)ᵀ: cuBLASLt's first operand is B,
// its second A, with m' = N, n' = M, k' = K.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace ll::cuda_plan {

// C[m,n] = alpha·op(A)·op(B) + beta·C, row-major; op(X) = Xᵀ when trans_X. A is m×k after op, B is k×n.
struct RowMajorGemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
};

// One column-major operand as cuBLASLt sees it: a rows × cols matrix with leading dimension ld, used
// transposed or not.
struct ColMajorOperand {
  bool transposed;
  int64_t rows, cols, ld;
};

struct ColMajorGemm {
  int64_t m, n, k;           // D[m,n] = op(first)[m,k] · op(second)[k,n]
  ColMajorOperand first;     // the row-major B
  ColMajorOperand second;    // the row-major A
  int64_t c_rows, c_cols, ldc;
};

// Throws ll::Error when a leading dimension is too small for its matrix.
ColMajorGemm to_column_major(const RowMajorGemm& g);

// Largest power of two (capped at 256) that divides the address; 256 for null.
int pointer_alignment(const void* p);

// Everything that selects a cuBLASLt algorithm: shapes, layouts, dtypes and the operand alignments.
struct GemmKey {
  bool trans_a, trans_b;
  int64_t m, n, k, lda, ldb, ldc;
  DType ab_type, c_type;
  int align_a, align_b, align_c;
  bool operator<(const GemmKey& o) const;
  std::string str() const;
};

// GEMM FLOPs (2·m·n·k) for benchmarks.
inline double gemm_flops(int64_t m, int64_t n, int64_t k) { return 2.0 * double(m) * double(n) * double(k); }

}  // namespace ll::cuda_plan
