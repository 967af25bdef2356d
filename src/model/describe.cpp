#include "model/describe.h"

#include <sstream>

#include "model/registry.h"
#include "util/error.h"

namespace ll {

std::string describe_rope(const ModelConfig& c) {
  // What the engine rotates with: a llama3 config and LongLoRA's linear factor compose into one llama3 rule.
  const RopeParams rope = rope_params(c);
  if (!rope.llama3.enabled()) return str_cat("linear scaling (position interpolation) factor ", rope.factor);
  std::string s = describe_rope_llama3(rope.llama3);
  if (c.rope_scaling_factor != 1.0)
    s += str_cat(" (config.json's factor ", c.rope_llama3.factor, " × linear factor ", c.rope_scaling_factor, ")");
  return s;
}

std::string describe_model(const ModelConfig& c) {
  const Architecture& arch = architecture_for(c.model_type);
  int64_t params = 0;  // stored tensors only: a tied head is the embedding
  for (const ParamSpec& s : arch.parameter_table(c)) {
    if (!s.tied_to.empty()) continue;
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    params += n;
  }
  const int64_t rotary = c.rotary_dims == 0 ? c.head_dim() : c.rotary_dims;
  std::ostringstream o;
  o << "model_type: " << c.model_type;
  const std::vector<std::string> classes = arch.hf_architectures();
  if (!classes.empty()) o << " (" << classes.front() << ")";
  o << "\nparameters: " << params << " (" << str_cat(double(params) / 1e6) << " M)"
    << "\nlayers: " << c.num_hidden_layers << "\nhidden_size: " << c.hidden_size
    << "\nintermediate_size: " << c.intermediate_size << " (" << c.hidden_act << ")"
    << "\nattention_heads: " << c.num_attention_heads << " of " << c.head_dim() << " dims, " << c.num_key_value_heads
    << " key/value heads" << (c.num_key_value_heads < c.num_attention_heads ? " (grouped-query)" : "")
    << "\nrotary: " << rotary << " of " << c.head_dim() << " head dims, theta " << c.rope_theta;
  o << ", " << describe_rope(c);
  if (c.sliding_window > 0)
    o << "\nsliding_window: " << c.sliding_window << " (a query sees itself and the " << c.sliding_window - 1
      << " keys before it)";
  o << "\nmax_position_embeddings: " << c.max_position_embeddings
    << "\nresidual: " << (c.parallel_residual ? "parallel (attention and MLP read the same input)" : "sequential")
    << "\nnorm_eps: " << c.norm_eps << "\nvocab_size: " << c.vocab_size
    << "\ntie_word_embeddings: " << (c.tie_word_embeddings ? "true" : "false") << "\n";
  return o.str();
}

}  // namespace ll
