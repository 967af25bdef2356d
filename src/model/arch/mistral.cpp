// Mistral (model_type mistral): Llama's layer with GQA and an optional sliding window (config.json's
// `sliding_window`, applied by the attention mask: ModelConfig::sliding_window). Like Qwen2 (model/arch/qwen2.cpp) it
// is the Llama definition (model/arch/llama.h); this file holds only what differs: the names, config.json's fields
// (the window, and MistralConfig's keys) and the presets.
#include <nlohmann/json.hpp>

#include "model/arch/llama.h"
#include "model/config_json.h"
#include "util/error.h"

namespace ll {

namespace {

// transformers' MistralConfig default when config.json has no `sliding_window` key (an explicit null is none).
constexpr int64_t kMistralDefaultSlidingWindow = 4096;

void read_sliding_window(const ConfigReader& r, ModelConfig& c) {
  if (!r.json().contains("sliding_window")) {
    c.sliding_window = kMistralDefaultSlidingWindow;
    return;
  }
  if (!r.has("sliding_window")) {  // null: full causal attention
    c.sliding_window = 0;
    return;
  }
  c.sliding_window = r.get_int("sliding_window");
  if (c.sliding_window < 1)
    r.fail_field(str_cat("`sliding_window` is ", c.sliding_window,
                         "; expected a positive number of keys (a query sees itself and the sliding_window - 1 "
                         "keys before it) or null for none"));
}

class Mistral final : public Llama {
 public:
  const char* model_type() const override { return "mistral"; }
  std::vector<std::string> hf_architectures() const override { return {"MistralForCausalLM"}; }

  void read_config(const ConfigReader& r, ModelConfig& c) const override {
    Llama::read_config(r, c);
    read_sliding_window(r, c);
  }

  // MistralConfig's fields: no bias switches nor pretraining_tp; the window (null = none).
  nlohmann::json config_json(const ModelConfig& c) const override {
    nlohmann::json j = Llama::config_json(c);
    j["architectures"] = {"MistralForCausalLM"};
    j["model_type"] = "mistral";
    for (const char* key : {"attention_bias", "mlp_bias", "pretraining_tp"}) j.erase(key);
    if (c.rope_scaling_factor == 1.0 && !c.rope_llama3.enabled()) j.erase("rope_scaling");
    j["sliding_window"] = c.sliding_window > 0 ? nlohmann::json(c.sliding_window) : nlohmann::json();
    return j;
  }

  std::vector<std::pair<std::string, ModelConfig>> presets() const override {
    return {
        // The demo's size with a window shorter than its 64 positions.
        {"mistral-demo", llama_shape(64, 176, 4, 2, 4, 512, 64, 1e-5, "mistral", 16)},
        {"mistral-7b", llama_shape(4096, 14336, 32, 8, 32, 32000, 32768, 1e-5, "mistral", 4096)},
    };
  }

 private:
  // Llama's checks (validate: no q/k/v biases) apply, the window allowed.
  bool may_have_sliding_window() const override { return true; }
};

}  // namespace

const Architecture& mistral_architecture() {
  static const Mistral mistral;
  return mistral;
}

}  // namespace ll
