#include "model/config.h"

#include <cmath>
#include <sstream>

#include "model/registry.h"
#include "util/error.h"

namespace ll {

void ModelConfig::validate() const {
  auto positive = [](int64_t v, const char* field) {
    LL_CHECK(v > 0, "model config: `", field, "` must be a positive integer, got ", v);
  };
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(vocab_size, "vocab_size");
  positive(max_position_embeddings, "max_position_embeddings");
  LL_CHECK(hidden_size % num_attention_heads == 0, "model config: hidden_size (", hidden_size,
           ") must be divisible by num_attention_heads (", num_attention_heads, ")");
  if (rotary_dims == 0) {
    LL_CHECK(head_dim() % 2 == 0, "model config: head dimension hidden_size/num_attention_heads = ", head_dim(),
             " must be even for rotary embeddings");
  } else {
    LL_CHECK(rotary_dims > 0 && rotary_dims <= head_dim() && rotary_dims % 2 == 0, "model config: rotary dimensions (",
             rotary_dims, ") must be even and in (0, head_dim = ", head_dim(), "]");
  }
  LL_CHECK(num_attention_heads % num_key_value_heads == 0, "model config: num_attention_heads (",
           num_attention_heads, ") must be a multiple of num_key_value_heads (", num_key_value_heads, ")");
  LL_CHECK(norm_eps > 0, "model config: the norm epsilon (rms_norm_eps / layer_norm_eps) must be > 0, got ", norm_eps);
  LL_CHECK(rope_theta > 0, "model config: `rope_theta` must be > 0, got ", rope_theta);
  LL_CHECK(rope_scaling_factor >= 1.0, "model config: rope scaling `factor` must be >= 1 (linear interpolation), got ",
           rope_scaling_factor);
  LL_CHECK(sliding_window >= 0, "model config: `sliding_window` must be a positive integer or null (none), got ",
           sliding_window);
  if (rope_llama3.enabled()) check_rope_llama3(rope_llama3, "model config");
  architecture_for(model_type).validate(*this);
}

double derive_rope_factor(int64_t target_context, int64_t max_position_embeddings, double existing_factor) {
  LL_CHECK(target_context > 0, "rope factor: target context must be positive, got ", target_context);
  LL_CHECK(max_position_embeddings > 0, "rope factor: max_position_embeddings must be positive, got ",
           max_position_embeddings);
  LL_CHECK(existing_factor >= 1.0, "rope factor: existing factor must be >= 1, got ", existing_factor);
  const double original = double(max_position_embeddings) * existing_factor;
  if (double(target_context) <= original) return existing_factor;
  return std::ceil(double(target_context) / original);
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

TrainableConfig TrainableConfig::parse(const std::string& list, bool all) {
  TrainableConfig t;
  t.all = all;
  t.names = split_list(list);
  return t;
}

int64_t s2_group_size(int64_t seq_len, double ratio) {
  LL_CHECK(ratio > 0 && ratio <= 1, "S2-Attn: group ratio must be in (0, 1], got ", ratio);
  const int64_t group = int64_t(double(seq_len) * ratio);
  LL_CHECK(group >= 2, "S2-Attn: sequence length ", seq_len, " × group ratio ", ratio, " gives group size ", group,
           "; need at least 2 (use a longer sequence or disable S2)");
  LL_CHECK(seq_len % group == 0, "S2-Attn: sequence length ", seq_len, " is not divisible by the group size ", group,
           " (= L × ", ratio, "); choose model_max_length as a multiple of ", int64_t(std::lround(1.0 / ratio)));
  return group;
}

AttentionMask training_mask(const AttentionConfig& attention, const ModelConfig& config, int64_t seq_len) {
  if (!attention.use_s2) return AttentionMask::causal().windowed(config.sliding_window);
  const int64_t h = config.num_attention_heads, hkv = config.num_key_value_heads;
  LL_CHECK(h % 2 == 0, "S2-Attn: shifts half of the attention heads, so num_attention_heads must be even, got ", h);
  LL_CHECK(hkv % 2 == 0, "S2-Attn with GQA: the shifted query heads [", h / 2, ",", h,
           ") must map exactly onto KV heads [Hkv/2, Hkv) so that each KV head serves one shift pattern; "
           "num_key_value_heads = ",
           hkv, " is odd, so one KV head would serve both patterns");
  const bool roll = attention.variant == S2Variant::Roll;
  int64_t group;
  if (attention.sft_rule) {
    LL_CHECK(!roll, "S2-Attn: the roll variant needs L % G == 0, which the SFT group rule does not guarantee; use the "
                    "leak-free variant for SFT");
    LL_CHECK(attention.sft_ratio_multiple > 0 && attention.sft_group_size >= 2,
             "S2-Attn SFT rule: sft_ratio_multiple and sft_group_size must be positive (group >= 2)");
    group = seq_len % attention.sft_ratio_multiple == 0 ? int64_t(double(seq_len) * attention.group_ratio)
                                                        : attention.sft_group_size;
    LL_CHECK(group >= 2, "S2-Attn SFT rule: group size ", group, " for length ", seq_len, " is below 2");
  } else {
    group = s2_group_size(seq_len, attention.group_ratio);
  }
  LL_CHECK(!roll || group % 2 == 0, "S2-Attn roll variant: group size ", group,
           " must be even (the roll shifts by G/2)");
  return AttentionMask::s2(group, roll).windowed(config.sliding_window);
}

}  // namespace ll
