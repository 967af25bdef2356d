// Model and run configuration: the architecture's sizes and switches (ModelConfig, read from config.json by the
// architecture's definition), LoRA, what trains, and the attention pattern.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/attention_mask.h"
#include "core/dtype.h"
#include "core/rope_frequencies.h"

namespace ll {

// A flat description of a decoder-only transformer, like Hugging Face's config objects: `model_type` selects the
// architecture's definition (model/registry.h), the other fields are the sizes every family has plus the few switches
// some definitions read. A definition rejects (validate) the switches it does not implement.
struct ModelConfig {
  std::string model_type = "llama";  // registry key (config.json's model_type)
  int64_t hidden_size = 0;           // D
  int64_t intermediate_size = 0;     // F
  int64_t num_attention_heads = 0;   // H
  int64_t num_key_value_heads = 0;   // Hkv (GQA when < H)
  int64_t num_hidden_layers = 0;
  int64_t vocab_size = 0;  // V
  double norm_eps = 1e-5;  // RMSNorm / LayerNorm epsilon (rms_norm_eps, layer_norm_eps)
  double rope_theta = 10000.0;
  double rope_scaling_factor = 1.0;  // linear position interpolation factor (1 = none): LongLoRA's PI
  // config.json's rope_type "llama3" (Llama-3.1 / 3.2). Read as is, such a config has rope_scaling_factor 1 (its
  // max_position_embeddings is the extended length already, so LongLoRA's rule derives F from that alone). With F ≠ 1
  // on top, the two compose as ONE llama3 rule of factor llama3.factor × F (rope_params in model/architecture.h): the
  // config a merge writes, from which transformers computes the same frequencies (docs/architecture.md).
  RopeLlama3 rope_llama3 = {};
  int64_t rotary_dims = 0;           // leading dimensions of each head that rotate; 0 = the whole head
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  // Mistral's sliding-window attention: a query sees itself and the W - 1 keys before it (core/attention_mask.h),
  // in training (with S2 where both apply), evaluation and decoding. 0 = none (config.json's null).
  int64_t sliding_window = 0;
  // Family switches (read by the definitions that have them).
  bool parallel_residual = false;  // x + attn(norm1(x)) + mlp(norm2(x)) instead of two sequential residual steps
  std::string hidden_act = "silu";
  bool qkv_bias = false;  // q/k/v projections carry biases, o_proj none (Qwen2)
  // QLoRA (bitsandbytes' load_in_4bit): every frozen Linear of the table is stored in `base_weight_format` (a 4-bit
  // format of core/dtype.h) — never the output head, embeddings, norms or biases (model/weight_format.h). Set by
  // --load_in_4bit or by a bitsandbytes folder's quantization_config.
  bool load_in_4bit = false;
  DType base_weight_format = DType::NF4DQ;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }  // Dh

  int64_t q_dim() const { return num_attention_heads * head_dim(); }
  int64_t kv_dim() const { return num_key_value_heads * head_dim(); }
  // Throws ll::Error naming the field when the configuration is inconsistent: the checks every architecture needs,
  // then its definition's own (an unknown model_type is an error naming the supported ones).
  void validate() const;
};

// LongLoRA's factor rule (fine-tune.py): original context = max_position_embeddings × existing factor;
// when the target context is longer, the new factor is ceil(target / original), replacing (not multiplying)
// the existing one; otherwise the existing factor stays.
double derive_rope_factor(int64_t target_context, int64_t max_position_embeddings, double existing_factor);

// "a,b,,c" → {"a", "b", "c"} (empty entries dropped).
std::vector<std::string> split_list(const std::string& list);

struct LoraConfig {
  int64_t rank = 0;  // 0 = no adapters
  double alpha = 16.0;
  double dropout = 0.0;  // on the adapter input (PEFT's lora_dropout); active only while training
  // The modules that carry adapters, as PEFT's target_modules list: an entry T selects module M when M == T or M ends
  // with "." + T, after the architecture's aliases (Llama: q → q_proj, …). The parameter store resolves them against
  // the architecture's table (an entry that selects nothing is an error); parse_lora_targets gives the canonical form.
  std::vector<std::string> targets;
  double scale() const { return alpha / double(rank); }
  bool enabled() const { return rank > 0; }
};

// Which base parameters receive gradients. LoRA adapters, when present, always train.
struct TrainableConfig {
  bool all = false;  // full fine-tuning: every base parameter
  // LongLoRA's rule (`any(k in n for k in trainable_params)`): a parameter trains when an entry is a substring of its
  // Hugging Face name. "embed,norm" on Llama: model.embed_tokens and every RMSNorm (not lm_head); a tied model's
  // output head name ("lm_head.weight") trains the shared embedding. An entry that matches nothing is an error.
  std::vector<std::string> names;
  // "embed,norm" → names {"embed", "norm"}.
  static TrainableConfig parse(const std::string& list, bool all = false);
};

enum class S2Variant { LeakFree, Roll };

struct AttentionConfig {
  bool use_s2 = false;
  double group_ratio = 0.25;
  S2Variant variant = S2Variant::LeakFree;
  // LongLoRA's SFT rule (llama_attn_replace_sft.py): G = L·ratio when L % sft_ratio_multiple == 0, otherwise
  // G = sft_group_size with segments clipped at L (no divisibility requirement).
  bool sft_rule = false;
  int64_t sft_group_size = 8192;
  int64_t sft_ratio_multiple = 4096;
};

// G = L·ratio; an error unless G ≥ 2 and L % G == 0.
int64_t s2_group_size(int64_t seq_len, double ratio);
// The mask a training step uses (and evaluation and decoding, with use_s2 off): causal, or S2 after checking the head
// layout (even H; with GQA the
// shifted query heads [H/2, H) must map exactly onto KV heads [Hkv/2, Hkv), i.e. Hkv even). The group size
// follows s2_group_size, or the SFT rule when attention.sft_rule is set. The config's sliding window applies on top.
AttentionMask training_mask(const AttentionConfig& attention, const ModelConfig& config, int64_t seq_len);

}  // namespace ll
