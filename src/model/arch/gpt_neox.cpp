// GPT-NeoX (Pythia, GPT-NeoX-20B; transformers' GPTNeoXForCausalLM): the definition the engine runs.
//
// One decoder layer, T = B·L rows, H heads of Dh, D = H·Dh:
//   xn1 = LayerNorm(x; input_layernorm)            qkv = query_key_value(xn1)   [T, H·3·Dh], per head q | k | v
//   q, k, v = split(qkv)                           q, k = partial RoPE (first R = Dh·rotary_pct dims, positions/factor)
//   a = dense(Attention(q, k, v; causal or S2 mask))
//   parallel residual (Pythia):  x_out = x + a + mlp(LayerNorm(x; post_attention_layernorm))
//   sequential:                  x_mid = x + a;  x_out = x_mid + mlp(LayerNorm(x_mid; post_attention_layernorm))
//   mlp(h) = dense_4h_to_h(gelu(dense_h_to_4h(h)))  (exact erf GELU; every linear has a bias)
// Then the final LayerNorm (gpt_neox.final_layer_norm); the engine applies embed_out and the loss.
//
// The fused query_key_value weight, its bias and a LoRA B on it stay in Hugging Face's per-head [H, 3, Dh] row layout
// (read and written unchanged); split_qkv / merge_qkv (backend.h) move the rows in and out of q, k, v.
#include <cmath>
#include <optional>

#include <nlohmann/json.hpp>

#include "model/architecture.h"
#include "model/config_json.h"
#include "model/params.h"
#include "util/error.h"
#include "util/strings.h"

namespace ll {

namespace {

// Parameter slots of a decoder layer, in Hugging Face (and arena) order, and of the outer group.
enum LayerSlot : int {
  kLn1,
  kLn1Bias,
  kLn2,
  kLn2Bias,
  kQkv,
  kQkvBias,
  kDense,
  kDenseBias,
  kUp,
  kUpBias,
  kDown,
  kDownBias
};
enum OuterSlot : int { kEmbed, kFinalNorm, kFinalNormBias, kHead };

// The layer's saved tensors (activation schema order) and backward scratch. kResidual is x_mid (sequential residual,
// read by backward) or the MLP's output before it is added (parallel residual, a forward temporary).
enum Saved : int {
  kXn1, kMean1, kRstd1, kQkvS, kQs, kKs, kVs, kAttn, kLse, kResidual, kXn2, kMean2, kRstd2, kUpS, kAct
};
enum Scratch : int { kDAttn, kDAct, kDQ, kDK, kDV, kDQkv };

constexpr const char* kClass = "GPTNeoXForCausalLM";

ModelConfig pythia(int64_t d, int64_t f, int64_t heads, int64_t layers) {
  ModelConfig c;
  c.model_type = "gpt_neox";
  c.hidden_size = d, c.intermediate_size = f, c.num_attention_heads = heads, c.num_key_value_heads = heads;
  c.num_hidden_layers = layers, c.vocab_size = 50304, c.max_position_embeddings = 2048, c.norm_eps = 1e-5;
  c.rotary_dims = d / heads / 4;  // rotary_pct 0.25
  c.parallel_residual = true;
  c.hidden_act = "gelu";
  return c;
}

// The one value several optional fields give (they must agree); `fallback` when none is present.
double agreed_value(const ConfigReader& r, const std::vector<std::pair<std::string, std::optional<double>>>& fields,
                    double fallback) {
  std::optional<std::pair<std::string, double>> first;
  for (const auto& [name, value] : fields) {
    if (!value) continue;
    if (first && first->second != *value)
      r.fail_field(str_cat("`", first->first, "` (", first->second, ") and `", name, "` (", *value, ") disagree"));
    if (!first) first = {name, *value};
  }
  return first ? first->second : fallback;
}

std::optional<double> optional_number(const ConfigReader& r, const char* key) {
  return r.has(key) ? std::optional<double>(r.get_number(key)) : std::nullopt;
}

// rope_parameters.<key> (transformers 5), when rope_parameters is an object holding it.
std::optional<double> rope_parameter(const ConfigReader& r, const char* key) {
  const nlohmann::json* p = r.field("rope_parameters");
  if (p == nullptr || !p->is_object()) return std::nullopt;  // read_rope_scaling names a malformed one
  return optional_number(ConfigReader(*p, r.where() + " (rope_parameters)"), key);
}

// rotary_pct as transformers writes it: R / Dh, nudged up when int(Dh · pct) would round below R.
double rotary_pct(int64_t rotary_dims, int64_t head_dim) {
  double pct = double(rotary_dims) / double(head_dim);
  while (int64_t(double(head_dim) * pct) < rotary_dims) pct = std::nextafter(pct, 2.0);
  return pct;
}

class GptNeoX final : public Architecture {
 public:
  const char* model_type() const override { return "gpt_neox"; }
  std::vector<std::string> hf_architectures() const override { return {kClass}; }

