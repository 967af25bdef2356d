#include "cuda/op_checks.h"

#include <cmath>
#include <string>

namespace ll::cuda_checks {

namespace {

void expect_device(const Tensor& t, const char* op, const char* arg) {
  LL_CHECK(!t.empty(), op, ": argument `", arg, "` is empty");
  LL_CHECK(t.device == Device::CUDA, op, ": argument `", arg, "` lives on ", device_name(t.device),
           ", the cuda backend needs device memory (allocate it through the backend)");
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16; }

}  // namespace

void expect_matrix(const Tensor& t, DType dt, int64_t rows, int64_t cols, const char* op, const char* arg) {
  expect_device(t, op, arg);
  LL_CHECK(t.dtype == dt, op, ": argument `", arg, "` has dtype ", dtype_name(t.dtype), ", expected ", dtype_name(dt));
  LL_CHECK(t.rows() == rows && t.cols() == cols, op, ": argument `", arg, "` is ", t.shape_str(), ", expected ", rows,
           " rows × ", cols, " columns");
}

void expect_shape(const Tensor& t, DType dt, std::initializer_list<int64_t> dims, const char* op, const char* arg) {
  expect_device(t, op, arg);
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

void expect_aligned(const Tensor& t, size_t bytes, const char* op, const char* arg) {
  LL_CHECK(reinterpret_cast<uintptr_t>(t.data) % bytes == 0, op, ": argument `", arg, "` must be ", bytes,
           "-byte aligned for vector loads; it starts at ", t.data,
           " (views from Tensor::slice_rows keep the alignment when row sizes are multiples of 16 bytes)");
}

RowsCols embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table) {
  const char* op = "embedding_forward";
  expect_matrix(table, kWeight, table.rows(), table.cols(), op, "table");
  expect_shape(ids, DType::I32, {ids.numel()}, op, "ids");
  expect_matrix(out, kAct, ids.numel(), table.cols(), op, "out");
  return {ids.numel(), table.cols()};
}

RowsCols embedding_backward(const Tensor& dtable, const Tensor& ids, const Tensor& dout) {
  const char* op = "embedding_backward";
  expect_matrix(dtable, kGrad, dtable.rows(), dtable.cols(), op, "dtable");
  expect_shape(ids, DType::I32, {ids.numel()}, op, "ids");
  expect_matrix(dout, kAct, ids.numel(), dtable.cols(), op, "dout");
  return {ids.numel(), dtable.cols()};
}

RowsCols rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w, double eps) {
  const char* op = "rmsnorm_forward";
  const int64_t rows = x.rows(), dim = x.cols();
  expect_matrix(x, kAct, rows, dim, op, "x");
  expect_shape(w, kWeight, {dim}, op, "w");
  expect_matrix(out, kAct, rows, dim, op, "out");
  expect_shape(rstd, kStat, {rows}, op, "rstd");
  LL_CHECK(eps >= 0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
  return {rows, dim};
}

RowsCols rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dout, const Tensor& x, const Tensor& w,
                          const Tensor& rstd) {
  const char* op = "rmsnorm_backward";
  const int64_t rows = x.rows(), dim = x.cols();
  expect_matrix(x, kAct, rows, dim, op, "x");
  expect_matrix(dout, kAct, rows, dim, op, "dout");
  expect_shape(w, kWeight, {dim}, op, "w");
  expect_shape(rstd, kStat, {rows}, op, "rstd");
  if (!dx.empty()) expect_matrix(dx, kAct, rows, dim, op, "dx");
  if (!dw.empty()) expect_shape(dw, kGrad, {dim}, op, "dw");
  return {rows, dim};
}

LinearDims linear_forward(const Tensor& y, const Tensor& x, const Tensor& w) {
  const char* op = "linear_forward";
  const LinearDims d{x.rows(), x.cols(), w.rows()};
  expect_shape(w, kWeight, {d.out, d.in}, op, "w");
  expect_matrix(y, kAct, d.rows, d.out, op, "y");
  expect_matrix(x, kAct, d.rows, d.in, op, "x");
  return d;
}

