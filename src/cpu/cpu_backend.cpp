// CpuBackend: validates every op's arguments at the API boundary, then calls the reference kernels.
#include "cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>

#include "cpu/kernels.h"
#include "tensor_host.h"

namespace ll {

namespace {

// Checks that `t` is a CPU tensor of dtype `dt` whose shape is exactly `dims`.
void expect(const Tensor& t, DType dt, std::initializer_list<int64_t> dims, const char* op, const char* arg) {
  LL_CHECK(!t.empty(), op, ": argument `", arg, "` is empty");
  LL_CHECK(t.device == Device::CPU, op, ": argument `", arg, "` lives on ", device_name(t.device),
           ", the cpu backend needs host memory");
  LL_CHECK(t.dtype == dt, op, ": argument `", arg, "` has dtype ", dtype_name(t.dtype), ", expected ", dtype_name(dt));
  bool same = int(dims.size()) == t.ndim;
  int i = 0;
  for (int64_t d : dims) same = same && t.shape[i++] == d;
  if (!same) {
    std::string want = "[";
    i = 0;
    for (int64_t d : dims) want += (i++ ? "," : "") + std::to_string(d);
    fail(op, ": argument `", arg, "` has shape ", t.shape_str(), ", expected ", want, "]");
  }
}

// Matrix view check: `t` must be a 2-D-compatible tensor with `rows` rows and `cols` columns (any rank).
void expect_matrix(const Tensor& t, DType dt, int64_t rows, int64_t cols, const char* op, const char* arg) {
  LL_CHECK(!t.empty(), op, ": argument `", arg, "` is empty");
  LL_CHECK(t.device == Device::CPU && t.dtype == dt, op, ": argument `", arg, "` must be a cpu ", dtype_name(dt),
           " tensor, got ", device_name(t.device), " ", dtype_name(t.dtype));
  LL_CHECK(t.rows() == rows && t.cols() == cols, op, ": argument `", arg, "` is ", t.shape_str(), ", expected ", rows,
           " rows × ", cols, " columns");
}

void check_token_ids(const Tensor& ids, int64_t vocab, const char* op) {
  const int32_t* p = ids.ptr<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    LL_CHECK(p[i] >= 0 && p[i] < vocab, op, ": token id ", p[i], " at row ", i, " is outside the vocabulary [0, ",
             vocab, ")");
}

}  // namespace

template <typename T>
std::string CpuBackend<T>::name() const {
  return dtype_of<T>() == DType::F32 ? "cpu" : "cpu-f64";
}

template <typename T>
DTypePolicy CpuBackend<T>::dtypes() const {
  return {dtype_of<T>(), dtype_of<T>(), dtype_of<T>(), dtype_of<T>()};
}

// ---- memory -----------------------------------------------------------------------------------------------
template <typename T>
void* CpuBackend<T>::allocate(size_t bytes) {
  constexpr size_t kAlign = 256;
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  LL_CHECK(p != nullptr, "cpu backend: out of host memory allocating ", bytes, " bytes");
  return p;
}
template <typename T>
void CpuBackend<T>::release(void* ptr) {
  std::free(ptr);
}
template <typename T>
void CpuBackend<T>::copy_from_host(Tensor dst, const void* host_src) {
  if (dst.nbytes()) std::memcpy(dst.data, host_src, dst.nbytes());
}
template <typename T>
void CpuBackend<T>::copy_to_host(void* host_dst, const Tensor& src) {
  if (src.nbytes()) std::memcpy(host_dst, src.data, src.nbytes());
}
template <typename T>
void CpuBackend<T>::copy(Tensor dst, const Tensor& src) {
  LL_CHECK(dst.dtype == src.dtype && dst.numel() == src.numel(), "copy: destination ", dtype_name(dst.dtype),
           dst.shape_str(), " does not match source ", dtype_name(src.dtype), src.shape_str());
  if (dst.nbytes() && dst.data != src.data) std::memmove(dst.data, src.data, dst.nbytes());
}
template <typename T>
void CpuBackend<T>::convert(Tensor dst, const Tensor& src) {
  LL_CHECK(!dst.empty() && !src.empty(), "convert: empty tensor");
  LL_CHECK(dst.device == Device::CPU && src.device == Device::CPU, "convert: the cpu backend needs host tensors, got ",
           device_name(src.device), " -> ", device_name(dst.device));
  LL_CHECK(dst.numel() == src.numel(), "convert: destination ", dst.shape_str(), " and source ", src.shape_str(),
           " differ in element count");
  convert_values(src.data, src.dtype, dst.data, dst.dtype, size_t(src.numel()));
}
template <typename T>
void CpuBackend<T>::zero(Tensor t) {
  if (t.nbytes()) std::memset(t.data, 0, t.nbytes());
}

// ---- embedding ----------------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::embedding_forward(Tensor out, const Tensor& ids, const Tensor& table) {
  const DType dt = dtype_of<T>();
  expect_matrix(table, dt, table.rows(), table.cols(), "embedding_forward", "table");
  expect(ids, DType::I32, {ids.numel()}, "embedding_forward", "ids");
  expect_matrix(out, dt, ids.numel(), table.cols(), "embedding_forward", "out");
  check_token_ids(ids, table.rows(), "embedding_forward");
  cpu::embedding_forward(out.ptr<T>(), ids.ptr<int32_t>(), table.ptr<T>(), ids.numel(), table.cols());
}
template <typename T>
void CpuBackend<T>::embedding_backward(Tensor dtable, const Tensor& ids, const Tensor& dout) {
  const DType dt = dtype_of<T>();
  expect_matrix(dtable, dt, dtable.rows(), dtable.cols(), "embedding_backward", "dtable");
  expect(ids, DType::I32, {ids.numel()}, "embedding_backward", "ids");
  expect_matrix(dout, dt, ids.numel(), dtable.cols(), "embedding_backward", "dout");
  check_token_ids(ids, dtable.rows(), "embedding_backward");
  cpu::embedding_backward(dtable.ptr<T>(), ids.ptr<int32_t>(), dout.ptr<T>(), ids.numel(), dtable.cols());
}

