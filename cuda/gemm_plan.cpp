#include "cuda/gemm_plan.h"

#include <sstream>
#include <tuple>

#include "util/error.h"

namespace ll::cuda_plan {

ColMajorGemm to_column_major(const RowMajorGemm& g) {
  LL_ASSERT(g.m >= 0 && g.n >= 0 && g.k >= 0, "gemm: negative size ", g.m, "×", g.n, "×", g.k);
  // Stored row-major shapes.
  const int64_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
  const int64_t b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
  LL_ASSERT(g.lda >= (a_cols > 0 ? a_cols : 1), "gemm: lda ", g.lda, " < ", a_cols, " columns of A");
  LL_ASSERT(g.ldb >= (b_cols > 0 ? b_cols : 1), "gemm: ldb ", g.ldb, " < ", b_cols, " columns of B");
  LL_ASSERT(g.ldc >= (g.n > 0 ? g.n : 1), "gemm: ldc ", g.ldc, " < ", g.n, " columns of C");
  ColMajorGemm c;
  c.m = g.n;
  c.n = g.m;
  c.k = g.k;
  // Column-major view of a stored row-major r × c matrix: c × r. op(B)ᵀ is the view itself when B is not
  // transposed, and the view transposed when it is; likewise for A.
  c.first = {g.trans_b, b_cols, b_rows, g.ldb};
  c.second = {g.trans_a, a_cols, a_rows, g.lda};
  c.c_rows = g.n;
  c.c_cols = g.m;
  c.ldc = g.ldc;
  return c;
}

int pointer_alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % uintptr_t(align) != 0) align /= 2;
  return align;
}

bool GemmKey::operator<(const GemmKey& o) const {
  return std::tie(trans_a, trans_b, m, n, k, lda, ldb, ldc, ab_type, c_type, align_a, align_b, align_c) <
         std::tie(o.trans_a, o.trans_b, o.m, o.n, o.k, o.lda, o.ldb, o.ldc, o.ab_type, o.c_type, o.align_a, o.align_b,
                  o.align_c);
}

std::string GemmKey::str() const {
  std::ostringstream os;
  os << (trans_a ? "T" : "N") << (trans_b ? "T" : "N") << " m=" << m << " n=" << n << " k=" << k << " ld=" << lda
     << "/" << ldb << "/" << ldc << " " << dtype_name(ab_type) << "->" << dtype_name(c_type) << " align=" << align_a
     << "/" << align_b << "/" << align_c;
  return os.str();
}

}  // namespace ll::cuda_plan
