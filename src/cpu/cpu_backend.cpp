// CpuBackend: validates every op's arguments at the API boundary, then calls the reference kernels.
#include "cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cpu/kernels.h"
#include "core/op_checks.h"
#include "core/quantize.h"
#include "core/tensor_host.h"

namespace ll {

namespace {

// The shared argument checks (op_checks.h) for this backend: host memory, its own dtype policy.
op_checks::Context host_context(const Backend& backend) { return {Device::CPU, backend.dtypes(), "cpu"}; }

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
  op_checks::copy(dst, src);
  if (dst.nbytes() && dst.data != src.data) std::memmove(dst.data, src.data, dst.nbytes());
}
template <typename T>
void CpuBackend<T>::convert(Tensor dst, const Tensor& src) {
  op_checks::convert(host_context(*this), dst, src);
  convert_values(src.data, src.dtype, dst.data, dst.dtype, size_t(src.numel()));
}
template <typename T>
void CpuBackend<T>::zero(Tensor t) {
  if (t.nbytes()) std::memset(t.data, 0, t.nbytes());
}

// ---- embedding ----------------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::embedding_forward(Tensor out, const Tensor& ids, const Tensor& table) {
  const auto d = op_checks::embedding_forward(host_context(*this), out, ids, table);
  cpu::embedding_forward(out.ptr<T>(), ids.ptr<int32_t>(), table.ptr<T>(), d.rows, d.cols);
}
template <typename T>
void CpuBackend<T>::embedding_backward(Tensor dtable, const Tensor& ids, const Tensor& dout) {
  const auto d = op_checks::embedding_backward(host_context(*this), dtable, ids, dout);
  cpu::embedding_backward(dtable.ptr<T>(), ids.ptr<int32_t>(), dout.ptr<T>(), d.rows, d.cols);
}

// ---- RMSNorm -------------------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& w, double eps) {
  const auto d = op_checks::rmsnorm_forward(host_context(*this), out, rstd, x, w);
  cpu::rmsnorm_forward(out.ptr<T>(), rstd.ptr<T>(), x.ptr<T>(), w.ptr<T>(), d.rows, d.cols, eps);
}
template <typename T>
void CpuBackend<T>::rmsnorm_backward(Tensor dx, Tensor dw, const Tensor& dout, const Tensor& x, const Tensor& w,
                                     const Tensor& rstd, bool accumulate_dx) {
  const auto d = op_checks::rmsnorm_backward(host_context(*this), dx, dw, dout, x, w, rstd);
  cpu::rmsnorm_backward(dx.empty() ? nullptr : dx.ptr<T>(), dw.empty() ? nullptr : dw.ptr<T>(), dout.ptr<T>(),
                        x.ptr<T>(), w.ptr<T>(), rstd.ptr<T>(), d.rows, d.cols, accumulate_dx);
}

// ---- LayerNorm -----------------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::layernorm_forward(Tensor out, Tensor mean, Tensor rstd, const Tensor& x, const Tensor& w,
                                      const Tensor& b, double eps) {
  const auto d = op_checks::layernorm_forward(host_context(*this), out, mean, rstd, x, w, b, eps);
  cpu::layernorm_forward(out.ptr<T>(), mean.ptr<T>(), rstd.ptr<T>(), x.ptr<T>(), w.ptr<T>(), b.ptr<T>(), d.rows,
                         d.cols, eps);
}
template <typename T>
void CpuBackend<T>::layernorm_backward(Tensor dx, Tensor dw, Tensor db, const Tensor& dout, const Tensor& x,
                                       const Tensor& w, const Tensor& mean, const Tensor& rstd, bool accumulate_dx) {
  const auto d = op_checks::layernorm_backward(host_context(*this), dx, dw, db, dout, x, w, mean, rstd);
  cpu::layernorm_backward(dx.empty() ? nullptr : dx.ptr<T>(), dw.empty() ? nullptr : dw.ptr<T>(),
                          db.empty() ? nullptr : db.ptr<T>(), dout.ptr<T>(), x.ptr<T>(), w.ptr<T>(), mean.ptr<T>(),
                          rstd.ptr<T>(), d.rows, d.cols, accumulate_dx);
}