  void read_config(const ConfigReader& r, ModelConfig& c) const override {
    const std::string act = r.get_string("hidden_act");
    if (!act.empty() && act != "gelu")
      r.fail_field(str_cat("`hidden_act` is \"", act, "\"; GPT-NeoX's MLP here is the exact (erf) GELU, \"gelu\" ",
                           "(\"gelu_new\" and the other approximations are not implemented)"));
    if (!r.get_bool("attention_bias", true))
      r.fail_field("`attention_bias` is false; GPT-NeoX's query_key_value and dense have biases and this definition "
                   "needs them");
    c.hidden_size = r.get_int("hidden_size");
    c.intermediate_size = r.get_int("intermediate_size");
    c.num_attention_heads = r.get_int("num_attention_heads");
    c.num_hidden_layers = r.get_int("num_hidden_layers");
    c.vocab_size = r.get_int("vocab_size");
    c.max_position_embeddings = r.get_int("max_position_embeddings", 2048);
    c.norm_eps = r.get_number("layer_norm_eps", 1e-5);
    c.parallel_residual = r.get_bool("use_parallel_residual", true);
    c.tie_word_embeddings = r.get_bool("tie_word_embeddings", false);
    c.hidden_act = "gelu";
    c.num_key_value_heads = c.num_attention_heads;
    if (r.has("num_key_value_heads") && r.get_int("num_key_value_heads") != c.num_attention_heads)
      r.fail_field(str_cat("`num_key_value_heads` is ", r.get_int("num_key_value_heads"),
                           " but GPT-NeoX has no grouped-query attention (num_attention_heads ", c.num_attention_heads,
                           ")"));

    // RoPE base: rotary_emb_base (every transformers version), rope_theta (4.4x writes it too), or
    // rope_parameters.rope_theta (5.x); scaling from rope_scaling / rope_parameters.
    const bool base_key = r.has("rotary_emb_base") || !r.has("rope_theta");
    read_rope_scaling(r, c, base_key ? "rotary_emb_base" : "rope_theta");
    if (base_key && r.has("rope_theta") && r.get_number("rope_theta") != c.rope_theta)
      r.fail_field(str_cat("`rotary_emb_base` (", c.rope_theta, ") and `rope_theta` (", r.get_number("rope_theta"),
                           ") disagree"));
    // Rotary fraction: rotary_pct, partial_rotary_factor (4.4x writes both), rope_parameters.partial_rotary_factor.
    const double pct = agreed_value(r,
                                    {{"rotary_pct", optional_number(r, "rotary_pct")},
                                     {"partial_rotary_factor", optional_number(r, "partial_rotary_factor")},
                                     {"rope_parameters.partial_rotary_factor",
                                      rope_parameter(r, "partial_rotary_factor")}},
                                    0.25);
    if (!(pct > 0 && pct <= 1)) r.fail_field(str_cat("`rotary_pct` must be in (0, 1], got ", pct));
    if (c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0) {
      const int64_t head_dim = c.hidden_size / c.num_attention_heads;
      c.rotary_dims = int64_t(double(head_dim) * pct);  // transformers: int(head_size * rotary_pct)
      if (c.rotary_dims < 2 || c.rotary_dims % 2 != 0)
        r.fail_field(str_cat("`rotary_pct` ", pct, " of the head dimension ", head_dim, " gives ", c.rotary_dims,
                             " rotary dimensions; they must be even and at least 2"));
    }
  }

