#include "cuda/perf_model.h"

#include <cstring>

#include "model/registry.h"

namespace ll::perf {

namespace {
double pass_factor(Pass p) { return p == Pass::Forward ? 1.0 : p == Pass::Backward ? 2.5 : 3.5; }
}  // namespace

double flash_attention_flops(int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim, bool causal, Pass pass) {
  const double f = 4.0 * double(batch) * double(seq_len) * double(seq_len) * double(heads) * double(head_dim) /
                   (causal ? 2.0 : 1.0);
  return f * pass_factor(pass);
}

double masked_attention_flops(int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim,
                              const AttentionMask& mask, Pass pass) {
  double pairs = 0;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < seq_len; ++i) {
      const KeyRanges r = attended_keys(mask, h, heads, seq_len, i);
      pairs += double(r.hi - r.lo + 1) + double(r.wrap_hi > r.wrap_lo ? r.wrap_hi - r.wrap_lo : 0);
    }
  return 4.0 * double(batch) * double(head_dim) * pairs * pass_factor(pass);
}

double matmul_params(const ModelConfig& c) {
  double n = 0;  // exact: every count is far below 2^53
  for (const ParamSpec& s : architecture_for(c.model_type).parameter_table(c))
    if (s.role == ParamRole::Linear || s.role == ParamRole::OutputHead) n += double(s.shape[0]) * double(s.shape[1]);
  return n;
}

namespace {
double attention_forward_per_token(const ModelConfig& c, int64_t seq_len, int64_t s2_group) {
  const double span = s2_group > 0 ? double(s2_group) : double(seq_len);
  return 2.0 * double(c.num_hidden_layers) * double(c.hidden_size) * span;
}
}  // namespace

double lora_model_flops_per_token(const ModelConfig& c, int64_t seq_len, int64_t s2_group) {
  return 4.0 * matmul_params(c) + 3.0 * attention_forward_per_token(c, seq_len, s2_group);
}

double lora_hardware_flops_per_token(const ModelConfig& c, int64_t seq_len, int64_t s2_group,
                                     double recomputed_share) {
  const double extra =
      recomputed_share * (2.0 * matmul_params(c) + attention_forward_per_token(c, seq_len, s2_group));
  return lora_model_flops_per_token(c, seq_len, s2_group) + extra;
}

double bf16_peak_tflops(const char* name) {
  if (!name) return 0;
  if (std::strstr(name, "H100") || std::strstr(name, "H200") || std::strstr(name, "H800")) return 989.4;
  if (std::strstr(name, "A100") || std::strstr(name, "A800")) return 312.0;
  return 0;
}

}  // namespace ll::perf