// ---- linear and LoRA ----------------------------------------------------------------------------------------
// The reference for 4-bit weights: dequantize (bitsandbytes' float rule, core/quantize.h), then the dense product.
template <typename T>
const T* CpuBackend<T>::dense_weight(const Tensor& w) {
  if (!is_quantized(w.dtype)) return w.ptr<T>();
  const int64_t n = w.numel();
  dequantized_.resize(size_t(n));
  if constexpr (std::is_same_v<T, float>) {
    dequantize_4bit(w.dtype, w.data, n, 0, n, dequantized_.data());
  } else {
    std::vector<float> f(static_cast<size_t>(n));
    dequantize_4bit(w.dtype, w.data, n, 0, n, f.data());
    std::copy(f.begin(), f.end(), dequantized_.begin());
  }
  return dequantized_.data();
}
template <typename T>
void CpuBackend<T>::linear_forward(Tensor y, const Tensor& x, const Tensor& w, bool accumulate) {
  const auto d = op_checks::linear_forward(host_context(*this), y, x, w);
  const T* wd = dense_weight(w);
  const int64_t rows = d.rows, k = d.in, n = d.out;
  cpu::gemm<T>(false, true, rows, n, k, T(1), x.ptr<T>(), k, wd, k, accumulate ? T(1) : T(0), y.ptr<T>(), n);
}
template <typename T>
void CpuBackend<T>::linear_backward(Tensor dx, Tensor dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                                    bool accumulate_dx) {
  const auto d = op_checks::linear_backward(host_context(*this), dx, dw, dy, x, w);
  const int64_t rows = d.rows, k = d.in, n = d.out;
  if (!dx.empty())  // only dx reads the weight: a 4-bit one is dequantized for it alone
    cpu::gemm<T>(false, false, rows, k, n, T(1), dy.ptr<T>(), n, dense_weight(w), k, accumulate_dx ? T(1) : T(0),
                 dx.ptr<T>(), k);
  if (!dw.empty())
    cpu::gemm<T>(true, false, n, k, rows, T(1), dy.ptr<T>(), n, x.ptr<T>(), k, T(1), dw.ptr<T>(), k);
}
template <typename T>
void CpuBackend<T>::add_bias(Tensor y, const Tensor& b) {
  const auto d = op_checks::add_bias(host_context(*this), y, b);
  cpu::add_bias(y.ptr<T>(), b.ptr<T>(), d.rows, d.cols);
}
template <typename T>
void CpuBackend<T>::bias_backward(Tensor db, const Tensor& dy) {
  const auto d = op_checks::bias_backward(host_context(*this), db, dy);
  if (!db.empty()) cpu::bias_backward(db.ptr<T>(), dy.ptr<T>(), d.rows, d.cols);
}
template <typename T>
void CpuBackend<T>::lora_forward(Tensor y, Tensor xa, const Tensor& x, const Tensor& x_lora, const Tensor& w,
                                 const Tensor& a, const Tensor& b, double scale) {
  const auto d = op_checks::lora_forward(host_context(*this), y, xa, x, x_lora, w, a, b);
  const T* wd = dense_weight(w);
  const int64_t rows = d.rows, k = d.in, n = d.out, r = d.rank;
  cpu::gemm<T>(false, true, rows, n, k, T(1), x.ptr<T>(), k, wd, k, T(0), y.ptr<T>(), n);
  cpu::gemm<T>(false, true, rows, r, k, T(1), x_lora.ptr<T>(), k, a.ptr<T>(), k, T(0), xa.ptr<T>(), r);
  cpu::gemm<T>(false, true, rows, n, r, T(scale), xa.ptr<T>(), r, b.ptr<T>(), r, T(1), y.ptr<T>(), n);
}
template <typename T>
void CpuBackend<T>::lora_backward(Tensor dx, Tensor dx_lora, Tensor dw, Tensor da, Tensor db, Tensor dxa,
                                  const Tensor& dy, const Tensor& x, const Tensor& x_lora, const Tensor& xa,
                                  const Tensor& w, const Tensor& a, const Tensor& b, double scale, bool accumulate_dx) {
  const auto d =
      op_checks::lora_backward(host_context(*this), dx, dx_lora, dw, da, db, dxa, dy, x, x_lora, xa, w, a, b);
  const int64_t rows = d.rows, k = d.in, n = d.out, r = d.rank;
  // dB += s·dyᵀ·xa;  dxa = s·dy·B;  dA += dxaᵀ·x_lora
  cpu::gemm<T>(true, false, n, r, rows, T(scale), dy.ptr<T>(), n, xa.ptr<T>(), r, T(1), db.ptr<T>(), r);
  cpu::gemm<T>(false, false, rows, r, n, T(scale), dy.ptr<T>(), n, b.ptr<T>(), r, T(0), dxa.ptr<T>(), r);
  cpu::gemm<T>(true, false, r, k, rows, T(1), dxa.ptr<T>(), r, x_lora.ptr<T>(), k, T(1), da.ptr<T>(), k);
  if (!dx.empty())  // only dx reads the weight: a 4-bit one is dequantized for it alone
    cpu::gemm<T>(false, false, rows, k, n, T(1), dy.ptr<T>(), n, dense_weight(w), k, accumulate_dx ? T(1) : T(0),
                 dx.ptr<T>(), k);
  if (dx_lora.empty())
    cpu::gemm<T>(false, false, rows, k, r, T(1), dxa.ptr<T>(), r, a.ptr<T>(), k, T(1), dx.ptr<T>(), k);
  else
    cpu::gemm<T>(false, false, rows, k, r, T(1), dxa.ptr<T>(), r, a.ptr<T>(), k, T(0), dx_lora.ptr<T>(), k);
  if (!dw.empty())
    cpu::gemm<T>(true, false, n, k, rows, T(1), dy.ptr<T>(), n, x.ptr<T>(), k, T(1), dw.ptr<T>(), k);
}

