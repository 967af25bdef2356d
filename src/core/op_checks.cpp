#include "core/op_checks.h"

#include <cmath>
#include <string>
#include <utility>

namespace ll::op_checks {

namespace {

bool is_float(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16; }

// Reads host memory: only for a host-visible context (checked by the caller).
void check_token_ids(const Tensor& ids, int64_t vocab, const char* op) {
  const int32_t* p = ids.ptr<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    LL_CHECK(p[i] >= 0 && p[i] < vocab, op, ": token id ", p[i], " at row ", i, " is outside the vocabulary [0, ",
             vocab, ")");
}

}  // namespace

void expect_device(const Context& ctx, const Tensor& t, const char* op, const char* arg) {
  LL_ASSERT(!t.empty(), op, ": argument `", arg, "` is empty");
  LL_ASSERT(t.device == ctx.device, op, ": argument `", arg, "` lives on ", device_name(t.device), ", the ",
           ctx.backend, " backend needs ",
           ctx.device == Device::CPU ? "host memory" : "device memory (allocate it through the backend)");
}

void expect_matrix(const Context& ctx, const Tensor& t, DType dt, int64_t rows, int64_t cols, const char* op,
                   const char* arg) {
  expect_device(ctx, t, op, arg);
  LL_ASSERT(t.dtype == dt, op, ": argument `", arg, "` has dtype ", dtype_name(t.dtype), ", expected ", dtype_name(dt));
  LL_ASSERT(t.rows() == rows && t.cols() == cols, op, ": argument `", arg, "` is ", t.shape_str(), ", expected ", rows,
           " rows × ", cols, " columns");
}

void expect_shape(const Context& ctx, const Tensor& t, DType dt, std::initializer_list<int64_t> dims, const char* op,
                  const char* arg) {
  expect_device(ctx, t, op, arg);
  LL_ASSERT(t.dtype == dt, op, ": argument `", arg, "` has dtype ", dtype_name(t.dtype), ", expected ", dtype_name(dt));
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

// ---- memory ---------------------------------------------------------------------------------------------------------
int64_t copy(const Tensor& dst, const Tensor& src) {
  LL_ASSERT(dst.dtype == src.dtype && dst.numel() == src.numel(), "copy: destination ", dtype_name(dst.dtype),
           dst.shape_str(), " does not match source ", dtype_name(src.dtype), src.shape_str());
  return dst.numel();
}

int64_t convert(const Context& ctx, const Tensor& dst, const Tensor& src) {
  expect_device(ctx, dst, "convert", "dst");
  expect_device(ctx, src, "convert", "src");
  LL_ASSERT(is_float(dst.dtype) && is_float(src.dtype), "convert: ", dtype_name(src.dtype), " -> ",
           dtype_name(dst.dtype), " is not a floating-point conversion");
  LL_ASSERT(dst.numel() == src.numel(), "convert: destination ", dst.shape_str(), " and source ", src.shape_str(),
           " differ in element count");
  return dst.numel();
}

// ---- embedding ------------------------------------------------------------------------------------------------------
RowsCols embedding_forward(const Context& ctx, const Tensor& out, const Tensor& ids, const Tensor& table) {
  const char* op = "embedding_forward";
  expect_matrix(ctx, table, ctx.dtypes.weight, table.rows(), table.cols(), op, "table");
  expect_shape(ctx, ids, DType::I32, {ids.numel()}, op, "ids");
  expect_matrix(ctx, out, ctx.dtypes.act, ids.numel(), table.cols(), op, "out");
  if (ctx.device == Device::CPU) check_token_ids(ids, table.rows(), op);
  return {ids.numel(), table.cols()};
}

RowsCols embedding_backward(const Context& ctx, const Tensor& dtable, const Tensor& ids, const Tensor& dout) {
  const char* op = "embedding_backward";
  expect_matrix(ctx, dtable, ctx.dtypes.grad, dtable.rows(), dtable.cols(), op, "dtable");
  expect_shape(ctx, ids, DType::I32, {ids.numel()}, op, "ids");
  expect_matrix(ctx, dout, ctx.dtypes.act, ids.numel(), dtable.cols(), op, "dout");
  if (ctx.device == Device::CPU) check_token_ids(ids, dtable.rows(), op);
  return {ids.numel(), dtable.cols()};
}

// ---- RMSNorm --------------------------------------------------------------------------------------------------------
RowsCols rmsnorm_forward(const Context& ctx, const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w) {
  const char* op = "rmsnorm_forward";
  const DTypePolicy& p = ctx.dtypes;
  const int64_t rows = x.rows(), dim = x.cols();
  expect_matrix(ctx, x, p.act, rows, dim, op, "x");
  expect_shape(ctx, w, p.weight, {dim}, op, "w");
  expect_matrix(ctx, out, p.act, rows, dim, op, "out");
  expect_shape(ctx, rstd, p.stat, {rows}, op, "rstd");
  return {rows, dim};
}

RowsCols rmsnorm_backward(const Context& ctx, const Tensor& dx, const Tensor& dw, const Tensor& dout, const Tensor& x,
                          const Tensor& w, const Tensor& rstd) {
  const char* op = "rmsnorm_backward";
  const DTypePolicy& p = ctx.dtypes;
  const int64_t rows = x.rows(), dim = x.cols();
  expect_matrix(ctx, x, p.act, rows, dim, op, "x");
  expect_matrix(ctx, dout, p.act, rows, dim, op, "dout");
  expect_shape(ctx, w, p.weight, {dim}, op, "w");
  expect_shape(ctx, rstd, p.stat, {rows}, op, "rstd");
  if (!dx.empty()) expect_matrix(ctx, dx, p.act, rows, dim, op, "dx");
  if (!dw.empty()) expect_shape(ctx, dw, p.grad, {dim}, op, "dw");
  return {rows, dim};
}

// ---- LayerNorm ------------------------------------------------------------------------------------------------------
RowsCols layernorm_forward(const Context& ctx, const Tensor& out, const Tensor& mean, const Tensor& rstd,
                           const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  const char* op = "layernorm_forward";
  const DTypePolicy& p = ctx.dtypes;
  const int64_t rows = x.rows(), dim = x.cols();
  expect_matrix(ctx, x, p.act, rows, dim, op, "x");
  expect_shape(ctx, w, p.weight, {dim}, op, "w");
  expect_shape(ctx, b, p.weight, {dim}, op, "b");
  expect_matrix(ctx, out, p.act, rows, dim, op, "out");
  expect_shape(ctx, mean, p.stat, {rows}, op, "mean");
  expect_shape(ctx, rstd, p.stat, {rows}, op, "rstd");
  LL_CHECK(eps >= 0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
  return {rows, dim};
}

RowsCols layernorm_backward(const Context& ctx, const Tensor& dx, const Tensor& dw, const Tensor& db,
                            const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                            const Tensor& rstd) {
  const char* op = "layernorm_backward";
  const DTypePolicy& p = ctx.dtypes;
  const int64_t rows = x.rows(), dim = x.cols();
  expect_matrix(ctx, x, p.act, rows, dim, op, "x");
  expect_matrix(ctx, dout, p.act, rows, dim, op, "dout");
  expect_shape(ctx, w, p.weight, {dim}, op, "w");
  expect_shape(ctx, mean, p.stat, {rows}, op, "mean");
  expect_shape(ctx, rstd, p.stat, {rows}, op, "rstd");
  if (!dx.empty()) expect_matrix(ctx, dx, p.act, rows, dim, op, "dx");
  if (!dw.empty()) expect_shape(ctx, dw, p.grad, {dim}, op, "dw");
  if (!db.empty()) expect_shape(ctx, db, p.grad, {dim}, op, "db");
  return {rows, dim};
}

// ---- linear and LoRA ------------------------------------------------------------------------------------------------
namespace {
// A linear layer's weight: the compute dtype, or a frozen 4-bit format (core/dtype.h) of the same logical shape.
void expect_linear_weight(const Context& ctx, const Tensor& w, const LinearDims& d, const char* op) {
  expect_shape(ctx, w, is_quantized(w.dtype) ? w.dtype : ctx.dtypes.weight, {d.out, d.in}, op, "w");
}
void expect_no_quantized_grad(const Tensor& dw, const Tensor& w, const char* op) {
  LL_ASSERT(dw.empty() || !is_quantized(w.dtype), op, ": w is a frozen ", dtype_name(w.dtype),
            " weight, which has no gradient; dw must be empty");
}
}  // namespace

LinearDims linear_forward(const Context& ctx, const Tensor& y, const Tensor& x, const Tensor& w) {
  const char* op = "linear_forward";
  const LinearDims d{x.rows(), x.cols(), w.rows()};
  expect_linear_weight(ctx, w, d, op);
  expect_matrix(ctx, y, ctx.dtypes.act, d.rows, d.out, op, "y");
  expect_matrix(ctx, x, ctx.dtypes.act, d.rows, d.in, op, "x");
  return d;
}

LinearDims linear_backward(const Context& ctx, const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                           const Tensor& w) {
  const char* op = "linear_backward";
  const DTypePolicy& p = ctx.dtypes;
  const LinearDims d{x.rows(), x.cols(), w.rows()};
  expect_linear_weight(ctx, w, d, op);
  expect_no_quantized_grad(dw, w, op);
  expect_matrix(ctx, x, p.act, d.rows, d.in, op, "x");
  expect_matrix(ctx, dy, p.act, d.rows, d.out, op, "dy");
  if (!dx.empty()) expect_matrix(ctx, dx, p.act, d.rows, d.in, op, "dx");
  if (!dw.empty()) expect_shape(ctx, dw, p.grad, {d.out, d.in}, op, "dw");
  return d;
}

RowsCols add_bias(const Context& ctx, const Tensor& y, const Tensor& b) {
  const int64_t rows = y.rows(), cols = y.cols();
  expect_matrix(ctx, y, ctx.dtypes.act, rows, cols, "add_bias", "y");
  expect_shape(ctx, b, ctx.dtypes.weight, {cols}, "add_bias", "b");
  return {rows, cols};
}

RowsCols bias_backward(const Context& ctx, const Tensor& db, const Tensor& dy) {
  const int64_t rows = dy.rows(), cols = dy.cols();
  expect_matrix(ctx, dy, ctx.dtypes.act, rows, cols, "bias_backward", "dy");
  if (!db.empty()) expect_shape(ctx, db, ctx.dtypes.grad, {cols}, "bias_backward", "db");
  return {rows, cols};
}

LoraDims lora_forward(const Context& ctx, const Tensor& y, const Tensor& xa, const Tensor& x, const Tensor& x_lora,
                      const Tensor& w, const Tensor& a, const Tensor& b) {
  const char* op = "lora_forward";
  const DTypePolicy& p = ctx.dtypes;
  const LoraDims d{x.rows(), x.cols(), w.rows(), a.rows()};
  expect_linear_weight(ctx, w, {d.rows, d.in, d.out}, op);
  expect_shape(ctx, a, p.weight, {d.rank, d.in}, op, "a");
  expect_shape(ctx, b, p.weight, {d.out, d.rank}, op, "b");
  expect_matrix(ctx, x, p.act, d.rows, d.in, op, "x");
  expect_matrix(ctx, x_lora, p.act, d.rows, d.in, op, "x_lora");
  expect_matrix(ctx, y, p.act, d.rows, d.out, op, "y");
  expect_matrix(ctx, xa, p.act, d.rows, d.rank, op, "xa");
  return d;
}

LoraDims lora_backward(const Context& ctx, const Tensor& dx, const Tensor& dx_lora, const Tensor& dw, const Tensor& da,
                       const Tensor& db, const Tensor& dxa, const Tensor& dy, const Tensor& x, const Tensor& x_lora,
                       const Tensor& xa, const Tensor& w, const Tensor& a, const Tensor& b) {
  const char* op = "lora_backward";
  const DTypePolicy& p = ctx.dtypes;
  const LoraDims d{x.rows(), x.cols(), w.rows(), a.rows()};
  expect_linear_weight(ctx, w, {d.rows, d.in, d.out}, op);
  expect_no_quantized_grad(dw, w, op);
  expect_shape(ctx, a, p.weight, {d.rank, d.in}, op, "a");
  expect_shape(ctx, b, p.weight, {d.out, d.rank}, op, "b");
  expect_shape(ctx, da, p.grad, {d.rank, d.in}, op, "da");
  expect_shape(ctx, db, p.grad, {d.out, d.rank}, op, "db");
  expect_matrix(ctx, x, p.act, d.rows, d.in, op, "x");
  expect_matrix(ctx, x_lora, p.act, d.rows, d.in, op, "x_lora");
  expect_matrix(ctx, xa, p.act, d.rows, d.rank, op, "xa");
  expect_matrix(ctx, dxa, p.act, d.rows, d.rank, op, "dxa");
  expect_matrix(ctx, dy, p.act, d.rows, d.out, op, "dy");
  if (!dx.empty()) expect_matrix(ctx, dx, p.act, d.rows, d.in, op, "dx");
  if (dx_lora.empty())
    LL_ASSERT(!dx.empty(), op, ": the adapter-input gradient needs dx or dx_lora");
  else
    expect_matrix(ctx, dx_lora, p.act, d.rows, d.in, op, "dx_lora");
  if (!dw.empty()) expect_shape(ctx, dw, p.grad, {d.out, d.in}, op, "dw");
  return d;
}

int64_t dropout(const Context& ctx, const Tensor& out, const Tensor& x, double p) {
  expect_matrix(ctx, x, ctx.dtypes.act, x.rows(), x.cols(), "dropout", "x");
  expect_matrix(ctx, out, ctx.dtypes.act, x.rows(), x.cols(), "dropout", "out");
  LL_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got ", p);
  return x.numel();
}

// ---- RoPE -----------------------------------------------------------------------------------------------------------
RopeDims rope(const Context& ctx, const Tensor& x, const Tensor& positions, const RopeParams& p, const char* op) {
  expect_shape(ctx, x, ctx.dtypes.act, {x.dim(0), x.dim(1), x.dim(2)}, op, "x");
  expect_shape(ctx, positions, DType::I32, {x.dim(0)}, op, "positions");
  const int64_t head_dim = x.dim(2);
  if (p.rotary_dims == 0) {
    LL_CHECK(head_dim % 2 == 0, op, ": head dimension ", head_dim, " must be even for rotate_half");
  } else {
    LL_CHECK(p.rotary_dims > 0 && p.rotary_dims <= head_dim && p.rotary_dims % 2 == 0, op, ": rotary_dims ",
             p.rotary_dims, " must be even and in [2, ", head_dim, "] (the head dimension), or 0 for the whole head");
  }
  LL_CHECK(p.factor > 0 && p.theta > 0, op, ": rope theta (", p.theta, ") and factor (", p.factor, ") must be > 0");
  return {x.dim(0), x.dim(1), head_dim, p.rotary_dims == 0 ? head_dim : p.rotary_dims};
}

// ---- attention ------------------------------------------------------------------------------------------------------
AttentionDims attention_shape(const Tensor& q, const Tensor& k, const AttentionMask& mask, const char* op) {
  LL_ASSERT(q.ndim == 4 && k.ndim == 4, op, ": q and k must be [B,L,H,Dh], got ", q.shape_str(), " and ",
           k.shape_str());
  const AttentionDims s{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3), k.dim(1)};
  LL_ASSERT(s.heads > 0 && s.kv_heads > 0 && s.heads % s.kv_heads == 0, op, ": query heads (", s.heads,
           ") must be a multiple of KV heads (", s.kv_heads, ")");
  LL_CHECK(s.kv_len >= s.seq_len, op, ": ", s.kv_len, " keys for ", s.seq_len,
           " queries; queries are the last positions of the keys");
  LL_CHECK(mask.window >= 0, op, ": the sliding window must be >= 0 (0 = none), got ", mask.window);
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

AttentionDims attention_forward(const Context& ctx, const Tensor& out, const Tensor& lse, const Tensor& q,
                                const Tensor& k, const Tensor& v, const AttentionMask& mask) {
  const char* op = "attention_forward";
  const DType act = ctx.dtypes.act;
  const AttentionDims s = attention_shape(q, k, mask, op);
  expect_shape(ctx, q, act, {s.batch, s.seq_len, s.heads, s.head_dim}, op, "q");
  expect_shape(ctx, k, act, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, "k");
  expect_shape(ctx, v, act, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, "v");
  expect_shape(ctx, out, act, {s.batch, s.seq_len, s.heads, s.head_dim}, op, "out");
  expect_shape(ctx, lse, ctx.dtypes.stat, {s.batch, s.heads, s.seq_len}, op, "lse");
  return s;
}

AttentionDims attention_backward(const Context& ctx, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                 const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& out, const Tensor& lse, const AttentionMask& mask) {
  const char* op = "attention_backward";
  const DType act = ctx.dtypes.act;
  const AttentionDims s = attention_shape(q, k, mask, op);
  for (auto [t, name] : {std::pair{&q, "q"}, {&out, "out"}, {&dout, "dout"}, {&dq, "dq"}})
    expect_shape(ctx, *t, act, {s.batch, s.seq_len, s.heads, s.head_dim}, op, name);
  for (auto [t, name] : {std::pair{&k, "k"}, {&v, "v"}, {&dk, "dk"}, {&dv, "dv"}})
    expect_shape(ctx, *t, act, {s.batch, s.kv_len, s.kv_heads, s.head_dim}, op, name);
  expect_shape(ctx, lse, ctx.dtypes.stat, {s.batch, s.heads, s.seq_len}, op, "lse");
  return s;
}

// ---- SwiGLU, add ----------------------------------------------------------------------------------------------------
int64_t swiglu_forward(const Context& ctx, const Tensor& out, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_forward";
  const int64_t rows = gate.rows(), cols = gate.cols();
  expect_matrix(ctx, gate, ctx.dtypes.act, rows, cols, op, "gate");
  expect_matrix(ctx, up, ctx.dtypes.act, rows, cols, op, "up");
  expect_matrix(ctx, out, ctx.dtypes.act, rows, cols, op, "out");
  return gate.numel();
}

int64_t swiglu_backward(const Context& ctx, const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                        const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_backward";
  const int64_t rows = gate.rows(), cols = gate.cols();
  for (auto [t, name] : {std::pair{&gate, "gate"}, {&up, "up"}, {&dout, "dout"}, {&dgate, "dgate"}, {&dup, "dup"}})
    expect_matrix(ctx, *t, ctx.dtypes.act, rows, cols, op, name);
  return gate.numel();
}

// ---- fused QKV ------------------------------------------------------------------------------------------------------
QkvDims fused_qkv(const Context& ctx, const Tensor& qkv, const Tensor& q, const Tensor& k, const Tensor& v,
                  const char* op) {
  const int64_t rows = q.dim(0), heads = q.dim(1), head_dim = q.dim(2);
  for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}})
    expect_shape(ctx, *t, ctx.dtypes.act, {rows, heads, head_dim}, op, name);
  expect_matrix(ctx, qkv, ctx.dtypes.act, rows, 3 * heads * head_dim, op, "qkv");
  return {rows, heads, head_dim};
}

