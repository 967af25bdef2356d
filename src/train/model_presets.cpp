#include "train/model_presets.h"

namespace ll {

namespace {
struct Preset {
  const char* name;
  LlamaConfig config;
};

LlamaConfig make(int64_t d, int64_t f, int64_t h, int64_t hkv, int64_t layers, int64_t vocab, int64_t max_pos,
                 double eps) {
  LlamaConfig c;
  c.hidden_size = d, c.intermediate_size = f, c.num_attention_heads = h, c.num_key_value_heads = hkv;
  c.num_hidden_layers = layers, c.vocab_size = vocab, c.max_position_embeddings = max_pos, c.rms_norm_eps = eps;
  return c;
}

const Preset kPresets[] = {
    // A tiny model that trains in minutes on two CPU cores (the embedded demo).
    {"demo", make(64, 176, 4, 2, 4, 512, 64, 1e-5)},
    {"llama2-7b", make(4096, 11008, 32, 32, 32, 32000, 4096, 1e-5)},
    {"llama2-13b", make(5120, 13824, 40, 40, 40, 32000, 4096, 1e-5)},
    {"llama2-70b", make(8192, 28672, 64, 8, 80, 32000, 4096, 1e-5)},
};
}  // namespace

bool model_preset(const std::string& name, LlamaConfig* out) {
  for (const Preset& p : kPresets)
    if (name == p.name) {
      *out = p.config;
      return true;
    }
  return false;
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.push_back(p.name);
  return names;
}

}  // namespace ll
