// Next-token choice for generation: greedy (temperature 0) or temperature + top-p (nucleus) sampling, as Hugging
// Face's generate applies them (TemperatureLogitsWarper, then TopPLogitsWarper, then a multinomial draw), with a
// seeded, platform-independent RNG so that a run is reproducible.
#pragma once
#include <cstdint>
#include <vector>

#include "util/random.h"

namespace ll {

struct SamplingOptions {
  double temperature = 0.6;  // 0: greedy
  double top_p = 0.9;        // in (0, 1]
  uint64_t seed = 0;
};

// Index of the largest value (the first one on ties, like torch.argmax).
int32_t argmax_index(const std::vector<double>& logits);
// softmax(logits / temperature), computed in double.
std::vector<double> softmax_with_temperature(const std::vector<double>& logits, double temperature);
// The nucleus: token ids by decreasing probability (ties by id), the shortest such prefix whose mass reaches top_p
// (at least one token). HF removes the tokens whose ascending cumulative mass is <= 1 − top_p: the same set.
std::vector<int32_t> top_p_nucleus(const std::vector<double>& probs, double top_p);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  int32_t next(const std::vector<double>& logits);
  const SamplingOptions& options() const { return o_; }

 private:
  SamplingOptions o_;
  Rng rng_;
};

}  // namespace ll