template <typename T>
void CpuBackend<T>::dropout(Tensor out, const Tensor& x, double p, uint64_t seed) {
  const int64_t n = op_checks::dropout(host_context(*this), out, x, p);
  cpu::dropout(out.ptr<T>(), x.ptr<T>(), n, p, seed);
}

// ---- RoPE ------------------------------------------------------------------------------------------------------
template <typename T>
const typename CpuBackend<T>::RopeCache& CpuBackend<T>::rope_cache(const Tensor& positions, const RopeParams& p,
                                                                   int64_t rows, int64_t rotary_dims) {
  const int32_t* pos = positions.ptr<int32_t>();
  RopeCache& c = rope_cache_;
  const bool hit = c.filled && c.theta == p.theta && c.factor == p.factor && c.rotary_dims == rotary_dims &&
                   c.llama3 == p.llama3 && c.positions.size() == size_t(rows) &&
                   std::equal(pos, pos + rows, c.positions.begin());
  if (!hit) {
    c.filled = false;  // stays so if the table throws
    const std::vector<double> inv_freq = rope_inv_freq(p.theta, rotary_dims, p.llama3);
    const int64_t half = rotary_dims / 2;
    c.cos_t.resize(size_t(rows * half));
    c.sin_t.resize(size_t(rows * half));
    cpu::rope_table(c.cos_t.data(), c.sin_t.data(), pos, rows, half, inv_freq.data(), p.factor);
    c.positions.assign(pos, pos + rows);
    c.theta = p.theta, c.factor = p.factor, c.rotary_dims = rotary_dims, c.llama3 = p.llama3;
    c.filled = true;
  }
  return c;
}
template <typename T>
void CpuBackend<T>::rope_forward(Tensor x, const Tensor& positions, const RopeParams& p) {
  const auto d = op_checks::rope(host_context(*this), x, positions, p, "rope_forward");
  const RopeCache& c = rope_cache(positions, p, d.rows, d.rotary_dims);
  cpu::rope_rotate(x.ptr<T>(), c.cos_t.data(), c.sin_t.data(), d.rows, d.heads, d.head_dim, d.rotary_dims, +1);
}
template <typename T>
void CpuBackend<T>::rope_backward(Tensor dx, const Tensor& positions, const RopeParams& p) {
  const auto d = op_checks::rope(host_context(*this), dx, positions, p, "rope_backward");
  const RopeCache& c = rope_cache(positions, p, d.rows, d.rotary_dims);
  cpu::rope_rotate(dx.ptr<T>(), c.cos_t.data(), c.sin_t.data(), d.rows, d.heads, d.head_dim, d.rotary_dims, -1);
}

// ---- attention -------------------------------------------------------------------------------------------------
namespace {
cpu::AttentionShape kernel_shape(const op_checks::AttentionDims& d) {
  return {d.batch, d.seq_len, d.heads, d.kv_heads, d.head_dim, d.kv_len};
}
}  // namespace
template <typename T>
void CpuBackend<T>::attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                      const AttentionMask& mask) {
  const auto s = kernel_shape(op_checks::attention_forward(host_context(*this), out, lse, q, k, v, mask));
  cpu::attention_forward(out.ptr<T>(), lse.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), s, mask);
}
template <typename T>
void CpuBackend<T>::attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                                       const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                                       const AttentionMask& mask) {
  const auto s =
      kernel_shape(op_checks::attention_backward(host_context(*this), dq, dk, dv, dout, q, k, v, out, lse, mask));
  cpu::attention_backward(dq.ptr<T>(), dk.ptr<T>(), dv.ptr<T>(), dout.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(),
                          out.ptr<T>(), lse.ptr<T>(), s, mask);
}

