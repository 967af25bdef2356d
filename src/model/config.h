// Model and run configuration: the Llama architecture, LoRA, what trains, and the attention pattern.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "attention_mask.h"

namespace ll {

struct LlamaConfig {
  int64_t hidden_size = 0;        // D
  int64_t intermediate_size = 0;  // F
  int64_t num_attention_heads = 0;  // H
  int64_t num_key_value_heads = 0;  // Hkv (GQA when < H)
  int64_t num_hidden_layers = 0;
  int64_t vocab_size = 0;  // V
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  double rope_scaling_factor = 1.0;  // linear position interpolation factor (1 = none)
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }  // Dh
  int64_t q_dim() const { return num_attention_heads * head_dim(); }
  int64_t kv_dim() const { return num_key_value_heads * head_dim(); }
  // Throws ll::Error naming the field when the architecture is inconsistent.
  void validate() const;
};

// LongLoRA's factor rule (fine-tune.py): original context = max_position_embeddings × existing factor;
// when the target context is longer, the new factor is ceil(target / original), replacing (not multiplying)
// the existing one; otherwise the existing factor stays.
double derive_rope_factor(int64_t target_context, int64_t max_position_embeddings, double existing_factor);

// The projections that can carry a LoRA adapter, in Hugging Face module order.
enum class LinearSlot : int { Q = 0, K, V, O, Gate, Up, Down };
constexpr int kNumLinearSlots = 7;
const char* linear_slot_name(LinearSlot slot);  // "q_proj", …, "down_proj"

struct LoraConfig {
  int64_t rank = 0;  // 0 = no adapters
  double alpha = 16.0;
  double dropout = 0.0;  // on the adapter input (PEFT's lora_dropout); active only while training
  std::array<bool, kNumLinearSlots> targets{};  // which projections carry adapters
  double scale() const { return alpha / double(rank); }
  bool enabled() const { return rank > 0; }
  bool on(LinearSlot s) const { return enabled() && targets[int(s)]; }
  // Parses "q_proj,k_proj" or "q,k,v,o,gate,up,down"; throws on unknown names.
  static std::array<bool, kNumLinearSlots> parse_targets(const std::string& list);
};

// Which base parameters receive gradients. LoRA adapters, when present, always train.
struct TrainableConfig {
  bool all = false;      // full fine-tuning: every base parameter
  bool embed = false;    // model.embed_tokens
  bool norm = false;     // every RMSNorm weight
  bool lm_head = false;  // lm_head (or, when tied, the shared embedding)
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
// The mask a training step uses: causal, or S2 after checking the head layout (even H; with GQA the
// shifted query heads [H/2, H) must map exactly onto KV heads [Hkv/2, Hkv), i.e. Hkv even). The group size
// follows s2_group_size, or the SFT rule when attention.sft_rule is set.
AttentionMask training_mask(const AttentionConfig& attention, const LlamaConfig& config, int64_t seq_len);

}  // namespace ll