LinearDims linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  const char* op = "linear_backward";
  const LinearDims d{x.rows(), x.cols(), w.rows()};
  expect_shape(w, kWeight, {d.out, d.in}, op, "w");
  expect_matrix(x, kAct, d.rows, d.in, op, "x");
  expect_matrix(dy, kAct, d.rows, d.out, op, "dy");
  if (!dx.empty()) expect_matrix(dx, kAct, d.rows, d.in, op, "dx");
  if (!dw.empty()) expect_shape(dw, kGrad, {d.out, d.in}, op, "dw");
  return d;
}

LoraDims lora_forward(const Tensor& y, const Tensor& xa, const Tensor& x, const Tensor& x_lora, const Tensor& w,
                      const Tensor& a, const Tensor& b) {
  const char* op = "lora_forward";
  const LoraDims d{x.rows(), x.cols(), w.rows(), a.rows()};
  expect_shape(w, kWeight, {d.out, d.in}, op, "w");
  expect_shape(a, kWeight, {d.rank, d.in}, op, "a");
  expect_shape(b, kWeight, {d.out, d.rank}, op, "b");
  expect_matrix(x, kAct, d.rows, d.in, op, "x");
  expect_matrix(x_lora, kAct, d.rows, d.in, op, "x_lora");
  expect_matrix(y, kAct, d.rows, d.out, op, "y");
  expect_matrix(xa, kAct, d.rows, d.rank, op, "xa");
  return d;
}

LoraDims lora_backward(const Tensor& dx, const Tensor& dx_lora, const Tensor& dw, const Tensor& da, const Tensor& db,
                       const Tensor& dxa, const Tensor& dy, const Tensor& x, const Tensor& x_lora, const Tensor& xa,
                       const Tensor& w, const Tensor& a, const Tensor& b) {
  const char* op = "lora_backward";
  const LoraDims d{x.rows(), x.cols(), w.rows(), a.rows()};
  expect_shape(w, kWeight, {d.out, d.in}, op, "w");
  expect_shape(a, kWeight, {d.rank, d.in}, op, "a");
  expect_shape(b, kWeight, {d.out, d.rank}, op, "b");
  expect_shape(da, kGrad, {d.rank, d.in}, op, "da");
  expect_shape(db, kGrad, {d.out, d.rank}, op, "db");
  expect_matrix(x, kAct, d.rows, d.in, op, "x");
  expect_matrix(x_lora, kAct, d.rows, d.in, op, "x_lora");
  expect_matrix(xa, kAct, d.rows, d.rank, op, "xa");
  expect_matrix(dxa, kAct, d.rows, d.rank, op, "dxa");
  expect_matrix(dy, kAct, d.rows, d.out, op, "dy");
  if (!dx.empty()) expect_matrix(dx, kAct, d.rows, d.in, op, "dx");
  if (dx_lora.empty())
    LL_CHECK(!dx.empty(), op, ": the adapter-input gradient needs dx or dx_lora");
  else
    expect_matrix(dx_lora, kAct, d.rows, d.in, op, "dx_lora");
  if (!dw.empty()) expect_shape(dw, kGrad, {d.out, d.in}, op, "dw");
  return d;
}

int64_t dropout(const Tensor& out, const Tensor& x, double p) {
  expect_matrix(x, kAct, x.rows(), x.cols(), "dropout", "x");
  expect_matrix(out, kAct, x.rows(), x.cols(), "dropout", "out");
  LL_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got ", p);
  return x.numel();
}

RopeDims rope(const Tensor& x, const Tensor& positions, const RopeParams& p, const char* op) {
  LL_CHECK(x.ndim == 3, op, ": x must be [T, heads, head_dim], got ", x.shape_str());
  expect_shape(x, kAct, {x.dim(0), x.dim(1), x.dim(2)}, op, "x");
  expect_shape(positions, DType::I32, {x.dim(0)}, op, "positions");
  LL_CHECK(x.dim(2) % 2 == 0, op, ": head dimension ", x.dim(2), " must be even for rotate_half");
  LL_CHECK(x.dim(2) <= 2 * cuda_plan::kMaxHeadDim, op, ": head dimension ", x.dim(2), " exceeds the supported ",
           2 * cuda_plan::kMaxHeadDim);
  LL_CHECK(p.factor > 0 && p.theta > 0, op, ": rope theta (", p.theta, ") and factor (", p.factor, ") must be > 0");
  return {x.dim(0), x.dim(1), x.dim(2)};
}