// ---- RMSNorm -------------------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& w, double eps) {
  const DType dt = dtype_of<T>();
  const int64_t rows = x.rows(), dim = x.cols();
  expect_matrix(x, dt, rows, dim, "rmsnorm_forward", "x");
  expect(w, dt, {dim}, "rmsnorm_forward", "w");
  expect_matrix(out, dt, rows, dim, "rmsnorm_forward", "out");
  expect(rstd, dt, {rows}, "rmsnorm_forward", "rstd");
  cpu::rmsnorm_forward(out.ptr<T>(), rstd.ptr<T>(), x.ptr<T>(), w.ptr<T>(), rows, dim, eps);
}
template <typename T>
void CpuBackend<T>::rmsnorm_backward(Tensor dx, Tensor dw, const Tensor& dout, const Tensor& x, const Tensor& w,
                                     const Tensor& rstd, bool accumulate_dx) {
  const DType dt = dtype_of<T>();
  const int64_t rows = x.rows(), dim = x.cols();
  expect_matrix(x, dt, rows, dim, "rmsnorm_backward", "x");
  expect_matrix(dout, dt, rows, dim, "rmsnorm_backward", "dout");
  expect(w, dt, {dim}, "rmsnorm_backward", "w");
  expect(rstd, dt, {rows}, "rmsnorm_backward", "rstd");
  if (!dx.empty()) expect_matrix(dx, dt, rows, dim, "rmsnorm_backward", "dx");
  if (!dw.empty()) expect(dw, dt, {dim}, "rmsnorm_backward", "dw");
  cpu::rmsnorm_backward(dx.empty() ? nullptr : dx.ptr<T>(), dw.empty() ? nullptr : dw.ptr<T>(), dout.ptr<T>(),
                        x.ptr<T>(), w.ptr<T>(), rstd.ptr<T>(), rows, dim, accumulate_dx);
}

