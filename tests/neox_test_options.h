// Tiny GPT-NeoX shapes for the CPU tests of the second architecture (model, trainer, ranks).
#pragma once
#include <string>

#include "model/model.h"

namespace ll::test {

// 4 heads of Dh 4 (hidden 16), intermediate 24, 2 layers, vocabulary 23; rotary_dims of each head rotate (Pythia:
// a quarter; 2 here by default), parallel residual unless told otherwise.
inline ModelConfig tiny_neox_config(bool parallel = true, int64_t rotary_dims = 2, int64_t layers = 2) {
  ModelConfig c;
  c.model_type = "gpt_neox";
  c.hidden_size = 16, c.intermediate_size = 24, c.num_attention_heads = 4, c.num_key_value_heads = 4;
  c.num_hidden_layers = layers, c.vocab_size = 23, c.max_position_embeddings = 16;
  c.rotary_dims = rotary_dims;
  c.parallel_residual = parallel;
  c.hidden_act = "gelu";
  return c;
}

// The same model as a config.json (what build/train --model_config reads).
inline std::string tiny_neox_config_json(bool parallel = true, int64_t layers = 2) {
  return std::string(R"({"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": 16,
  "intermediate_size": 24, "num_attention_heads": 4, "num_hidden_layers": )") +
         std::to_string(layers) + R"(, "vocab_size": 50, "layer_norm_eps": 1e-5,
  "max_position_embeddings": 16, "rotary_pct": 0.5, "rotary_emb_base": 10000, "use_parallel_residual": )" +
         (parallel ? "true" : "false") + "}";
}

// PI factor 2, S2 on, batch 2 × 8 tokens (G = 2), full fine-tuning.
inline ModelOptions tiny_neox_options(bool parallel = true, int64_t rotary_dims = 2) {
  ModelOptions o;
  o.config = tiny_neox_config(parallel, rotary_dims);
  o.config.rope_scaling_factor = 2.0;
  o.attention.use_s2 = true;
  o.batch = 2;
  o.seq_len = 8;
  o.trainable.all = true;
  return o;
}

}  // namespace ll::test