namespace {

AttentionProblem attention_shape(const Tensor& q, const Tensor& k, const AttentionMask& mask, const char* op,
                                 bool backward, cuda_plan::AttentionPath override_path) {
  LL_CHECK(q.ndim == 4 && k.ndim == 4, op, ": q and k must be [B,L,H,Dh], got ", q.shape_str(), " and ",
           k.shape_str());
  AttentionProblem s{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3), k.dim(1), cuda_plan::AttentionPath::Auto};
  LL_CHECK(s.kv_heads > 0 && s.heads % s.kv_heads == 0, op, ": query heads (", s.heads,
           ") must be a multiple of KV heads (", s.kv_heads, ")");
  LL_CHECK(s.kv_len >= s.seq_len, op, ": ", s.kv_len, " keys for ", s.seq_len,
           " queries; queries are the last positions of the keys");
  LL_CHECK(s.head_dim >= 1 && s.head_dim <= cuda_plan::kMaxHeadDim, op, ": head dimension ", s.head_dim,
           " is outside the supported range [1, ", cuda_plan::kMaxHeadDim, "]");
  LL_CHECK(s.batch * s.heads <= (int64_t(1) << 31) - 1 && s.seq_len <= (int64_t(1) << 31) - 1, op,
           ": batch × heads and the sequence length must fit the launch grid");
  if (mask.kind != MaskKind::Causal) {
    LL_CHECK(s.kv_len == s.seq_len, op, ": S2-Attn is a training mask; it needs as many queries as keys");
    LL_CHECK(mask.group >= 2, op, ": S2 group size must be >= 2, got ", mask.group);
    LL_CHECK(s.heads % 2 == 0, op, ": S2 needs an even number of query heads, got ", s.heads);
  }
  if (mask.kind == MaskKind::S2Roll)
    LL_CHECK(s.seq_len % mask.group == 0 && mask.group % 2 == 0, op, ": the roll variant needs L (", s.seq_len,
             ") divisible by an even group size (", mask.group, ")");
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
  const AttentionProblem s = attention_shape(q, k, mask, op, false, override_path);
  expect_shape(q, kAct, {s.batch, s.seq_len, s.heads, s.head_dim}, op, "q");
  expect_shape(k, kAct, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, "k");
  expect_shape(v, kAct, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, "v");
  expect_shape(out, kAct, {s.batch, s.seq_len, s.heads, s.head_dim}, op, "out");
  expect_shape(lse, kStat, {s.batch, s.heads, s.seq_len}, op, "lse");
  if (s.path == cuda_plan::AttentionPath::TensorCore)
    for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "out"}}) expect_aligned(*t, 16, op, name);
  return s;
}

AttentionProblem attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                                    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                    const Tensor& lse, const AttentionMask& mask,
                                    cuda_plan::AttentionPath override_path) {
  const char* op = "attention_backward";
  const AttentionProblem s = attention_shape(q, k, mask, op, true, override_path);
  for (auto [t, name] : {std::pair{&q, "q"}, {&out, "out"}, {&dout, "dout"}, {&dq, "dq"}})
    expect_shape(*t, kAct, {s.batch, s.seq_len, s.heads, s.head_dim}, op, name);
  for (auto [t, name] : {std::pair{&k, "k"}, {&v, "v"}, {&dk, "dk"}, {&dv, "dv"}})
    expect_shape(*t, kAct, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, name);
  expect_shape(lse, kStat, {s.batch, s.heads, s.seq_len}, op, "lse");
  if (s.path == cuda_plan::AttentionPath::TensorCore)
    for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&dout, "dout"}, {&dq, "dq"}, {&dk, "dk"},
                           {&dv, "dv"}})
      expect_aligned(*t, 16, op, name);
  return s;
}

int64_t swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  const int64_t rows = gate.rows(), cols = gate.cols();
  expect_matrix(gate, kAct, rows, cols, "swiglu_forward", "gate");
  expect_matrix(up, kAct, rows, cols, "swiglu_forward", "up");
  expect_matrix(out, kAct, rows, cols, "swiglu_forward", "out");
  return gate.numel();
}