int64_t gelu_forward(const Context& ctx, const Tensor& out, const Tensor& x) {
  expect_matrix(ctx, x, ctx.dtypes.act, x.rows(), x.cols(), "gelu_forward", "x");
  expect_matrix(ctx, out, ctx.dtypes.act, x.rows(), x.cols(), "gelu_forward", "out");
  return x.numel();
}

int64_t gelu_backward(const Context& ctx, const Tensor& dx, const Tensor& dout, const Tensor& x) {
  for (auto [t, name] : {std::pair{&x, "x"}, {&dout, "dout"}, {&dx, "dx"}})
    expect_matrix(ctx, *t, ctx.dtypes.act, x.rows(), x.cols(), "gelu_backward", name);
  return x.numel();
}

int64_t add(const Context& ctx, const Tensor& out, const Tensor& a, const Tensor& b) {
  expect_matrix(ctx, a, ctx.dtypes.act, a.rows(), a.cols(), "add", "a");
  expect_matrix(ctx, b, ctx.dtypes.act, a.rows(), a.cols(), "add", "b");
  expect_matrix(ctx, out, ctx.dtypes.act, a.rows(), a.cols(), "add", "out");
  return a.numel();
}

// ---- cross-entropy, argmax ------------------------------------------------------------------------------------------
RowsCols cross_entropy(const Context& ctx, const Tensor& logits, const Tensor& losses, const Tensor& targets) {
  const char* op = "cross_entropy";
  const int64_t rows = logits.rows(), vocab = logits.cols();
  expect_matrix(ctx, logits, ctx.dtypes.act, rows, vocab, op, "logits");
  expect_shape(ctx, losses, ctx.dtypes.stat, {rows}, op, "losses");
  expect_shape(ctx, targets, DType::I32, {rows}, op, "targets");
  if (ctx.device == Device::CPU) {  // host-visible: the targets can be read here
    const int32_t* tg = targets.ptr<int32_t>();
    for (int64_t r = 0; r < rows; ++r)
      LL_CHECK(tg[r] == -100 || (tg[r] >= 0 && tg[r] < vocab), op, ": target ", tg[r], " at row ", r,
               " is neither -100 (ignore) nor inside the vocabulary [0, ", vocab, ")");
  }
  return {rows, vocab};
}