  nlohmann::json config_json(const ModelConfig& c) const override {
    nlohmann::json j = nlohmann::json::object();  // keys come out sorted, as transformers writes them
    j["architectures"] = {kClass};
    j["attention_bias"] = true;
    j["attention_dropout"] = 0.0;
    j["classifier_dropout"] = 0.1;
    j["hidden_act"] = "gelu";
    j["hidden_dropout"] = 0.0;
    j["hidden_size"] = c.hidden_size;
    j["initializer_range"] = 0.02;
    j["intermediate_size"] = c.intermediate_size;
    j["layer_norm_eps"] = c.norm_eps;
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["model_type"] = "gpt_neox";
    j["num_attention_heads"] = c.num_attention_heads;
    j["num_hidden_layers"] = c.num_hidden_layers;
    // Exactly {type, factor}: transformers 4.31–4.42 reject any other key in rope_scaling; 5.x reads it (and
    // rotary_pct / rotary_emb_base) into rope_parameters.
    j["rope_scaling"] = c.rope_scaling_factor != 1.0
                            ? nlohmann::json{{"type", "linear"}, {"factor", c.rope_scaling_factor}}
                            : nlohmann::json();
    j["rotary_emb_base"] = c.rope_theta;
    j["rotary_pct"] = rotary_pct(rotary_dims(c), c.head_dim());
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["use_cache"] = true;
    j["use_parallel_residual"] = c.parallel_residual;
    j["vocab_size"] = c.vocab_size;
    return j;
  }

  void validate(const ModelConfig& c) const override {
    LL_CHECK(c.hidden_act == "gelu", "model config: GPT-NeoX's MLP is the exact GELU (`hidden_act` \"gelu\"), got \"",
             c.hidden_act, "\"");
    LL_CHECK(c.num_key_value_heads == c.num_attention_heads, "model config: GPT-NeoX has no grouped-query attention: ",
             "num_key_value_heads (", c.num_key_value_heads, ") must equal num_attention_heads (",
             c.num_attention_heads, ")");
    LL_CHECK(!c.rope_llama3.enabled(), "model config: rope_type \"llama3\" is for Llama-3 models; GPT-NeoX supports "
             "\"default\" and \"linear\" RoPE scaling");
  }

  // LongLoRA's fine-tune.py for gpt-neox: the fused projection and the attention's output (`dense` as a PEFT suffix
  // selects attention.dense only, not the MLP's dense_h_to_4h / dense_4h_to_h).
  std::string default_lora_targets() const override { return "query_key_value,dense"; }

  std::vector<std::pair<std::string, ModelConfig>> presets() const override {
    return {
        {"pythia-70m", pythia(512, 2048, 8, 6)},
        {"pythia-160m", pythia(768, 3072, 12, 12)},
        {"pythia-410m", pythia(1024, 4096, 16, 24)},
        {"pythia-1.4b", pythia(2048, 8192, 16, 24)},
    };
  }

  // Buffers older checkpoints saved with the weights: the causal mask, its fill value, the rotary frequencies.
  bool ignored_tensor(const std::string& name) const override {
    for (const char* suffix : {".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq"})
      if (ends_with(name, suffix)) return true;
    return false;
  }

  std::vector<ParamSpec> parameter_table(const ModelConfig& c) const override {
    const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
    std::vector<ParamSpec> t;
    t.push_back({"gpt_neox.embed_in.weight", ParamRole::Embedding, kOuterGroup, kEmbed, {V, D}});
    for (int l = 0; l < int(c.num_hidden_layers); ++l) {
      const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
      auto norm = [&](const std::string& name, int slot) {
        t.push_back({p + name + ".weight", ParamRole::Norm, l, slot, {D}});
        t.push_back({p + name + ".bias", ParamRole::NormBias, l, slot + 1, {D}});
      };
      auto linear = [&](const std::string& name, int slot, int64_t out, int64_t in) {
        t.push_back({p + name + ".weight", ParamRole::Linear, l, slot, {out, in}});
        ParamSpec bias{p + name + ".bias", ParamRole::Bias, l, slot + 1, {out}};
        bias.bias_of = slot;
        t.push_back(bias);
      };
      norm("input_layernorm", kLn1);
      norm("post_attention_layernorm", kLn2);
      linear("attention.query_key_value", kQkv, 3 * D, D);
      linear("attention.dense", kDense, D, D);
      linear("mlp.dense_h_to_4h", kUp, F, D);
      linear("mlp.dense_4h_to_h", kDown, D, F);
    }
    t.push_back({"gpt_neox.final_layer_norm.weight", ParamRole::Norm, kOuterGroup, kFinalNorm, {D}});
    t.push_back({"gpt_neox.final_layer_norm.bias", ParamRole::NormBias, kOuterGroup, kFinalNormBias, {D}});
    ParamSpec head{"embed_out.weight", ParamRole::OutputHead, kOuterGroup, kHead, {V, D}};
    if (c.tie_word_embeddings) head.tied_to = "gpt_neox.embed_in.weight";
    t.push_back(head);
    return t;
  }

