// RoPE's per-frequency rotation rates: theta^(−2i/R) for i in [0, R/2), with Llama-3's per-frequency scaling
// (config.json rope_scaling / rope_parameters {"rope_type": "llama3", ...}) applied when it is set. The CPU rope and
// the CUDA rope's rate table both take their frequencies from here, so the two backends share one rule.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ll {

// Llama-3.1's frequency-dependent interpolation (transformers' _compute_llama3_parameters, facts only). With
// L = original_max_position_embeddings and wavelength λ = 2π / inv_freq:
//   λ < L / high_freq_factor (high frequencies): unchanged;
//   λ > L / low_freq_factor (low frequencies): inv_freq / factor;
//   otherwise, with s = (L / λ − low_freq_factor) / (high_freq_factor − low_freq_factor):
//     (1 − s) · inv_freq / factor + s · inv_freq.
// factor 0 means "not set" (plain RoPE).
struct RopeLlama3 {
  double factor = 0;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  int64_t original_max_position_embeddings = 8192;
  bool enabled() const { return factor > 0; }
  bool operator==(const RopeLlama3& o) const {
    return factor == o.factor && low_freq_factor == o.low_freq_factor && high_freq_factor == o.high_freq_factor &&
           original_max_position_embeddings == o.original_max_position_embeddings;
  }
};

// Throws ll::Error naming `where` and the field when the parameters are out of range (factor >= 1,
// 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0).
void check_rope_llama3(const RopeLlama3& p, const std::string& where);

// "llama3 factor F, low_freq_factor a, high_freq_factor b, original_max_position_embeddings L" (errors, build/info).
std::string describe_rope_llama3(const RopeLlama3& p);

// inv_freq[i] for i in [0, rotary_dims/2), in double: theta^(−2i/R), then the Llama-3 rule when llama3 is enabled.
std::vector<double> rope_inv_freq(double theta, int64_t rotary_dims, const RopeLlama3& llama3);

}  // namespace ll