// ---- linear and LoRA ----------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::linear_forward(Tensor y, const Tensor& x, const Tensor& w, bool accumulate) {
  const DType dt = dtype_of<T>();
  const int64_t rows = x.rows(), k = x.cols(), n = w.rows();
  expect(w, dt, {n, k}, "linear_forward", "w");
  expect_matrix(y, dt, rows, n, "linear_forward", "y");
  expect_matrix(x, dt, rows, k, "linear_forward", "x");
  cpu::gemm<T>(false, true, rows, n, k, T(1), x.ptr<T>(), k, w.ptr<T>(), k, accumulate ? T(1) : T(0), y.ptr<T>(), n);
}
template <typename T>
void CpuBackend<T>::linear_backward(Tensor dx, Tensor dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                                    bool accumulate_dx) {
  const DType dt = dtype_of<T>();
  const int64_t rows = x.rows(), k = x.cols(), n = w.rows();
  expect(w, dt, {n, k}, "linear_backward", "w");
  expect_matrix(x, dt, rows, k, "linear_backward", "x");
  expect_matrix(dy, dt, rows, n, "linear_backward", "dy");
  if (!dx.empty()) {
    expect_matrix(dx, dt, rows, k, "linear_backward", "dx");
    cpu::gemm<T>(false, false, rows, k, n, T(1), dy.ptr<T>(), n, w.ptr<T>(), k, accumulate_dx ? T(1) : T(0),
                 dx.ptr<T>(), k);
  }
  if (!dw.empty()) {
    expect(dw, dt, {n, k}, "linear_backward", "dw");
    cpu::gemm<T>(true, false, n, k, rows, T(1), dy.ptr<T>(), n, x.ptr<T>(), k, T(1), dw.ptr<T>(), k);
  }
}
template <typename T>
void CpuBackend<T>::lora_forward(Tensor y, Tensor xa, const Tensor& x, const Tensor& x_lora, const Tensor& w,
                                 const Tensor& a, const Tensor& b, double scale) {
  const DType dt = dtype_of<T>();
  const int64_t rows = x.rows(), k = x.cols(), n = w.rows(), r = a.rows();
  expect(w, dt, {n, k}, "lora_forward", "w");
  expect(a, dt, {r, k}, "lora_forward", "a");
  expect(b, dt, {n, r}, "lora_forward", "b");
  expect_matrix(x, dt, rows, k, "lora_forward", "x");
  expect_matrix(x_lora, dt, rows, k, "lora_forward", "x_lora");
  expect_matrix(y, dt, rows, n, "lora_forward", "y");
  expect_matrix(xa, dt, rows, r, "lora_forward", "xa");
  cpu::gemm<T>(false, true, rows, n, k, T(1), x.ptr<T>(), k, w.ptr<T>(), k, T(0), y.ptr<T>(), n);
  cpu::gemm<T>(false, true, rows, r, k, T(1), x_lora.ptr<T>(), k, a.ptr<T>(), k, T(0), xa.ptr<T>(), r);
  cpu::gemm<T>(false, true, rows, n, r, T(scale), xa.ptr<T>(), r, b.ptr<T>(), r, T(1), y.ptr<T>(), n);
}
template <typename T>
void CpuBackend<T>::lora_backward(Tensor dx, Tensor dx_lora, Tensor dw, Tensor da, Tensor db, Tensor dxa,
                                  const Tensor& dy, const Tensor& x, const Tensor& x_lora, const Tensor& xa,
                                  const Tensor& w, const Tensor& a, const Tensor& b, double scale, bool accumulate_dx) {
  const DType dt = dtype_of<T>();
  const int64_t rows = x.rows(), k = x.cols(), n = w.rows(), r = a.rows();
  expect(w, dt, {n, k}, "lora_backward", "w");
  expect(a, dt, {r, k}, "lora_backward", "a");
  expect(b, dt, {n, r}, "lora_backward", "b");
  expect(da, dt, {r, k}, "lora_backward", "da");
  expect(db, dt, {n, r}, "lora_backward", "db");
  expect_matrix(x, dt, rows, k, "lora_backward", "x");
  expect_matrix(x_lora, dt, rows, k, "lora_backward", "x_lora");
  expect_matrix(xa, dt, rows, r, "lora_backward", "xa");
  expect_matrix(dxa, dt, rows, r, "lora_backward", "dxa");
  expect_matrix(dy, dt, rows, n, "lora_backward", "dy");
  // dB += s·dyᵀ·xa;  dxa = s·dy·B;  dA += dxaᵀ·x_lora
  cpu::gemm<T>(true, false, n, r, rows, T(scale), dy.ptr<T>(), n, xa.ptr<T>(), r, T(1), db.ptr<T>(), r);
  cpu::gemm<T>(false, false, rows, r, n, T(scale), dy.ptr<T>(), n, b.ptr<T>(), r, T(0), dxa.ptr<T>(), r);
  cpu::gemm<T>(true, false, r, k, rows, T(1), dxa.ptr<T>(), r, x_lora.ptr<T>(), k, T(1), da.ptr<T>(), k);
  if (!dx.empty()) {
    expect_matrix(dx, dt, rows, k, "lora_backward", "dx");
    cpu::gemm<T>(false, false, rows, k, n, T(1), dy.ptr<T>(), n, w.ptr<T>(), k, accumulate_dx ? T(1) : T(0),
                 dx.ptr<T>(), k);
  }
  if (dx_lora.empty()) {
    LL_CHECK(!dx.empty(), "lora_backward: the adapter-input gradient needs dx or dx_lora");
    cpu::gemm<T>(false, false, rows, k, r, T(1), dxa.ptr<T>(), r, a.ptr<T>(), k, T(1), dx.ptr<T>(), k);
  } else {
    expect_matrix(dx_lora, dt, rows, k, "lora_backward", "dx_lora");
    cpu::gemm<T>(false, false, rows, k, r, T(1), dxa.ptr<T>(), r, a.ptr<T>(), k, T(0), dx_lora.ptr<T>(), k);
  }
  if (!dw.empty()) {
    expect(dw, dt, {n, k}, "lora_backward", "dw");
    cpu::gemm<T>(true, false, n, k, rows, T(1), dy.ptr<T>(), n, x.ptr<T>(), k, T(1), dw.ptr<T>(), k);
  }
}