  ActivationSchema activation_schema(const ModelConfig& c) const override {
    const int64_t D = c.hidden_size, F = c.intermediate_size;
    ActivationSchema s;
    s.saved = {TensorSpec::matrix("xn1", D),
               TensorSpec::row_stat("mean1"),
               TensorSpec::row_stat("rstd1"),
               TensorSpec::matrix("qkv", 3 * D),
               TensorSpec::matrix("q", D),
               TensorSpec::matrix("k", D),
               TensorSpec::matrix("v", D),
               TensorSpec::matrix("attn", D),
               TensorSpec::attention_lse("lse"),
               TensorSpec::matrix(c.parallel_residual ? "mlp_out" : "x_mid", D),
               TensorSpec::matrix("xn2", D),
               TensorSpec::row_stat("mean2"),
               TensorSpec::row_stat("rstd2"),
               TensorSpec::matrix("up", F),
               TensorSpec::matrix("act", F)};
    s.saved[kQkvS].read_in_backward = false;  // split into q, k, v at once; backward merges their gradients instead
    s.saved[kResidual].read_in_backward = !c.parallel_residual;
    s.saved[kAct].only_input_of = kDown;  // the GELU output: read again only for dense_4h_to_h's gradient/adapter
    s.saved[kUpS].mlp_tile = s.saved[kAct].mlp_tile = true;
    s.scratch = {TensorSpec::matrix("d_attn", D), TensorSpec::matrix("d_act", F),  TensorSpec::matrix("dq", D),
                 TensorSpec::matrix("dk", D),     TensorSpec::matrix("dv", D),     TensorSpec::matrix("dqkv", 3 * D)};
    // The MLP's gradient is done before the attention's begin. The parallel form reads ∂loss/∂x_out in both branches
    // before either LayerNorm adds to it, so d_attn is taken first and lives through the MLP's backward.
    s.scratch[kDAct].phase = 0;
    s.scratch[kDAct].mlp_tile = true;
    for (int i = kDQ; i <= kDQkv; ++i) s.scratch[size_t(i)].phase = 1;
    s.scratch[kDAttn].phase = c.parallel_residual ? -1 : 1;
    s.final_norm = {TensorSpec::row_stat("mean"), TensorSpec::row_stat("rstd")};
    return s;
  }

  void forward(Block& b) const override {
    const ModelConfig& c = b.config();
    Backend& be = b.backend();
    const int64_t T = b.rows(), H = c.num_attention_heads, Dh = c.head_dim();
    const Tensor &x = b.input(), &out = b.output(), &xn1 = b.saved(kXn1), &qkv = b.saved(kQkvS);
    const Tensor &q = b.saved(kQs), &k = b.saved(kKs), &v = b.saved(kVs), &attn = b.saved(kAttn);
    const Tensor &resid = b.saved(kResidual), &xn2 = b.saved(kXn2);

    be.layernorm_forward(xn1, b.saved(kMean1), b.saved(kRstd1), x, b.param(kLn1).value, b.param(kLn1Bias).value,
                         c.norm_eps);
    b.project(kQkv, qkv, xn1);
    be.split_qkv(q.view({T, H, Dh}), k.view({T, H, Dh}), v.view({T, H, Dh}), qkv);
    be.rope_forward(q.view({T, H, Dh}), b.positions(), b.rope());
    be.rope_forward(k.view({T, H, Dh}), b.positions(), b.rope());
    b.attention(attn, b.saved(kLse), q, k, v);

    // Parallel: out = x + a, the MLP reads LN(x) and adds into out. Sequential: x_mid = x + a, the MLP reads
    // LN(x_mid).
    const Tensor& attn_sum = c.parallel_residual ? out : resid;
    b.project(kDense, attn_sum, attn);
    be.add(attn_sum, attn_sum, x);
    const Tensor& mlp_in = c.parallel_residual ? x : resid;
    be.layernorm_forward(xn2, b.saved(kMean2), b.saved(kRstd2), mlp_in, b.param(kLn2).value, b.param(kLn2Bias).value,
                         c.norm_eps);
    b.mlp_forward();
  }

  // The MLP, row-local (the engine may run it over row tiles): act = gelu(dense_h_to_4h(xn2)).
  void mlp_intermediates(const Block& t) const override {
    t.project(kUp, t.saved(kUpS), t.saved(kXn2));
    t.backend().gelu_forward(t.saved(kAct), t.saved(kUpS));
  }

