// The two model shapes the CPU model tests build on; each test then sets what it is about (trainables, LoRA,
// checkpointing, PI factor, ...).
#pragma once
#include "model/model.h"

namespace ll::test {

// GQA 4/2 heads of Dh 4, hidden 16, 2 layers, vocabulary 19, PI factor 2, S2 on, batch 2 × 8 tokens (G = 2),
// full fine-tuning.
inline ModelOptions tiny_model_options() {
  ModelOptions o;
  o.config.hidden_size = 16;
  o.config.intermediate_size = 20;
  o.config.num_attention_heads = 4;
  o.config.num_key_value_heads = 2;
  o.config.num_hidden_layers = 2;
  o.config.vocab_size = 19;
  o.config.rope_scaling_factor = 2.0;
  o.attention.use_s2 = true;
  o.batch = 2;
  o.seq_len = 8;
  o.trainable.all = true;
  return o;
}

// GQA 6/2 heads of Dh 8, hidden 48, `layers` layers, vocabulary 61, S2 on, batch 2 × 24 tokens, full fine-tuning
// (no PI factor).
inline ModelOptions small_model_options(int64_t layers = 3) {
  ModelOptions o;
  o.config.hidden_size = 48;
  o.config.intermediate_size = 72;
  o.config.num_attention_heads = 6;
  o.config.num_key_value_heads = 2;
  o.config.num_hidden_layers = layers;
  o.config.vocab_size = 61;
  o.attention.use_s2 = true;
  o.batch = 2;
  o.seq_len = 24;
  o.trainable.all = true;
  return o;
}

}  // namespace ll::test
