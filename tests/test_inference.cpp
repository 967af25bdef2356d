// Inference with a KV cache: chunked prefill and one-token decode steps give the logits of a full forward.
#include <gtest/gtest.h>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "core/tensor_host.h"
#include "test_util.h"

namespace ll {
namespace {

ModelOptions options(int64_t seq_len) {
  ModelOptions o;
  o.config.hidden_size = 24, o.config.intermediate_size = 40, o.config.num_attention_heads = 6;
  o.config.num_key_value_heads = 2, o.config.num_hidden_layers = 3, o.config.vocab_size = 31;
  o.config.rope_scaling_factor = 3.0;
  o.batch = 1;
  o.seq_len = seq_len;
  return o;
}

template <typename T>
void check_cached_decoding(double tolerance) {
  CpuBackend<T> backend;
  const int64_t N = 17;
  Model full(backend, options(N)), cached(backend, options(5));  // prefill chunks of 5 tokens
  full.init_random(9, 0.3);
  for (Param& p : full.params().all()) backend.copy(cached.params().get(p.name).value, p.value);
  Rng rng(10);
  std::vector<int32_t> tokens(N);
  for (int32_t& t : tokens) t = int32_t(rng.below(31));
  const std::vector<double> reference = full.logits(tokens.data());
  const int64_t V = 31;
  auto row = [&](int64_t t) { return std::vector<double>(reference.begin() + t * V, reference.begin() + (t + 1) * V); };

  cached.enable_kv_cache(N);
  // A 12-token prompt: prefill in chunks 5 + 5 + 2, then decode one token at a time.
  std::vector<double> logits = cached.append_tokens(tokens.data(), 12);
  EXPECT_LT(test::rel_error(logits, row(11)), tolerance) << "after prefill";
  for (int64_t t = 12; t < N; ++t) {
    logits = cached.append_tokens(&tokens[t], 1);
    EXPECT_LT(test::rel_error(logits, row(t)), tolerance) << "decode step at position " << t;
  }
  EXPECT_EQ(cached.kv_cache_length(), N);
  EXPECT_THROW(cached.append_tokens(tokens.data(), 1), Error);  // full
  cached.reset_kv_cache();
  EXPECT_LT(test::rel_error(cached.append_tokens(tokens.data(), 4), row(3)), tolerance) << "after reset";
  // The training path still works after inference (positions restored).
  cached.set_seq_len(5);
  const std::vector<double> five = cached.logits(tokens.data());
  Model plain(backend, options(5));
  for (Param& p : full.params().all()) backend.copy(plain.params().get(p.name).value, p.value);
  EXPECT_LT(test::rel_error(five, plain.logits(tokens.data())), tolerance);
}

TEST(KvCache, MatchesFullForwardFp32) { check_cached_decoding<float>(1e-5); }
TEST(KvCache, MatchesFullForwardFp64) { check_cached_decoding<double>(1e-12); }

TEST(KvCache, RefusesTrainingConfigurations) {
  CpuBackend<float> backend;
  ModelOptions s2 = options(8);
  s2.attention.use_s2 = true;
  Model s2_model(backend, s2);
  EXPECT_THROW(s2_model.enable_kv_cache(16), Error);
  ModelOptions batched = options(8);
  batched.batch = 2;
  Model batched_model(backend, batched);
  EXPECT_THROW(batched_model.enable_kv_cache(16), Error);
  Model model(backend, options(8));
  const int32_t tok = 1;
  EXPECT_THROW(model.append_tokens(&tok, 1), Error);  // no cache yet
}

}  // namespace
}  // namespace ll
