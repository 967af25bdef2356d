#include "eval/numpy_random.h"

#include "util/error.h"

namespace ll {

void Mt19937::seed_with(uint32_t seed) {
  mt_[0] = seed;
  for (uint32_t i = 1; i < 624; ++i) mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + i;
  pos_ = 624;
}

void Mt19937::twist() {
  constexpr uint32_t kUpper = 0x80000000u, kLower = 0x7fffffffu, kMatrix = 0x9908b0dfu;
  for (int i = 0; i < 624; ++i) {
    const uint32_t y = (mt_[i] & kUpper) | (mt_[(i + 1) % 624] & kLower);
    mt_[i] = mt_[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? kMatrix : 0u);
  }
  pos_ = 0;
}

uint32_t Mt19937::next_u32() {
  if (pos_ >= 624) twist();
  uint32_t y = mt_[pos_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

namespace {

// Smallest 2^k − 1 ≥ max (numpy's gen_mask).
uint64_t gen_mask(uint64_t max) {
  uint64_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  mask |= mask >> 32;
  return mask;
}

}  // namespace

int64_t NumpyRandomState::randint(int64_t low, int64_t high) {
  LL_CHECK(low < high, "randint: low >= high (", low, " >= ", high, "); numpy raises ValueError here");
  const uint64_t rng = uint64_t(high) - 1 - uint64_t(low), off = uint64_t(low);
  if (rng == 0) return low;  // no draw consumed
  if (rng <= 0xFFFFFFFFull) {
    if (rng == 0xFFFFFFFFull) return int64_t(off + mt_.next_u32());
    const uint32_t mask = uint32_t(gen_mask(rng));
    uint32_t v;
    while ((v = mt_.next_u32() & mask) > rng) {
    }
    return int64_t(off + v);
  }
  if (rng == ~0ull) return int64_t(off + mt_.next_u64());
  const uint64_t mask = gen_mask(rng);
  uint64_t v;
  while ((v = mt_.next_u64() & mask) > rng) {
  }
  return int64_t(off + v);
}

}  // namespace ll
