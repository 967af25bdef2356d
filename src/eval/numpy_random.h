// numpy's legacy global RNG (`numpy.random.seed` / `numpy.random.randint`, i.e. RandomState), reproduced bit for bit
// so that passkey prompts match LongLoRA's passkey_retrivial.py (insertion point and key for seeds 0..9).
//   seed(s)            MT19937 init_genrand(s) (numpy's _legacy_seeding for an integer in [0, 2^32))
//   randint(lo, hi)    values in [lo, hi): rng = hi − 1 − lo; 0 → lo; rng < 2^32 − 1 → masked rejection on 32-bit
//                      draws (draw & mask, retried while > rng); rng = 2^32 − 1 → one 32-bit draw; wider ranges →
//                      masked rejection on 64-bit draws (first 32-bit draw in the high half), as numpy's
//                      random_bounded_uint64_fill with use_masked=True does for RandomState.
#pragma once
#include <array>
#include <cstdint>

namespace ll {

// The Mersenne Twister MT19937 (Matsumoto & Nishimura), 32-bit outputs.
class Mt19937 {
 public:
  explicit Mt19937(uint32_t seed = 5489u) { seed_with(seed); }
  void seed_with(uint32_t seed);
  uint32_t next_u32();
  uint64_t next_u64() {  // numpy's mt19937_next64
    const uint64_t hi = next_u32();
    return hi << 32 | next_u32();
  }

 private:
  void twist();
  std::array<uint32_t, 624> mt_{};
  int pos_ = 624;
};

class NumpyRandomState {
 public:
  explicit NumpyRandomState(uint32_t seed = 0) : mt_(seed) {}
  void seed(uint32_t s) { mt_.seed_with(s); }
  // numpy.random.randint(low, high) for int64 results; throws ll::Error when low >= high (numpy's ValueError).
  int64_t randint(int64_t low, int64_t high);
  Mt19937& generator() { return mt_; }

 private:
  Mt19937 mt_;
};

}  // namespace ll
