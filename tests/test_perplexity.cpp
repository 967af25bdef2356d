// Perplexity by LongLoRA's eval.py protocol: window enumeration, batching, both perplexities, accuracy.
#include <gtest/gtest.h>

#include <cmath>

#include "cpu/cpu_backend.h"
#include "data/token_file.h"
#include "eval/perplexity.h"
#include "test_util.h"

namespace ll {
namespace {

TEST(PerplexityWindows, FollowsEvalPy) {
  // range(0, N − L, 256) with the last start popped.
  EXPECT_EQ(perplexity_window_starts(1000, 256, 256, true), (std::vector<int64_t>{0, 256}));
  EXPECT_EQ(perplexity_window_starts(1000, 256, 256, false), (std::vector<int64_t>{0, 256, 512}));
  EXPECT_EQ(perplexity_window_starts(769, 256, 256, false), (std::vector<int64_t>{0, 256, 512}));
  EXPECT_EQ(perplexity_window_starts(768, 256, 256, false), (std::vector<int64_t>{0, 256}));  // 512 + 256 = N: no y
  EXPECT_TRUE(perplexity_window_starts(256, 256, 256, true).empty());
  EXPECT_TRUE(perplexity_window_starts(300, 256, 256, true).empty());  // one start, popped
  EXPECT_EQ(perplexity_window_starts(10, 4, 3, true), (std::vector<int64_t>{0}));  // starts 0,3 → pop 3
  EXPECT_THROW(perplexity_window_starts(10, 1, 3, true), Error);
}

ModelOptions eval_model(int64_t batch, int64_t L) {
  ModelOptions o;
  o.config.hidden_size = 16, o.config.intermediate_size = 24, o.config.num_attention_heads = 4;
  o.config.num_key_value_heads = 2, o.config.num_hidden_layers = 2, o.config.vocab_size = 23;
  o.batch = batch;
  o.seq_len = L;
  return o;
}

TEST(Perplexity, MatchesAnIndependentComputationOverWindows) {
  const std::string path = ::testing::TempDir() + "/ppl_tokens.bin";
  Rng rng(7);
  std::vector<int32_t> ids(203);
  for (int32_t& t : ids) t = int32_t(rng.below(23));
  {
    TokenFileWriter w(path, TokenFormat::Raw16);
    w.append(ids);
    w.finish();
  }
  const TokenFile file(path, 23);
  const int64_t L = 12, stride = 17;
  for (int64_t batch : {1, 3}) {
    CpuBackend<double> backend;
    Model model(backend, eval_model(batch, L));
    model.init_random(3, 0.5);
    PerplexityOptions po;
    po.sliding_window = stride;
    const PerplexityResult r = evaluate_perplexity(model, file, po);

    // Independent: one window at a time through logits(), losses from log-softmax, grouped like eval.py.
    Model single(backend, eval_model(1, L));
    for (Param& p : model.params().all()) backend.copy(single.params().get(p.name).value, p.value);
    const std::vector<int64_t> starts = perplexity_window_starts(203, L, stride, true);
    ASSERT_EQ(r.num_windows, int64_t(starts.size()));
    double sum_means = 0, sum_all = 0, sum_acc = 0;
    int64_t count = 0, batches = 0;
    for (size_t first = 0; first < starts.size(); first += size_t(batch)) {
      double batch_sum = 0, batch_correct = 0;
      int64_t batch_count = 0, batch_positions = 0;
      for (size_t w = first; w < std::min(starts.size(), first + size_t(batch)); ++w) {
        const std::vector<double> logits = single.logits(ids.data() + starts[w]);
        for (int64_t l = 0; l < L; ++l) {
          const int32_t y = ids[starts[w] + l + 1];
          const double* row = logits.data() + l * 23;
          double mx = row[0], z = 0;
          int64_t arg = 0;
          for (int64_t j = 1; j < 23; ++j)
            if (row[j] > mx) mx = row[j], arg = j;
          for (int64_t j = 0; j < 23; ++j) z += std::exp(row[j] - mx);
          batch_correct += arg == y;
          ++batch_positions;
          if (l + 1 < L) batch_sum += mx + std::log(z) - row[y], ++batch_count;
        }
      }
      sum_means += batch_sum / double(batch_count);
      sum_all += batch_sum;
      count += batch_count;
      sum_acc += batch_correct / double(batch_positions);
      ++batches;
    }
    EXPECT_NEAR(r.loss, sum_means / double(batches), 1e-12) << "batch " << batch;
    EXPECT_NEAR(r.perplexity, std::pow(2.71828, sum_means / double(batches)), 1e-10);
    EXPECT_NEAR(r.perplexity_token_weighted, std::exp(sum_all / double(count)), 1e-10);
    EXPECT_NEAR(r.accuracy, sum_acc / double(batches), 1e-12);
    EXPECT_EQ(r.tokens_scored, count);
  }
}

TEST(Perplexity, RefusesS2AndTooShortData) {
  const std::string path = ::testing::TempDir() + "/ppl_short.bin";
  {
    TokenFileWriter w(path, TokenFormat::Raw16);
    w.append(std::vector<int32_t>(20, 1));
    w.finish();
  }
  const TokenFile file(path, 23);
  CpuBackend<float> backend;
  ModelOptions s2 = eval_model(1, 8);
  s2.attention.use_s2 = true;
  Model s2_model(backend, s2);
  EXPECT_THROW(evaluate_perplexity(s2_model, file, {}), Error);
  Model model(backend, eval_model(1, 16));
  EXPECT_THROW(evaluate_perplexity(model, file, {}), Error);  // starts {0} popped → nothing to evaluate
}

}  // namespace
}  // namespace ll