template <typename T>
void CpuBackend<T>::dropout(Tensor out, const Tensor& x, double p, uint64_t seed) {
  const DType dt = dtype_of<T>();
  expect_matrix(x, dt, x.rows(), x.cols(), "dropout", "x");
  expect_matrix(out, dt, x.rows(), x.cols(), "dropout", "out");
  LL_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got ", p);
  cpu::dropout(out.ptr<T>(), x.ptr<T>(), x.numel(), p, seed);
}

// ---- RoPE ------------------------------------------------------------------------------------------------------
namespace {
template <typename T>
void rope_checked(Tensor x, const Tensor& positions, const RopeParams& p, int sign, const char* op) {
  expect(x, dtype_of<T>(), {x.dim(0), x.dim(1), x.dim(2)}, op, "x");
  expect(positions, DType::I32, {x.dim(0)}, op, "positions");
  LL_CHECK(x.dim(2) % 2 == 0, op, ": head dimension ", x.dim(2), " must be even for rotate_half");
  LL_CHECK(p.factor > 0 && p.theta > 0, op, ": rope theta (", p.theta, ") and factor (", p.factor, ") must be > 0");
  cpu::rope_rotate(x.ptr<T>(), positions.ptr<int32_t>(), x.dim(0), x.dim(1), x.dim(2), p.theta, p.factor, sign);
}
}  // namespace
template <typename T>
void CpuBackend<T>::rope_forward(Tensor x, const Tensor& positions, const RopeParams& p) {
  rope_checked<T>(x, positions, p, +1, "rope_forward");
}
template <typename T>
void CpuBackend<T>::rope_backward(Tensor dx, const Tensor& positions, const RopeParams& p) {
  rope_checked<T>(dx, positions, p, -1, "rope_backward");
}