// ---- SwiGLU, GELU, add ---------------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::swiglu_forward(Tensor out, const Tensor& gate, const Tensor& up) {
  const int64_t n = op_checks::swiglu_forward(host_context(*this), out, gate, up);
  cpu::swiglu_forward(out.ptr<T>(), gate.ptr<T>(), up.ptr<T>(), n);
}
template <typename T>
void CpuBackend<T>::swiglu_backward(Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate,
                                    const Tensor& up) {
  const int64_t n = op_checks::swiglu_backward(host_context(*this), dgate, dup, dout, gate, up);
  cpu::swiglu_backward(dgate.ptr<T>(), dup.ptr<T>(), dout.ptr<T>(), gate.ptr<T>(), up.ptr<T>(), n);
}
template <typename T>
void CpuBackend<T>::split_qkv(Tensor q, Tensor k, Tensor v, const Tensor& qkv) {
  const auto d = op_checks::fused_qkv(host_context(*this), qkv, q, k, v, "split_qkv");
  cpu::split_qkv(q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), qkv.ptr<T>(), d.rows, d.heads, d.head_dim);
}

template <typename T>
void CpuBackend<T>::merge_qkv(Tensor qkv, const Tensor& q, const Tensor& k, const Tensor& v) {
  const auto d = op_checks::fused_qkv(host_context(*this), qkv, q, k, v, "merge_qkv");
  cpu::merge_qkv(qkv.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), d.rows, d.heads, d.head_dim);
}

template <typename T>
void CpuBackend<T>::gelu_forward(Tensor out, const Tensor& x) {
  const int64_t n = op_checks::gelu_forward(host_context(*this), out, x);
  cpu::gelu_forward(out.ptr<T>(), x.ptr<T>(), n);
}
template <typename T>
void CpuBackend<T>::gelu_backward(Tensor dx, const Tensor& dout, const Tensor& x) {
  const int64_t n = op_checks::gelu_backward(host_context(*this), dx, dout, x);
  cpu::gelu_backward(dx.ptr<T>(), dout.ptr<T>(), x.ptr<T>(), n);
}
template <typename T>
void CpuBackend<T>::add(Tensor out, const Tensor& a, const Tensor& b) {
  const int64_t n = op_checks::add(host_context(*this), out, a, b);
  cpu::add(out.ptr<T>(), a.ptr<T>(), b.ptr<T>(), n);
}

// ---- cross-entropy -------------------------------------------------------------------------------------------------
template <typename T>
void CpuBackend<T>::cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double grad_scale,
                                  bool compute_grad) {
  const auto d = op_checks::cross_entropy(host_context(*this), logits, losses, targets);  // also the target range
  cpu::cross_entropy(logits.ptr<T>(), losses.ptr<T>(), targets.ptr<int32_t>(), d.rows, d.cols, grad_scale,
                     compute_grad);
}

template <typename T>
void CpuBackend<T>::argmax_rows(Tensor out, const Tensor& logits) {
  const auto d = op_checks::argmax_rows(host_context(*this), out, logits);
  cpu::argmax_rows(out.ptr<int32_t>(), logits.ptr<T>(), d.rows, d.cols);
}

// ---- optimizer support -----------------------------------------------------------------------------------------------
template <typename T>
double CpuBackend<T>::sum_squares(const Tensor& x) {
  return cpu::sum_squares(x.ptr<T>(), op_checks::sum_squares(host_context(*this), x));
}
template <typename T>
void CpuBackend<T>::scale(Tensor x, double s) {
  cpu::scale(x.ptr<T>(), op_checks::scale(host_context(*this), x), s);
}
template <typename T>
void CpuBackend<T>::adamw_step(Tensor param, Tensor master, const Tensor& grad, Tensor m, Tensor v,
                               const AdamWStep& st) {
  const int64_t n = op_checks::adamw_step(host_context(*this), param, master, grad, m, v, st);
  cpu::adamw_step(param.ptr<T>(), grad.ptr<T>(), m.ptr<T>(), v.ptr<T>(), n, st.lr, st.beta1, st.beta2, st.eps,
                  st.weight_decay, st.step);
}

template class CpuBackend<float>;
template class CpuBackend<double>;

}  // namespace ll