  // Parallel: out (= x + a) += dense_4h_to_h(act), through mlp_out. Sequential: out = dense_4h_to_h(act) + x_mid.
  void mlp_output(const Block& t) const override {
    const Tensor &out = t.output(), &resid = t.saved(kResidual);
    if (t.config().parallel_residual) {
      t.project(kDown, resid, t.saved(kAct));
      t.backend().add(out, out, resid);
    } else {
      t.project(kDown, out, t.saved(kAct));
      t.backend().add(out, out, resid);
    }
  }

  // ∂loss/∂mlp_out (= ∂loss/∂x_out) → ∂loss/∂xn2 (into d_hidden).
  void mlp_backward(const Block& t) const override {
    const Tensor& d_act = t.scratch(kDAct);
    t.project_backward(kDown, d_act, t.d_resid(), t.saved(kAct), false);
    t.backend().gelu_backward(d_act, d_act, t.saved(kUpS));
    t.project_backward(kUp, t.d_hidden(), d_act, t.saved(kXn2), false);
  }

  // The residual adds' backward is the identity, expressed by accumulating the LayerNorms' input gradients into
  // d_resid once every reader of ∂loss/∂(their residual) is done with it.
  void backward(Block& b) const override {
    const ModelConfig& c = b.config();
    Backend& be = b.backend();
    const int64_t T = b.rows(), H = c.num_attention_heads, Dh = c.head_dim();
    const Tensor &d_resid = b.d_resid(), &d_h = b.d_hidden(), &d_attn = b.scratch(kDAttn);
    const Tensor &dq = b.scratch(kDQ), &dk = b.scratch(kDK), &dv = b.scratch(kDV), &dqkv = b.scratch(kDQkv);
    const Param &ln1 = b.param(kLn1), &ln1_bias = b.param(kLn1Bias);
    const Param &ln2 = b.param(kLn2), &ln2_bias = b.param(kLn2Bias);

    // Parallel: ∂loss/∂a = ∂loss/∂x_out, read before the MLP's LayerNorm adds its input gradient into d_resid.
    if (c.parallel_residual) b.project_backward(kDense, d_attn, d_resid, b.saved(kAttn), false);
    // MLP: ∂loss/∂mlp_out = ∂loss/∂x_out.
    b.mlp_backward();
    be.layernorm_backward(d_resid, ln2.grad, ln2_bias.grad, d_h, c.parallel_residual ? b.input() : b.saved(kResidual),
                          ln2.value, b.saved(kMean2), b.saved(kRstd2), true);
    // Sequential: d_resid now holds ∂loss/∂x_mid = ∂loss/∂a.
    if (!c.parallel_residual) b.project_backward(kDense, d_attn, d_resid, b.saved(kAttn), false);

    b.attention_backward(dq, dk, dv, d_attn, b.saved(kQs), b.saved(kKs), b.saved(kVs), b.saved(kAttn), b.saved(kLse));
    be.rope_backward(dq.view({T, H, Dh}), b.positions(), b.rope());
    be.rope_backward(dk.view({T, H, Dh}), b.positions(), b.rope());
    be.merge_qkv(dqkv, dq.view({T, H, Dh}), dk.view({T, H, Dh}), dv.view({T, H, Dh}));
    b.project_backward(kQkv, d_h, dqkv, b.saved(kXn1), false);
    be.layernorm_backward(d_resid, ln1.grad, ln1_bias.grad, d_h, b.input(), ln1.value, b.saved(kMean1),
                          b.saved(kRstd1), true);
  }

  void final_norm_forward(Block& b) const override {
    b.backend().layernorm_forward(b.output(), b.saved(0), b.saved(1), b.input(), b.param(kFinalNorm).value,
                                  b.param(kFinalNormBias).value, b.config().norm_eps);
  }

  void final_norm_backward(Block& b) const override {
    const Param &w = b.param(kFinalNorm), &bias = b.param(kFinalNormBias);
    b.backend().layernorm_backward(b.d_resid(), w.grad, bias.grad, b.d_hidden(), b.input(), w.value, b.saved(0),
                                   b.saved(1), false);
  }

 private:
  static int64_t rotary_dims(const ModelConfig& c) { return c.rotary_dims == 0 ? c.head_dim() : c.rotary_dims; }
};

}  // namespace

const Architecture& gpt_neox_architecture() {
  static const GptNeoX neox;
  return neox;
}

}  // namespace ll
