// Llama (Llama-2, Llama-3.x and the checkpoints shaped like them): the definition the engine runs. Qwen2
// (model/arch/qwen2.cpp) is this layer with q/k/v biases (ModelConfig::qkv_bias), Mistral (model/arch/mistral.cpp)
// with a sliding window.
//
// One decoder layer, T = B·L rows:
//   xn1 = RMSNorm(x; input_layernorm)              q,k,v = proj(xn1) (+ bias)  (LoRA where configured)
//   q,k = RoPE(q,k; positions, rope_params)        o = Attention(q,k,v; causal or S2 mask)
//   x_mid = x + o_proj(o)
//   xn2 = RMSNorm(x_mid; post_attention_layernorm) act = silu(gate_proj(xn2)) ⊙ up_proj(xn2)
//   x_out = x_mid + down_proj(act)
// Then the final RMSNorm (model.norm); the engine applies lm_head (or the tied embedding) and the loss.
//
// Mistral (model/arch/mistral.cpp) is this block with GQA and an optional sliding window (ModelConfig::sliding_window,
// applied by the attention mask).
#include <cmath>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "model/arch/llama.h"
#include "model/config_json.h"
#include "model/params.h"
#include "util/error.h"
#include "util/strings.h"

namespace ll {

namespace {

// Parameter slots of a decoder layer, in Hugging Face (and arena) order, and of the outer group. The q/k/v biases
// (Qwen2) come last so that Llama's slots stay as they are.
enum LayerSlot : int { kAttnNorm, kQ, kK, kV, kO, kMlpNorm, kGate, kUp, kDown, kQBias, kKBias, kVBias };
enum OuterSlot : int { kEmbed, kFinalNorm, kHead };

// The layer's saved tensors (activation schema order) and backward scratch.
enum Saved : int { kXn1, kRstd1, kQs, kKs, kVs, kAttn, kLse, kXMid, kXn2, kRstd2, kGateS, kUpS, kAct };
enum Scratch : int { kDGate, kDUp, kDAct, kDQ, kDK, kDV, kDAttn };

// config.json's rope_scaling for `c`. Linear: exactly {type, factor} (transformers 4.31–4.42 reject any other key),
// null when the factor is 1. llama3: Meta's form with LongLoRA's factor composed in (model/config.h), which
// transformers turns into the frequencies rope_params(c) gives.
nlohmann::json rope_scaling_json(const ModelConfig& c) {
  if (c.rope_llama3.enabled()) {
    const RopeParams p = rope_params(c);
    return {{"rope_type", "llama3"},
            {"factor", p.llama3.factor},
            {"low_freq_factor", p.llama3.low_freq_factor},
            {"high_freq_factor", p.llama3.high_freq_factor},
            {"original_max_position_embeddings", p.llama3.original_max_position_embeddings}};
  }
  return c.rope_scaling_factor != 1.0 ? nlohmann::json{{"type", "linear"}, {"factor", c.rope_scaling_factor}}
                                      : nlohmann::json();
}

}  // namespace

ModelConfig llama_shape(int64_t d, int64_t f, int64_t h, int64_t hkv, int64_t layers, int64_t vocab, int64_t max_pos,
                        double eps, const char* model_type, int64_t sliding_window) {
  ModelConfig c;
  c.model_type = model_type;
  c.sliding_window = sliding_window;
  c.hidden_size = d, c.intermediate_size = f, c.num_attention_heads = h, c.num_key_value_heads = hkv;
  c.num_hidden_layers = layers, c.vocab_size = vocab, c.max_position_embeddings = max_pos, c.norm_eps = eps;
  return c;
}

ModelConfig llama3_shape(int64_t d, int64_t f, int64_t h, int64_t hkv, int64_t layers, double rope_factor, bool tied) {
  ModelConfig c = llama_shape(d, f, h, hkv, layers, 128256, 131072, 1e-5);
  c.rope_theta = 500000.0;
  c.rope_llama3.factor = rope_factor;  // low 1, high 4, original 8192: RopeLlama3's defaults are Llama-3.1's
  c.tie_word_embeddings = tied;
  return c;
}

const char* Llama::model_type() const { return "llama"; }
std::vector<std::string> Llama::hf_architectures() const { return {"LlamaForCausalLM"}; }

void Llama::read_config(const ConfigReader& r, ModelConfig& c) const {
  const std::string& where = r.where();
  const std::string act = r.get_string("hidden_act");
  if (!act.empty() && act != "silu") fail(where, ": `hidden_act` is \"", act, "\"; Llama's MLP needs \"silu\"");
  for (const char* key : {"attention_bias", "mlp_bias"})
    if (r.get_bool(key, false))
      fail(where, ": `", key, "` is true; Llama-2 has no biases and this definition has none");
  c.hidden_size = r.get_int("hidden_size");
  c.intermediate_size = r.get_int("intermediate_size");
  c.num_attention_heads = r.get_int("num_attention_heads");
  c.num_key_value_heads = r.get_int("num_key_value_heads", c.num_attention_heads);
  c.num_hidden_layers = r.get_int("num_hidden_layers");
  c.vocab_size = r.get_int("vocab_size");
  c.norm_eps = r.get_number("rms_norm_eps");
  c.max_position_embeddings = r.get_int("max_position_embeddings");
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", false);
  c.hidden_act = "silu";
  read_rope_scaling(r, c);
  if (r.has("head_dim")) {
    const int64_t head_dim = r.get_int("head_dim");
    if (c.num_attention_heads > 0 && head_dim != c.hidden_size / c.num_attention_heads)
      fail(where, ": `head_dim` is ", head_dim, " but hidden_size / num_attention_heads = ", c.hidden_size, " / ",
           c.num_attention_heads, "; this engine needs head_dim = hidden_size / num_attention_heads");
  }
}

nlohmann::json Llama::config_json(const ModelConfig& c) const {
  nlohmann::json j = nlohmann::json::object();  // std::map-backed: keys come out sorted, as transformers writes them
  j["architectures"] = {"LlamaForCausalLM"};
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["head_dim"] = c.head_dim();
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = c.intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  if (c.rope_llama3.enabled())  // composed: the context covered grows with LongLoRA's factor (rope_scaling_json)
    j["max_position_embeddings"] = int64_t(std::llround(double(c.max_position_embeddings) * c.rope_scaling_factor));
  j["mlp_bias"] = false;
  j["model_type"] = "llama";
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["pretraining_tp"] = 1;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_scaling"] = rope_scaling_json(c);
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["use_cache"] = true;
  j["vocab_size"] = c.vocab_size;
  return j;
}

void Llama::validate(const ModelConfig& c) const {
  validate_layer(c);
  LL_CHECK(!c.qkv_bias, "model config: model_type \"", model_type(),
           "\" has no q/k/v biases (model_type \"qwen2\" has them)");
}

void Llama::validate_layer(const ModelConfig& c) const {
  LL_CHECK(c.hidden_act == "silu", "model config: Llama's MLP is SwiGLU (`hidden_act` \"silu\"), got \"",
           c.hidden_act, "\"");
  LL_CHECK(!c.parallel_residual, "model config: Llama's residual is sequential (no parallel residual)");
  LL_CHECK(c.rotary_dims == 0 || c.rotary_dims == c.head_dim(), "model config: Llama rotates the whole head (",
           c.head_dim(), " dimensions), got rotary dimensions ", c.rotary_dims);
  LL_CHECK(may_have_sliding_window() || c.sliding_window == 0, "model config: `sliding_window` ", c.sliding_window,
           " is Mistral's (model_type \"mistral\"); ", model_type(), " attends to every earlier position");
}

std::vector<std::pair<std::string, ModelConfig>> Llama::presets() const {
  return {
      // A tiny model that trains in minutes on two CPU cores (the embedded demo).
      {"demo", llama_shape(64, 176, 4, 2, 4, 512, 64, 1e-5)},
      {"llama2-7b", llama_shape(4096, 11008, 32, 32, 32, 32000, 4096, 1e-5)},
      {"llama2-13b", llama_shape(5120, 13824, 40, 40, 40, 32000, 4096, 1e-5)},
      {"llama2-70b", llama_shape(8192, 28672, 64, 8, 80, 32000, 4096, 1e-5)},
      // Llama-3.1 / 3.2 as released: 128k vocabulary, GQA, rope_theta 5e5 and the llama3 rope rule (the step
      // benchmarks of issue 19 use these shapes; weights always come from a folder).
      {"llama3.1-8b", llama3_shape(4096, 14336, 32, 8, 32, 8.0, false)},
      {"llama3.2-1b", llama3_shape(2048, 8192, 32, 8, 16, 32.0, true)},
  };
}

// Names the field: vocab_size and hidden_size (embed_tokens, lm_head), num_hidden_layers (the layer indices
// present), hidden_size / num_key_value_heads / intermediate_size (the first layer's q_proj, k_proj, gate_proj).
void Llama::check_folder_shapes(const ModelConfig& c, const std::map<std::string, FolderTensor>& w,
                         const std::string& where) const {
  const auto field = [](const char* name, int64_t value) { return str_cat("`", name, "` ", value); };
  // `field_text` must equal dimension `dim` of matrix `name` when the folder has it.
  const auto expect_dim = [&](const std::string& name, int dim, int64_t expected, const std::string& field_text,
                              const char* layout) {
    const auto it = w.find(name);
    if (it == w.end() || it->second.shape.size() != 2 || it->second.shape[size_t(dim)] == expected) return;
    fail(where, ": ", field_text, " does not match the weights: `", name, "` is ", shape_text(it->second.shape), " (",
         layout, ") in ", it->second.file, "; is config.json from another model?");
  };
  expect_dim("model.embed_tokens.weight", 0, c.vocab_size, field("vocab_size", c.vocab_size),
             "vocab_size × hidden_size");
  expect_dim("model.embed_tokens.weight", 1, c.hidden_size, field("hidden_size", c.hidden_size),
             "vocab_size × hidden_size");
  if (!c.tie_word_embeddings)
    expect_dim("lm_head.weight", 0, c.vocab_size, field("vocab_size", c.vocab_size), "vocab_size × hidden_size");
  // Layer indices present: the N of every "model.layers.N." name.
  const std::string prefix = "model.layers.";
  std::set<int64_t> layers;
  for (auto it = w.lower_bound(prefix); it != w.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    int64_t index = 0;
    size_t i = prefix.size();
    for (; i < it->first.size() && it->first[i] >= '0' && it->first[i] <= '9' && index < (int64_t(1) << 40); ++i)
      index = index * 10 + (it->first[i] - '0');
    if (i > prefix.size() && i < it->first.size() && it->first[i] == '.') layers.insert(index);
  }
  if (!layers.empty() &&
      (*layers.rbegin() + 1 != c.num_hidden_layers || int64_t(layers.size()) != c.num_hidden_layers))
    fail(where, ": ", field("num_hidden_layers", c.num_hidden_layers), " does not match the weights, which hold ",
         layers.size(), " layer(s) numbered ", *layers.begin(), " to ", *layers.rbegin(),
         " (model.layers.N.*); is config.json from another model?");
  const std::string layer0 = prefix + std::to_string(layers.empty() ? 0 : *layers.begin()) + ".";
  expect_dim(layer0 + "self_attn.q_proj.weight", 1, c.hidden_size, field("hidden_size", c.hidden_size),
             "num_attention_heads × head_dim by hidden_size");
  expect_dim(layer0 + "self_attn.k_proj.weight", 0, c.kv_dim(),
             str_cat(field("num_key_value_heads", c.num_key_value_heads), " × head_dim ", c.head_dim(), " = ",
                     c.kv_dim()),
             "num_key_value_heads × head_dim by hidden_size");
  expect_dim(layer0 + "mlp.gate_proj.weight", 0, c.intermediate_size,
             field("intermediate_size", c.intermediate_size), "intermediate_size × hidden_size");
}

bool Llama::ignored_tensor(const std::string& name) const {
  return ends_with(name, "rotary_emb.inv_freq");
}

std::vector<ParamSpec> Llama::parameter_table(const ModelConfig& c) const {
  const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  std::vector<ParamSpec> t;
  t.push_back({"model.embed_tokens.weight", ParamRole::Embedding, kOuterGroup, kEmbed, {V, D}});
  for (int l = 0; l < int(c.num_hidden_layers); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto add = [&](const std::string& name, ParamRole role, int slot, std::vector<int64_t> shape) {
      t.push_back({p + name, role, l, slot, std::move(shape)});
    };
    add("input_layernorm.weight", ParamRole::Norm, kAttnNorm, {D});
    for (const auto& [proj, slot, bias_slot, out] : {std::tuple{"q_proj", kQ, kQBias, c.q_dim()},
                                                     std::tuple{"k_proj", kK, kKBias, c.kv_dim()},
                                                     std::tuple{"v_proj", kV, kVBias, c.kv_dim()}}) {
      add(str_cat("self_attn.", proj, ".weight"), ParamRole::Linear, slot, {out, D});
      if (!c.qkv_bias) continue;
      add(str_cat("self_attn.", proj, ".bias"), ParamRole::Bias, bias_slot, {out});
      t.back().bias_of = slot;
    }
    add("self_attn.o_proj.weight", ParamRole::Linear, kO, {D, c.q_dim()});
    add("post_attention_layernorm.weight", ParamRole::Norm, kMlpNorm, {D});
    add("mlp.gate_proj.weight", ParamRole::Linear, kGate, {F, D});
    add("mlp.up_proj.weight", ParamRole::Linear, kUp, {F, D});
    add("mlp.down_proj.weight", ParamRole::Linear, kDown, {D, F});
  }
  t.push_back({"model.norm.weight", ParamRole::Norm, kOuterGroup, kFinalNorm, {D}});
  ParamSpec head{"lm_head.weight", ParamRole::OutputHead, kOuterGroup, kHead, {V, D}};
  if (c.tie_word_embeddings) head.tied_to = "model.embed_tokens.weight";
  t.push_back(head);
  return t;
}

std::string Llama::default_lora_targets() const { return "q_proj,k_proj,v_proj,o_proj"; }
std::vector<std::pair<std::string, std::string>> Llama::lora_aliases() const {
  return {{"q", "q_proj"},       {"k", "k_proj"},   {"v", "v_proj"},    {"o", "o_proj"},
          {"gate", "gate_proj"}, {"up", "up_proj"}, {"down", "down_proj"}};
}

ActivationSchema Llama::activation_schema(const ModelConfig& c) const {
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  ActivationSchema s;
  s.saved = {TensorSpec::matrix("xn1", D),           TensorSpec::row_stat("rstd1"),
             TensorSpec::matrix("q", c.q_dim()),     TensorSpec::matrix("k", c.kv_dim()),
             TensorSpec::matrix("v", c.kv_dim()),    TensorSpec::matrix("attn", c.q_dim()),
             TensorSpec::attention_lse("lse"),       TensorSpec::matrix("x_mid", D),
             TensorSpec::matrix("xn2", D),           TensorSpec::row_stat("rstd2"),
             TensorSpec::matrix("gate", F),          TensorSpec::matrix("up", F),
             TensorSpec::matrix("act", F)};
  s.saved[kAct].only_input_of = kDown;  // the SwiGLU output: read again only for down_proj's gradient/adapter
  for (int i : {kGateS, kUpS, kAct}) s.saved[size_t(i)].mlp_tile = true;
  // A layer's backward is done with the MLP's gradients before the attention's begin: they share memory.
  s.scratch = {TensorSpec::matrix("d_gate", F),     TensorSpec::matrix("d_up", F),
               TensorSpec::matrix("d_act", F),      TensorSpec::matrix("dq", c.q_dim()),
               TensorSpec::matrix("dk", c.kv_dim()), TensorSpec::matrix("dv", c.kv_dim()),
               TensorSpec::matrix("d_attn", c.q_dim())};
  for (int i = kDGate; i <= kDAct; ++i) s.scratch[size_t(i)].phase = 0, s.scratch[size_t(i)].mlp_tile = true;
  for (int i = kDQ; i <= kDAttn; ++i) s.scratch[size_t(i)].phase = 1;
  s.final_norm = {TensorSpec::row_stat("rstd")};
  return s;
}

void Llama::forward(Block& b) const {
  const ModelConfig& c = b.config();
  Backend& be = b.backend();
  const int64_t T = b.rows(), H = c.num_attention_heads, Hkv = c.num_key_value_heads, Dh = c.head_dim();
  const Tensor &xn1 = b.saved(kXn1), &q = b.saved(kQs), &k = b.saved(kKs), &v = b.saved(kVs);
  const Tensor &attn = b.saved(kAttn), &x_mid = b.saved(kXMid), &xn2 = b.saved(kXn2);

  be.rmsnorm_forward(xn1, b.saved(kRstd1), b.input(), b.param(kAttnNorm).value, c.norm_eps);
  b.project(kQ, q, xn1);
  b.project(kK, k, xn1);
  b.project(kV, v, xn1);
  be.rope_forward(q.view({T, H, Dh}), b.positions(), b.rope());
  be.rope_forward(k.view({T, Hkv, Dh}), b.positions(), b.rope());
  b.attention(attn, b.saved(kLse), q, k, v);
  b.project(kO, x_mid, attn);
  be.add(x_mid, x_mid, b.input());

  be.rmsnorm_forward(xn2, b.saved(kRstd2), x_mid, b.param(kMlpNorm).value, c.norm_eps);
  b.mlp_forward();
}

// The MLP, row-local (the engine may run it over row tiles): act = silu(gate(xn2)) ⊙ up(xn2).
void Llama::mlp_intermediates(const Block& t) const {
  const Tensor &gate = t.saved(kGateS), &up = t.saved(kUpS);
  t.project(kGate, gate, t.saved(kXn2));
  t.project(kUp, up, t.saved(kXn2));
  t.backend().swiglu_forward(t.saved(kAct), gate, up);
}

// x_out = x_mid + down(act)
void Llama::mlp_output(const Block& t) const {
  t.project(kDown, t.output(), t.saved(kAct));
  t.backend().add(t.output(), t.output(), t.saved(kXMid));
}

// ∂loss/∂x_out → ∂loss/∂xn2 (into d_hidden).
void Llama::mlp_backward(const Block& t) const {
  const Tensor &d_gate = t.scratch(kDGate), &d_up = t.scratch(kDUp), &d_act = t.scratch(kDAct), &d_xn = t.d_hidden();
  t.project_backward(kDown, d_act, t.d_resid(), t.saved(kAct), false);
  t.backend().swiglu_backward(d_gate, d_up, d_act, t.saved(kGateS), t.saved(kUpS));
  t.project_backward(kGate, d_xn, d_gate, t.saved(kXn2), false);
  t.project_backward(kUp, d_xn, d_up, t.saved(kXn2), true);
}

// The residual adds' backward is the identity, expressed by accumulating the norms' input gradients into d_resid.
void Llama::backward(Block& b) const {
  const ModelConfig& c = b.config();
  Backend& be = b.backend();
  const int64_t T = b.rows(), H = c.num_attention_heads, Hkv = c.num_key_value_heads, Dh = c.head_dim();
  const Tensor &d_resid = b.d_resid(), &d_xn = b.d_hidden();
  const Tensor &dq = b.scratch(kDQ), &dk = b.scratch(kDK), &dv = b.scratch(kDV), &d_attn = b.scratch(kDAttn);
  const Param &attn_norm = b.param(kAttnNorm), &mlp_norm = b.param(kMlpNorm);

  // MLP block: x_out = x_mid + down(swiglu(gate(xn2), up(xn2)))
  b.mlp_backward();
  be.rmsnorm_backward(d_resid, mlp_norm.grad, d_xn, b.saved(kXMid), mlp_norm.value, b.saved(kRstd2), true);

  // Attention block: x_mid = x_in + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1)))
  b.project_backward(kO, d_attn, d_resid, b.saved(kAttn), false);
  b.attention_backward(dq, dk, dv, d_attn, b.saved(kQs), b.saved(kKs), b.saved(kVs), b.saved(kAttn), b.saved(kLse));
  be.rope_backward(dq.view({T, H, Dh}), b.positions(), b.rope());
  be.rope_backward(dk.view({T, Hkv, Dh}), b.positions(), b.rope());
  b.project_backward(kQ, d_xn, dq, b.saved(kXn1), false);
  b.project_backward(kK, d_xn, dk, b.saved(kXn1), true);
  b.project_backward(kV, d_xn, dv, b.saved(kXn1), true);
  be.rmsnorm_backward(d_resid, attn_norm.grad, d_xn, b.input(), attn_norm.value, b.saved(kRstd1), true);
}

void Llama::final_norm_forward(Block& b) const {
  b.backend().rmsnorm_forward(b.output(), b.saved(0), b.input(), b.param(kFinalNorm).value, b.config().norm_eps);
}

void Llama::final_norm_backward(Block& b) const {
  const Param& w = b.param(kFinalNorm);
  b.backend().rmsnorm_backward(b.d_resid(), w.grad, b.d_hidden(), b.input(), w.value, b.saved(0), false);
}

const Architecture& llama_architecture() {
  static const Llama llama;
  return llama;
}

}  // namespace ll
