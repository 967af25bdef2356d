// Counter-based dropout mask shared by every backend: element i of a call with `seed` is kept iff
// u(seed, i) >= p, u uniform in [0, 1) from a SplitMix64 hash. No RNG state: the backward (and a
// recompute under activation checkpointing) regenerates exactly the same mask from the same seed.
#pragma once
#include <cstdint>

#include "core/attention_mask.h"  // LL_HOST_DEVICE

namespace ll {

LL_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

LL_HOST_DEVICE inline bool dropout_keep(uint64_t seed, uint64_t index, double p) {
  const uint64_t h = mix64(mix64(seed) + index * 0x9E3779B97F4A7C15ull);
  return double(h >> 11) * 0x1.0p-53 >= p;
}

}  // namespace ll
