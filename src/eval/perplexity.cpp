#include "eval/perplexity.h"

#include <chrono>
#include <cmath>

#include "mpi/comm.h"
#include "util/error.h"

namespace ll {

std::vector<int64_t> perplexity_window_starts(int64_t tokens, int64_t seq_len, int64_t stride, bool drop_last) {
  LL_CHECK(seq_len >= 2 && stride >= 1, "perplexity: need seq_len >= 2 and sliding_window >= 1");
  std::vector<int64_t> starts;
  for (int64_t s = 0; s < tokens - seq_len; s += stride) starts.push_back(s);
  if (drop_last && !starts.empty()) starts.pop_back();
  return starts;
}

namespace {

// Scores batches [first_batch, end_batch) of `starts` (batch b holds windows b·B .. b·B + B − 1).
std::vector<PerplexityBatch> score_batches(Model& model, const TokenFile& data, const std::vector<int64_t>& starts,
                                           int64_t first_batch, int64_t end_batch,
                                           const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t B = model.options().batch, L = model.options().seq_len;
  const int64_t first_window = first_batch * B;
  const int64_t own_windows = std::min<int64_t>(end_batch * B, int64_t(starts.size())) - first_window;
  std::vector<int32_t> tokens(B * L), targets(B * L), argmax(B * L), next(B);
  std::vector<PerplexityBatch> out;
  for (int64_t batch = first_batch; batch < end_batch; ++batch) {
    const size_t first = size_t(batch * B);
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
    PerplexityBatch pb;
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t l = 0; l < L; ++l)
        pb.correct += argmax[b * L + l] == (l + 1 < L ? tokens[b * L + l + 1] : next[b]);
    pb.loss_sum = lr.loss_sum;
    pb.scored = lr.scored;
    pb.rows = rows;
    out.push_back(pb);
    if (progress) progress(int64_t(first) + rows - first_window, own_windows);
  }
  return out;
}

// Every rank's batches, in batch order, on every rank: four exact doubles per batch through one all-gather.
std::vector<PerplexityBatch> gather_batches(Comm& comm, const std::vector<PerplexityBatch>& mine,
                                            const std::vector<int64_t>& batch_counts) {
  constexpr int64_t kFields = 4;
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (int64_t c : batch_counts) counts.push_back(c * kFields), total += c;
  std::vector<double> all(size_t(total * kFields));
  double* own = all.data() + split_offset(counts, comm.rank());
  for (const PerplexityBatch& b : mine)  // counts and sums stay far below 2^53: exact as doubles
    *own++ = b.loss_sum, *own++ = double(b.scored), *own++ = double(b.correct), *own++ = double(b.rows);
  comm.all_gather_in_place(Tensor(all.data(), DType::F64, Device::CPU, {int64_t(all.size())}), counts);
  std::vector<PerplexityBatch> out(static_cast<size_t>(total));
  for (size_t i = 0; i < out.size(); ++i) {
    const double* f = all.data() + i * kFields;
    out[i] = {f[0], int64_t(f[1]), int64_t(f[2]), int64_t(f[3])};
  }
  return out;
}

}  // namespace

PerplexityResult evaluate_perplexity(Model& model, const TokenFile& data, const PerplexityOptions& o,
                                     const std::function<void(int64_t, int64_t)>& progress, Comm* comm) {
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
  const int ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const std::vector<int64_t> batch_counts = even_split((r.num_windows + B - 1) / B, ranks);
  const int64_t first_batch = split_offset(batch_counts, rank);
  std::vector<PerplexityBatch> batches =
      score_batches(model, data, starts, first_batch, first_batch + batch_counts[size_t(rank)], progress);
  if (ranks > 1) batches = gather_batches(*comm, batches, batch_counts);

  // Summed in batch order whatever the number of ranks: the same doubles in the same order.
  double sum_batch_means = 0, sum_losses = 0, sum_accuracy = 0, sum_accuracy_eval_py = 0;
  for (const PerplexityBatch& b : batches) {
    sum_accuracy += double(b.correct) / double(b.rows * L);
    sum_accuracy_eval_py += double(b.correct) / double(L);
    sum_batch_means += LossResult{b.loss_sum, b.scored}.mean();
    sum_losses += b.loss_sum;
    r.tokens_scored += b.scored;
  }
  const double n = double(batches.size());
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.loss = sum_batch_means / n;
  r.perplexity = std::pow(2.71828, r.loss);
  r.perplexity_token_weighted = std::exp(sum_losses / double(r.tokens_scored));
  r.accuracy = sum_accuracy / n;
  r.accuracy_eval_py = sum_accuracy_eval_py / n;
  r.tokens_per_sec = double(r.num_windows * L) / std::max(r.seconds, 1e-9);
  return r;
}

}  // namespace ll
