#include "eval/perplexity.h"

#include <chrono>
#include <cmath>

#include "util/error.h"

namespace ll {

std::vector<int64_t> perplexity_window_starts(int64_t tokens, int64_t seq_len, int64_t stride, bool drop_last) {
  LL_CHECK(seq_len >= 2 && stride >= 1, "perplexity: need seq_len >= 2 and sliding_window >= 1");
  std::vector<int64_t> starts;
  for (int64_t s = 0; s < tokens - seq_len; s += stride) starts.push_back(s);
  if (drop_last && !starts.empty()) starts.pop_back();
  return starts;
}

PerplexityResult evaluate_perplexity(Model& model, const TokenFile& data, const PerplexityOptions& o,
                                     const std::function<void(int64_t, int64_t)>& progress) {
  LL_CHECK(model.mask().kind == MaskKind::Causal, "perplexity: evaluation uses full causal attention; build the "
                                                  "model with S2 off");
  const int64_t B = model.options().batch, L = model.options().seq_len;
  model.set_seq_len(L);
  std::vector<int64_t> starts = perplexity_window_starts(data.size(), L, o.sliding_window, o.drop_last);
  PerplexityResult r;
  r.total_windows = int64_t(starts.size());
  if (o.max_windows > 0 && int64_t(starts.size()) > o.max_windows) starts.resize(o.max_windows);
  LL_CHECK(!starts.empty(), "perplexity: `", data.path(), "` has ", data.size(), " tokens, too few for one window of ",
           L, " (plus the dropped last one)");
  r.num_windows = int64_t(starts.size());

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> tokens(B * L), targets(B * L), argmax(B * L), next(B);
  double sum_batch_means = 0, sum_losses = 0, sum_accuracy = 0, sum_accuracy_eval_py = 0;
  int64_t batches = 0;
  for (size_t first = 0; first < starts.size(); first += size_t(B)) {
    // A short last batch is filled by repeating its last window, whose targets are all ignored.
    const int64_t rows = std::min<int64_t>(B, int64_t(starts.size() - first));
    for (int64_t b = 0; b < B; ++b) {
      const bool real = b < rows;
      const int64_t start = starts[first + size_t(real ? b : rows - 1)];
      data.read(start, L, tokens.data() + b * L);
      next[b] = data.at(start + L);  // starts < N − L, so the token after the window exists
      for (int64_t l = 0; l < L; ++l)
        targets[b * L + l] = real && l + 1 < L ? tokens[b * L + l + 1] : -100;
    }
    const LossResult lr = model.forward(tokens.data(), targets.data(), argmax.data());
    int64_t correct = 0;
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t l = 0; l < L; ++l) correct += argmax[b * L + l] == (l + 1 < L ? tokens[b * L + l + 1] : next[b]);
    sum_accuracy += double(correct) / double(rows * L);
    sum_accuracy_eval_py += double(correct) / double(L);
    sum_batch_means += lr.mean();
    sum_losses += lr.loss_sum;
    r.tokens_scored += lr.scored;
    ++batches;
    if (progress) progress(int64_t(first) + rows, r.num_windows);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.loss = sum_batch_means / double(batches);
  r.perplexity = std::pow(2.71828, r.loss);
  r.perplexity_token_weighted = std::exp(sum_losses / double(r.tokens_scored));
  r.accuracy = sum_accuracy / double(batches);
  r.accuracy_eval_py = sum_accuracy_eval_py / double(batches);
  r.tokens_per_sec = double(r.num_windows * L) / std::max(r.seconds, 1e-9);
  return r;
}

}  // namespace ll