RowsCols argmax_rows(const Context& ctx, const Tensor& out, const Tensor& logits) {
  const int64_t rows = logits.rows(), vocab = logits.cols();
  expect_matrix(ctx, logits, ctx.dtypes.act, rows, vocab, "argmax_rows", "logits");
  expect_shape(ctx, out, DType::I32, {rows}, "argmax_rows", "out");
  return {rows, vocab};
}

// ---- optimizer support ----------------------------------------------------------------------------------------------
int64_t sum_squares(const Context& ctx, const Tensor& x) {
  expect_matrix(ctx, x, ctx.dtypes.grad, x.rows(), x.cols(), "sum_squares", "x");
  return x.numel();
}

int64_t scale(const Context& ctx, const Tensor& x) {
  expect_matrix(ctx, x, ctx.dtypes.grad, x.rows(), x.cols(), "scale", "x");
  return x.numel();
}

int64_t adamw_step(const Context& ctx, const Tensor& param, const Tensor& master, const Tensor& grad, const Tensor& m,
                   const Tensor& v, const AdamWStep& st) {
  const char* op = "adamw_step";
  const DTypePolicy& p = ctx.dtypes;
  const int64_t rows = param.rows(), cols = param.cols();
  if (p.weight == p.grad) {  // the weights are their own master copy
    LL_ASSERT(master.empty(), op, ": the ", ctx.backend, " backend keeps weights in ", dtype_name(p.weight),
             " and needs no master copy");
    expect_matrix(ctx, param, p.weight, rows, cols, op, "param");
  } else {  // low-precision working weights: the update runs on an f32 master
    expect_device(ctx, param, op, "param");
    LL_ASSERT(param.dtype == p.weight || param.dtype == DType::F32, op, ": argument `param` has dtype ",
             dtype_name(param.dtype), ", expected ", dtype_name(p.weight), " (with an f32 master) or f32");
    if (param.dtype != DType::F32)
      LL_ASSERT(!master.empty(), op, ": `param` is ", dtype_name(param.dtype),
               "; the update needs its f32 master copy (AdamW allocates one per trainable parameter)");
    if (!master.empty()) expect_matrix(ctx, master, DType::F32, rows, cols, op, "master");
  }
  expect_matrix(ctx, grad, p.grad, rows, cols, op, "grad");
  expect_matrix(ctx, m, p.grad, rows, cols, op, "m");
  expect_matrix(ctx, v, p.grad, rows, cols, op, "v");
  LL_ASSERT(st.step >= 1, op, ": step must be >= 1, got ", st.step);
  return param.numel();
}

}  // namespace ll::op_checks
