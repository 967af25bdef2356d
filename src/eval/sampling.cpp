#include "eval/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "util/error.h"

namespace ll {

int32_t argmax_index(const std::vector<double>& logits) {
  LL_CHECK(!logits.empty(), "argmax of an empty logits vector");
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());  // first of equal maxima
}

std::vector<double> softmax_with_temperature(const std::vector<double>& logits, double temperature) {
  LL_CHECK(temperature > 0, "softmax: temperature must be > 0, got ", temperature);
  const double mx = logits[size_t(argmax_index(logits))];
  std::vector<double> p(logits.size());
  double z = 0;
  for (size_t i = 0; i < p.size(); ++i) z += p[i] = std::exp((logits[i] - mx) / temperature);
  for (double& x : p) x /= z;
  return p;
}

std::vector<int32_t> top_p_nucleus(const std::vector<double>& probs, double top_p) {
  LL_CHECK(top_p > 0 && top_p <= 1, "--top_p must be in (0, 1], got ", top_p);
  std::vector<int32_t> order(probs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return probs[size_t(a)] > probs[size_t(b)]; });
  double mass = 0;
  size_t keep = 0;
  while (keep < order.size()) {
    mass += probs[size_t(order[keep++])];
    if (mass >= top_p) break;
  }
  order.resize(std::max<size_t>(keep, 1));
  return order;
}

Sampler::Sampler(const SamplingOptions& o) : o_(o), rng_(o.seed) {
  LL_CHECK(o.temperature >= 0, "--temperature must be >= 0 (0: greedy), got ", o.temperature);
  LL_CHECK(o.top_p > 0 && o.top_p <= 1, "--top_p must be in (0, 1], got ", o.top_p);
}

int32_t Sampler::next(const std::vector<double>& logits) {
  if (o_.temperature == 0) return argmax_index(logits);
  const std::vector<double> p = softmax_with_temperature(logits, o_.temperature);
  const std::vector<int32_t> nucleus = top_p_nucleus(p, o_.top_p);
  double mass = 0;
  for (int32_t t : nucleus) mass += p[size_t(t)];
  // One uniform draw against the renormalised nucleus, scanned in nucleus order.
  double u = rng_.uniform() * mass;
  for (int32_t t : nucleus) {
    u -= p[size_t(t)];
    if (u < 0) return t;
  }
  return nucleus.back();  // rounding: u landed on the boundary
}

}  // namespace ll