// ---- attention -------------------------------------------------------------------------------------------------
namespace {
cpu::AttentionShape attention_shape(const Tensor& q, const Tensor& k, const AttentionMask& mask, const char* op) {
  LL_CHECK(q.ndim == 4 && k.ndim == 4, op, ": q and k must be [B,L,H,Dh], got ", q.shape_str(), " and ",
           k.shape_str());
  const cpu::AttentionShape s{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3), k.dim(1)};
  LL_CHECK(s.kv_heads > 0 && s.heads % s.kv_heads == 0, op, ": query heads (", s.heads,
           ") must be a multiple of KV heads (", s.kv_heads, ")");
  LL_CHECK(s.kv_len >= s.seq_len, op, ": ", s.kv_len, " keys for ", s.seq_len,
           " queries; queries are the last positions of the keys");
  if (mask.kind != MaskKind::Causal) {
    LL_CHECK(s.kv_len == s.seq_len, op, ": S2-Attn is a training mask; it needs as many queries as keys");
    LL_CHECK(mask.group >= 2, op, ": S2 group size must be >= 2, got ", mask.group);
    LL_CHECK(s.heads % 2 == 0, op, ": S2 needs an even number of query heads, got ", s.heads);
  }
  if (mask.kind == MaskKind::S2Roll)
    LL_CHECK(s.seq_len % mask.group == 0 && mask.group % 2 == 0, op, ": the roll variant needs L (", s.seq_len,
             ") divisible by an even group size (", mask.group, ")");
  return s;
}
}  // namespace
template <typename T>
void CpuBackend<T>::attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                      const AttentionMask& mask) {
  const DType dt = dtype_of<T>();
  const auto s = attention_shape(q, k, mask, "attention_forward");
  expect(q, dt, {s.batch, s.seq_len, s.heads, s.head_dim}, "attention_forward", "q");
  expect(k, dt, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, "attention_forward", "k");
  expect(v, dt, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, "attention_forward", "v");
  expect(out, dt, {s.batch, s.seq_len, s.heads, s.head_dim}, "attention_forward", "out");
  expect(lse, dt, {s.batch, s.heads, s.seq_len}, "attention_forward", "lse");
  cpu::attention_forward(out.ptr<T>(), lse.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), s, mask);
}
template <typename T>
void CpuBackend<T>::attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                                       const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                                       const AttentionMask& mask) {
  const DType dt = dtype_of<T>();
  const auto s = attention_shape(q, k, mask, "attention_backward");
  const char* op = "attention_backward";
  expect(q, dt, {s.batch, s.seq_len, s.heads, s.head_dim}, op, "q");
  expect(k, dt, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, "k");
  expect(v, dt, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, "v");
  expect(out, dt, {s.batch, s.seq_len, s.heads, s.head_dim}, op, "out");
  expect(dout, dt, {s.batch, s.seq_len, s.heads, s.head_dim}, op, "dout");
  expect(lse, dt, {s.batch, s.heads, s.seq_len}, op, "lse");
  expect(dq, dt, {s.batch, s.seq_len, s.heads, s.head_dim}, op, "dq");
  expect(dk, dt, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, "dk");
  expect(dv, dt, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, "dv");
  cpu::attention_backward(dq.ptr<T>(), dk.ptr<T>(), dv.ptr<T>(), dout.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(),
                          out.ptr<T>(), lse.ptr<T>(), s, mask);
}

// ---- SwiGLU, add ---------------------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::swiglu_forward(Tensor out, const Tensor& gate, const Tensor& up) {
  const DType dt = dtype_of<T>();
  expect_matrix(gate, dt, gate.rows(), gate.cols(), "swiglu_forward", "gate");
  expect_matrix(up, dt, gate.rows(), gate.cols(), "swiglu_forward", "up");
  expect_matrix(out, dt, gate.rows(), gate.cols(), "swiglu_forward", "out");
  cpu::swiglu_forward(out.ptr<T>(), gate.ptr<T>(), up.ptr<T>(), gate.numel());
}
template <typename T>
void CpuBackend<T>::swiglu_backward(Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate,
                                    const Tensor& up) {
  const DType dt = dtype_of<T>();
  const int64_t rows = gate.rows(), cols = gate.cols();
  expect_matrix(gate, dt, rows, cols, "swiglu_backward", "gate");
  expect_matrix(up, dt, rows, cols, "swiglu_backward", "up");
  expect_matrix(dout, dt, rows, cols, "swiglu_backward", "dout");
  expect_matrix(dgate, dt, rows, cols, "swiglu_backward", "dgate");
  expect_matrix(dup, dt, rows, cols, "swiglu_backward", "dup");
  cpu::swiglu_backward(dgate.ptr<T>(), dup.ptr<T>(), dout.ptr<T>(), gate.ptr<T>(), up.ptr<T>(), gate.numel());
}
template <typename T>
void CpuBackend<T>::add(Tensor out, const Tensor& a, const Tensor& b) {
  const DType dt = dtype_of<T>();
  expect_matrix(a, dt, a.rows(), a.cols(), "add", "a");
  expect_matrix(b, dt, a.rows(), a.cols(), "add", "b");
  expect_matrix(out, dt, a.rows(), a.cols(), "add", "out");
  cpu::add(out.ptr<T>(), a.ptr<T>(), b.ptr<T>(), a.numel());
}

