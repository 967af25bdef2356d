#include "core/rope_frequencies.h"

#include <cmath>

#include "util/error.h"

namespace ll {

std::string describe_rope_llama3(const RopeLlama3& p) {
  return str_cat("llama3 factor ", p.factor, ", low_freq_factor ", p.low_freq_factor, ", high_freq_factor ",
                 p.high_freq_factor, ", original_max_position_embeddings ", p.original_max_position_embeddings);
}

void check_rope_llama3(const RopeLlama3& p, const std::string& where) {
  LL_CHECK(p.factor >= 1, where, ": llama3 RoPE `factor` must be >= 1, got ", p.factor);
  LL_CHECK(p.low_freq_factor > 0 && p.low_freq_factor < p.high_freq_factor, where,
           ": llama3 RoPE needs 0 < `low_freq_factor` < `high_freq_factor`, got ", p.low_freq_factor, " and ",
           p.high_freq_factor);
  LL_CHECK(p.original_max_position_embeddings > 0, where,
           ": llama3 RoPE `original_max_position_embeddings` must be a positive integer, got ",
           p.original_max_position_embeddings);
}

std::vector<double> rope_inv_freq(double theta, int64_t rotary_dims, const RopeLlama3& llama3) {
  std::vector<double> f(size_t(rotary_dims / 2));
  for (int64_t i = 0; i < rotary_dims / 2; ++i) f[size_t(i)] = std::pow(theta, -2.0 * double(i) / double(rotary_dims));
  if (!llama3.enabled()) return f;
  const double old_context = double(llama3.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / llama3.low_freq_factor;
  const double high_freq_wavelen = old_context / llama3.high_freq_factor;
  const double pi = std::acos(-1.0);
  for (double& inv : f) {
    const double wavelen = 2 * pi / inv;
    if (wavelen < high_freq_wavelen) continue;
    if (wavelen > low_freq_wavelen) {
      inv /= llama3.factor;
      continue;
    }
    const double s = (old_context / wavelen - llama3.low_freq_factor) /
                     (llama3.high_freq_factor - llama3.low_freq_factor);
    inv = (1 - s) * inv / llama3.factor + s * inv;
  }
  return f;
}

}  // namespace ll
