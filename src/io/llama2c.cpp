#include "io/llama2c.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <utility>

#include "io/param_io.h"
#include "core/tensor_host.h"
#include "util/files.h"

namespace ll {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "llama2.c checkpoints are read as native little-endian");

namespace {

constexpr uint64_t kHeaderBytes = 7 * sizeof(int32_t);
constexpr uint32_t kVersionedMagic = 0x616b3432;  // "ak42": llama2.c's newer (version ≥ 1) export format

using File = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;

File open_file(const std::string& path) {
  require_regular_file(path);  // a FIFO would block fopen
  File f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, ": cannot open llama2.c checkpoint: ", std::strerror(errno));
  return f;
}

// a·b·c… in 64 bits; false on overflow (the header is untrusted).
bool mul(uint64_t* acc, uint64_t factor) { return !__builtin_mul_overflow(*acc, factor, acc); }
bool add(uint64_t* acc, uint64_t term) { return !__builtin_add_overflow(*acc, term, acc); }

// Number of floats after the header, or false on overflow.
bool expected_floats(const Llama2cHeader& h, uint64_t* out) {
  const uint64_t D = uint64_t(h.dim), F = uint64_t(h.hidden_dim), L = uint64_t(h.n_layers);
  const uint64_t V = uint64_t(h.vocab_size < 0 ? -int64_t(h.vocab_size) : h.vocab_size);
  const uint64_t Dh = D / uint64_t(h.n_heads), kv = uint64_t(h.n_kv_heads) * Dh, S = uint64_t(h.seq_len);
  uint64_t total = 0;
  auto term = [&](std::initializer_list<uint64_t> factors) {
    uint64_t t = 1;
    for (uint64_t x : factors)
      if (!mul(&t, x)) return false;
    return add(&total, t);
  };
  const bool ok = term({V, D})                                   // token embedding
                  && term({L, D})                                // attention RMS
                  && term({L, D, D}) && term({L, kv, D})         // wq, wk
                  && term({L, kv, D}) && term({L, D, D})         // wv, wo
                  && term({L, D})                                // FFN RMS
                  && term({L, F, D}) && term({L, D, F})          // w1, w2
                  && term({L, F, D}) && term({D})                // w3, final RMS
                  && term({S, Dh / 2}) && term({S, Dh / 2})      // freq_cis real, imag
                  && (h.shared_classifier() || term({V, D}));    // classifier
  *out = total;
  return ok;
}

void check_shape(const std::string& path, const Param& p, std::vector<int64_t> shape) {
  if (p.shape != shape) {
    std::string want, have;
    for (int64_t d : shape) want += (want.empty() ? "" : ",") + std::to_string(d);
    for (int64_t d : p.shape) have += (have.empty() ? "" : ",") + std::to_string(d);
    fail(path, ": llama2.c tensor for '", p.name, "' is [", want, "] but the model expects [", have,
         "]; build the model from llama2c_config() of this file");
  }
}

}  // namespace

