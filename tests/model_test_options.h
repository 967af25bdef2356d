// The two model shapes the CPU model tests build on; each test then sets what it is about (trainables, LoRA,
// checkpointing, PI factor, ...).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/tensor_host.h"
#include "model/model.h"
#include "test_util.h"

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

// One forward_backward of `model` (an fp64 backend) on the batch, then every trainable tensor's gradient against
// central differences of the mean loss (test::expect_gradient, 1e-6); returns how many tensors were checked.
inline int expect_trainable_gradients(Model& model, const std::vector<int32_t>& ids,
                                      const std::vector<int32_t>& targets) {
  model.params().zero_grads();
  model.forward_backward(ids.data(), targets.data());
  int checked = 0;
  for (Param& p : model.params().all()) {
    if (!p.trainable) continue;
    double* w = p.value.ptr<double>();
    std::vector<double> values(w, w + p.numel());
    auto loss = [&] {
      std::copy(values.begin(), values.end(), w);
      return model.forward(ids.data(), targets.data()).mean();
    };
    expect_gradient(loss, values, download_f64(model.backend(), p.grad), p.name, 1e-6);
    std::copy(values.begin(), values.end(), w);
    ++checked;
  }
  return checked;
}

}  // namespace ll::test