int64_t swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout, const Tensor& gate,
                        const Tensor& up) {
  const int64_t rows = gate.rows(), cols = gate.cols();
  const char* op = "swiglu_backward";
  expect_matrix(gate, kAct, rows, cols, op, "gate");
  expect_matrix(up, kAct, rows, cols, op, "up");
  expect_matrix(dout, kAct, rows, cols, op, "dout");
  expect_matrix(dgate, kAct, rows, cols, op, "dgate");
  expect_matrix(dup, kAct, rows, cols, op, "dup");
  return gate.numel();
}

int64_t add(const Tensor& out, const Tensor& a, const Tensor& b) {
  expect_matrix(a, kAct, a.rows(), a.cols(), "add", "a");
  expect_matrix(b, kAct, a.rows(), a.cols(), "add", "b");
  expect_matrix(out, kAct, a.rows(), a.cols(), "add", "out");
  return a.numel();
}

RowsCols cross_entropy(const Tensor& logits, const Tensor& losses, const Tensor& targets) {
  const int64_t rows = logits.rows(), vocab = logits.cols();
  expect_matrix(logits, kAct, rows, vocab, "cross_entropy", "logits");
  expect_shape(losses, kStat, {rows}, "cross_entropy", "losses");
  expect_shape(targets, DType::I32, {rows}, "cross_entropy", "targets");
  LL_CHECK(vocab <= (int64_t(1) << 31) - 1, "cross_entropy: vocabulary of ", vocab, " does not fit int32 targets");
  return {rows, vocab};
}

RowsCols argmax_rows(const Tensor& out, const Tensor& logits) {
  const int64_t rows = logits.rows(), vocab = logits.cols();
  expect_matrix(logits, kAct, rows, vocab, "argmax_rows", "logits");
  expect_shape(out, DType::I32, {rows}, "argmax_rows", "out");
  return {rows, vocab};
}

int64_t sum_squares(const Tensor& x) {
  expect_matrix(x, kGrad, x.rows(), x.cols(), "sum_squares", "x");
  return x.numel();
}

int64_t scale(const Tensor& x) {
  expect_matrix(x, kGrad, x.rows(), x.cols(), "scale", "x");
  return x.numel();
}

int64_t adamw_step(const Tensor& param, const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                   const AdamWStep& st) {
  const char* op = "adamw_step";
  const int64_t rows = param.rows(), cols = param.cols();
  expect_device(param, op, "param");
  LL_CHECK(param.dtype == kWeight || param.dtype == DType::F32, op, ": argument `param` has dtype ",
           dtype_name(param.dtype), ", expected ", dtype_name(kWeight), " (with an f32 master) or f32");
  if (param.dtype != DType::F32)
    LL_CHECK(!master.empty(), op, ": `param` is ", dtype_name(param.dtype),
             "; the update needs its f32 master copy (AdamW allocates one per trainable parameter)");
  if (!master.empty()) expect_matrix(master, DType::F32, rows, cols, op, "master");
  expect_matrix(grad, kGrad, rows, cols, op, "grad");
  expect_matrix(m, kGrad, rows, cols, op, "m");
  expect_matrix(v, kGrad, rows, cols, op, "v");
  LL_CHECK(st.step >= 1, op, ": step must be >= 1, got ", st.step);
  LL_CHECK(st.beta1 >= 0 && st.beta1 < 1 && st.beta2 >= 0 && st.beta2 < 1, op, ": betas must be in [0, 1), got ",
           st.beta1, ", ", st.beta2);
  return param.numel();
}

int64_t convert(const Tensor& dst, const Tensor& src) {
  expect_device(dst, "convert", "dst");
  expect_device(src, "convert", "src");
  LL_CHECK(is_float(dst.dtype) && is_float(src.dtype), "convert: ", dtype_name(src.dtype), " -> ",
           dtype_name(dst.dtype), " is not a floating-point conversion");
  LL_CHECK(dst.numel() == src.numel(), "convert: destination ", dst.shape_str(), " and source ", src.shape_str(),
           " differ in element count");
  return dst.numel();
}

int64_t copy(const Tensor& dst, const Tensor& src) {
  expect_device(dst, "copy", "dst");
  expect_device(src, "copy", "src");
  LL_CHECK(dst.dtype == src.dtype && dst.numel() == src.numel(), "copy: destination ", dtype_name(dst.dtype),
           dst.shape_str(), " does not match source ", dtype_name(src.dtype), src.shape_str());
  return dst.numel();
}

}  // namespace ll::cuda_checks
