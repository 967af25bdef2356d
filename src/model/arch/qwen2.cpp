// Qwen2 / Qwen2.5 (model_type qwen2): Llama's layer with biases on q_proj, k_proj and v_proj (o_proj and the MLP have
// none), rms_norm_eps 1e-6 and rope_theta 1e6 in the released configs, tied embeddings in the small sizes. It is the
// Llama definition (model/arch/llama.h) with ModelConfig::qkv_bias set; this file holds only what differs: the names,
// config.json's fields and the refusal of sliding-window attention.
#include <nlohmann/json.hpp>

#include "model/arch/llama.h"
#include "model/config_json.h"
#include "util/error.h"

namespace ll {

namespace {

class Qwen2 final : public Llama {
 public:
  const char* model_type() const override { return "qwen2"; }
  std::vector<std::string> hf_architectures() const override { return {"Qwen2ForCausalLM"}; }

  void read_config(const ConfigReader& r, ModelConfig& c) const override {
    // transformers' Qwen2 applies a window only when use_sliding_window is true (every released Qwen2 / 2.5 config
    // has it false; sliding_window and max_window_layers are then unused).
    if (r.get_bool("use_sliding_window", false))
      r.fail_field("`use_sliding_window` is true: sliding-window attention is not supported for qwen2 (set it to "
                   "false to attend over the whole context, as the released Qwen2 / Qwen2.5 configs do)");
    if (const nlohmann::json* types = r.field("layer_types"); types != nullptr) {
      if (!types->is_array()) r.fail_field(str_cat("`layer_types` must be a list, got ", types->dump()));
      for (const nlohmann::json& t : *types)
        if (t != "full_attention")
          r.fail_field(str_cat("`layer_types` holds ", t.dump(), "; only \"full_attention\" layers are supported"));
    }
    Llama::read_config(r, c);
    c.qkv_bias = true;
  }

  nlohmann::json config_json(const ModelConfig& c) const override {
    nlohmann::json j = Llama::config_json(c);
    for (const char* llama_only : {"attention_bias", "mlp_bias", "pretraining_tp", "head_dim"}) j.erase(llama_only);
    j["architectures"] = {"Qwen2ForCausalLM"};
    j["model_type"] = "qwen2";
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = c.num_hidden_layers;
    return j;
  }

  void validate(const ModelConfig& c) const override {
    validate_layer(c);
    LL_CHECK(c.qkv_bias, "model config: Qwen2's q/k/v projections carry biases (qkv_bias must be set)");
  }

  // Qwen2.5 as released (its step benchmark of issue 19); weights always come from a folder.
  std::vector<std::pair<std::string, ModelConfig>> presets() const override {
    const auto qwen = [](int64_t d, int64_t f, int64_t h, int64_t hkv, int64_t layers, int64_t vocab, bool tied) {
      ModelConfig c = llama_shape(d, f, h, hkv, layers, vocab, 32768, 1e-6, "qwen2");
      c.rope_theta = 1e6;
      c.qkv_bias = true;
      c.tie_word_embeddings = tied;
      return c;
    };
    return {{"qwen2.5-7b", qwen(3584, 18944, 28, 4, 28, 152064, false)},
            {"qwen2.5-0.5b", qwen(896, 4864, 14, 2, 24, 151936, true)}};
  }
};

}  // namespace

const Architecture& qwen2_architecture() {
  static const Qwen2 qwen2;
  return qwen2;
}

}  // namespace ll