Llama2cHeader read_llama2c_header(const std::string& path) {
  File f = open_file(path);
  struct stat st {};
  if (::fstat(fileno(f.get()), &st) != 0 || !S_ISREG(st.st_mode)) fail(path, ": not a regular file");
  const uint64_t size = uint64_t(st.st_size);
  if (size < kHeaderBytes) {
    fail(path, ": file is ", size, " bytes, shorter than the ", kHeaderBytes, "-byte llama2.c header");
  }
  int32_t v[7];
  if (std::fread(v, sizeof(int32_t), 7, f.get()) != 7) fail(path, ": cannot read the llama2.c header");
  if (uint32_t(v[0]) == kVersionedMagic) {
    fail(path, ": this is llama2.c's versioned export format (magic \"ak42\", version ", v[1],
         "); only the legacy format (export.py --version 0) is supported");
  }
  Llama2cHeader h{v[0], v[1], v[2], v[3], v[4], v[5], v[6]};

  const std::pair<const char*, int32_t> fields[] = {{"dim", h.dim},         {"hidden_dim", h.hidden_dim},
                                                    {"n_layers", h.n_layers}, {"n_heads", h.n_heads},
                                                    {"n_kv_heads", h.n_kv_heads}, {"seq_len", h.seq_len}};
  for (const auto& [name, value] : fields) {
    if (value <= 0) fail(path, ": llama2.c header field ", name, " must be positive, got ", value);
  }
  if (h.vocab_size == 0 || h.vocab_size == INT32_MIN) {
    fail(path, ": llama2.c header has invalid vocab_size ", h.vocab_size);
  }
  if (h.dim % h.n_heads != 0) fail(path, ": llama2.c header: dim ", h.dim, " is not divisible by n_heads ", h.n_heads);
  if ((h.dim / h.n_heads) % 2 != 0) {
    fail(path, ": llama2.c header: head dimension dim/n_heads = ", h.dim / h.n_heads, " must be even for RoPE");
  }
  if (h.n_kv_heads > h.n_heads || h.n_heads % h.n_kv_heads != 0) {
    fail(path, ": llama2.c header: n_heads ", h.n_heads, " is not a multiple of n_kv_heads ", h.n_kv_heads);
  }
  uint64_t floats = 0;
  if (!expected_floats(h, &floats) || floats > (UINT64_MAX - kHeaderBytes) / sizeof(float)) {
    fail(path, ": llama2.c header sizes overflow 64 bits (corrupt header?)");
  }
  const uint64_t expected = kHeaderBytes + floats * sizeof(float);
  if (size != expected) {
    fail(path, ": file is ", size, " bytes but its llama2.c header (dim ", h.dim, ", hidden_dim ", h.hidden_dim,
         ", n_layers ", h.n_layers, ", n_heads ", h.n_heads, ", n_kv_heads ", h.n_kv_heads, ", vocab_size ",
         h.vocab_size, ", seq_len ", h.seq_len, ") implies exactly ", expected, " bytes",
         size < expected ? " (truncated?)" : " (trailing bytes, or not the legacy format?)");
  }
  return h;
}

ModelConfig llama2c_config(const Llama2cHeader& h) {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = h.dim;
  c.intermediate_size = h.hidden_dim;
  c.num_attention_heads = h.n_heads;
  c.num_key_value_heads = h.n_kv_heads;
  c.num_hidden_layers = h.n_layers;
  c.vocab_size = h.vocab_size < 0 ? -int64_t(h.vocab_size) : h.vocab_size;
  c.norm_eps = 1e-5;  // run.c's rmsnorm
  c.rope_theta = 10000.0;
  c.rope_scaling_factor = 1.0;
  c.max_position_embeddings = h.seq_len;
  c.tie_word_embeddings = h.shared_classifier();
  return c;
}

std::vector<float> permute_meta_to_hf_rows(const std::vector<float>& w, int64_t n_heads, int64_t rows, int64_t cols) {
  LL_CHECK(n_heads > 0 && rows % n_heads == 0 && (rows / n_heads) % 2 == 0 && int64_t(w.size()) == rows * cols,
           "permute_meta_to_hf_rows: ", w.size(), " values are not ", n_heads, " heads of an even head dim × ", cols);
  const int64_t Dh = rows / n_heads, half = Dh / 2;
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t r = 0; r < Dh; ++r) {
      const int64_t meta = r < half ? 2 * r : 2 * (r - half) + 1;  // HF row r of this head comes from Meta row `meta`
      std::memcpy(&out[size_t((h * Dh + r) * cols)], &w[size_t((h * Dh + meta) * cols)], size_t(cols) * sizeof(float));
    }
  }
  return out;
}