// ---- cross-entropy -------------------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double grad_scale,
                                  bool compute_grad) {
  const DType dt = dtype_of<T>();
  const int64_t rows = logits.rows(), vocab = logits.cols();
  expect_matrix(logits, dt, rows, vocab, "cross_entropy", "logits");
  expect(losses, dt, {rows}, "cross_entropy", "losses");
  expect(targets, DType::I32, {rows}, "cross_entropy", "targets");
  const int32_t* tg = targets.ptr<int32_t>();
  for (int64_t r = 0; r < rows; ++r)
    LL_CHECK(tg[r] == -100 || (tg[r] >= 0 && tg[r] < vocab), "cross_entropy: target ", tg[r], " at row ", r,
             " is neither -100 (ignore) nor inside the vocabulary [0, ", vocab, ")");
  cpu::cross_entropy(logits.ptr<T>(), losses.ptr<T>(), tg, rows, vocab, grad_scale, compute_grad);
}

template <typename T>
void CpuBackend<T>::argmax_rows(Tensor out, const Tensor& logits) {
  const int64_t rows = logits.rows(), vocab = logits.cols();
  expect_matrix(logits, dtype_of<T>(), rows, vocab, "argmax_rows", "logits");
  expect(out, DType::I32, {rows}, "argmax_rows", "out");
  cpu::argmax_rows(out.ptr<int32_t>(), logits.ptr<T>(), rows, vocab);
}

// ---- optimizer support -----------------------------------------------------------------------------------------------
template <typename T>
double CpuBackend<T>::sum_squares(const Tensor& x) {
  expect_matrix(x, dtype_of<T>(), x.rows(), x.cols(), "sum_squares", "x");
  return cpu::sum_squares(x.ptr<T>(), x.numel());
}
template <typename T>
void CpuBackend<T>::scale(Tensor x, double s) {
  expect_matrix(x, dtype_of<T>(), x.rows(), x.cols(), "scale", "x");
  cpu::scale(x.ptr<T>(), x.numel(), s);
}
template <typename T>
void CpuBackend<T>::adamw_step(Tensor param, Tensor master, const Tensor& grad, Tensor m, Tensor v,
                               const AdamWStep& st) {
  const DType dt = dtype_of<T>();
  const int64_t rows = param.rows(), cols = param.cols();
  LL_CHECK(master.empty(), "adamw_step: the cpu backend keeps weights in ", dtype_name(dt),
           " and needs no master copy");
  expect_matrix(param, dt, rows, cols, "adamw_step", "param");
  expect_matrix(grad, dt, rows, cols, "adamw_step", "grad");
  expect_matrix(m, dt, rows, cols, "adamw_step", "m");
  expect_matrix(v, dt, rows, cols, "adamw_step", "v");
  LL_CHECK(st.step >= 1, "adamw_step: step must be >= 1, got ", st.step);
  cpu::adamw_step(param.ptr<T>(), grad.ptr<T>(), m.ptr<T>(), v.ptr<T>(), param.numel(), st.lr, st.beta1, st.beta2,
                  st.eps, st.weight_decay, st.step);
}

template class CpuBackend<float>;
template class CpuBackend<double>;

}  // namespace ll