void load_llama2c(const std::string& path, Backend& backend, ParamStore& params, bool permute_qk) {
  LL_CHECK(!params.external(), "load_llama2c: the store's parameters are sharded (ZeRO-3); load into a plain store");
  const Llama2cHeader h = read_llama2c_header(path);  // validates the size, so the reads below cannot run short
  const ModelConfig c = llama2c_config(h);
  const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, kv = c.kv_dim();
  const int L = int(c.num_hidden_layers);

  // The store must have this architecture: same layer count, same tying, same shapes (checked per tensor).
  LL_CHECK(params.config().model_type == "llama", path, ": a llama2.c checkpoint is a Llama; the model is a ",
           params.config().model_type);
  const int store_layers = params.num_layers();
  if (store_layers != L) fail(path, ": the checkpoint has ", L, " layers but the model has ", store_layers);
  const bool store_tied = &params.lm_head() == &params.embed();
  if (store_tied != c.tie_word_embeddings) {
    fail(path, ": the checkpoint's classifier is ", c.tie_word_embeddings ? "shared with" : "separate from",
         " the token embedding but the model has tie_word_embeddings = ", store_tied ? "true" : "false");
  }

  File f = open_file(path);
  if (std::fseek(f.get(), long(kHeaderBytes), SEEK_SET) != 0) fail(path, ": cannot seek past the llama2.c header");
  // Reads the next tensor (shape = the parameter's HF shape) into `p`, optionally permuting RoPE rows.
  auto load = [&](Param& p, std::vector<int64_t> shape, const char* what, int64_t rope_heads = 0) {
    check_shape(path, p, shape);
    std::vector<float> buf(size_t(p.numel()));
    if (std::fread(buf.data(), sizeof(float), buf.size(), f.get()) != buf.size()) {
      fail(path, ": short read of ", what, " (did the file change while loading?)");
    }
    if (rope_heads > 0 && permute_qk) buf = permute_meta_to_hf_rows(buf, rope_heads, shape[0], shape[1]);
    check_finite_values(buf.data(), DType::F32, shape, path, p.name, kNonFiniteInFile);
    upload_f64(backend, p.value, std::vector<double>(buf.begin(), buf.end()));
  };
  // A Llama-only format: its tensors map to Llama's Hugging Face names.
  auto layer = [&](int l, const char* name) -> Param& {
    return params.get(str_cat("model.layers.", l, ".", name, ".weight"));
  };

  load(params.embed(), {V, D}, "token embedding");
  for (int l = 0; l < L; ++l) load(layer(l, "input_layernorm"), {D}, "attention RMS weight");
  for (int l = 0; l < L; ++l) load(layer(l, "self_attn.q_proj"), {D, D}, "wq", c.num_attention_heads);
  for (int l = 0; l < L; ++l) load(layer(l, "self_attn.k_proj"), {kv, D}, "wk", c.num_key_value_heads);
  for (int l = 0; l < L; ++l) load(layer(l, "self_attn.v_proj"), {kv, D}, "wv");
  for (int l = 0; l < L; ++l) load(layer(l, "self_attn.o_proj"), {D, D}, "wo");
  for (int l = 0; l < L; ++l) load(layer(l, "post_attention_layernorm"), {D}, "FFN RMS weight");
  for (int l = 0; l < L; ++l) load(layer(l, "mlp.gate_proj"), {F, D}, "w1");  // w1 = gate_proj
  for (int l = 0; l < L; ++l) load(layer(l, "mlp.down_proj"), {D, F}, "w2");  // w2 = down_proj
  for (int l = 0; l < L; ++l) load(layer(l, "mlp.up_proj"), {F, D}, "w3");    // w3 = up_proj
  load(params.get("model.norm.weight"), {D}, "final RMS weight");
  if (!c.tie_word_embeddings) {
    // Skip the two unused RoPE tables (seq_len · Dh/2 floats each) to reach the classifier.
    const long skip = long(2 * uint64_t(h.seq_len) * uint64_t(c.head_dim() / 2) * sizeof(float));
    if (std::fseek(f.get(), skip, SEEK_CUR) != 0) fail(path, ": cannot seek past the RoPE tables");
    load(params.lm_head(), {V, D}, "classifier");
  }
}

}  // namespace ll
