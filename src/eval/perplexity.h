// Perplexity by LongLoRA's protocol (eval.py; longlora.md §4.2): windows of seq_len tokens starting every
// `sliding_window` tokens, range(0, N − seq_len, stride) with the last start dropped; each window scores all
// seq_len − 1 next-token predictions under full causal attention; consecutive windows are batched.
//   perplexity                = 2.71828 ** (mean over batches of each batch's mean loss)      (eval.py)
//   perplexity_token_weighted = exp(Σ token losses / Σ tokens)                                (eval_distributed.py)
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "data/token_file.h"
#include "model/model.h"

namespace ll {

class Comm;

struct PerplexityOptions {
  int64_t sliding_window = 256;
  int64_t max_windows = 0;   // > 0: evaluate only the first K windows (reported)
  bool drop_last = true;     // eval.py pops the last start; eval_distributed.py does not
};

struct PerplexityResult {
  double loss = 0;                       // mean of per-batch mean losses
  double perplexity = 0;                 // 2.71828 ** loss
  double perplexity_token_weighted = 0;  // exp(Σ losses / tokens)
  double accuracy = 0;  // mean over batches of argmax(logits) == next token, over all seq_len positions
  // eval.py's val_acc verbatim: per batch, correct predictions / seq_len (it divides by the window length, not by
  // batch × length), averaged over batches — batch_size × accuracy for full batches when batch_size > 1.
  double accuracy_eval_py = 0;
  int64_t num_windows = 0, total_windows = 0, tokens_scored = 0;
  double seconds = 0, tokens_per_sec = 0;
};

std::vector<int64_t> perplexity_window_starts(int64_t tokens, int64_t seq_len, int64_t stride, bool drop_last);

// What one forward pass of `rows` windows contributes; the result combines these in batch order.
struct PerplexityBatch {
  double loss_sum = 0;
  int64_t scored = 0, correct = 0, rows = 0;
};

// `model` must use full causal attention and be planned for (batch_size, seq_len). `progress(done, total)`
// is called after every batch when given, counting this rank's windows.
// With `comm` of several ranks (eval_distributed.py's role) every rank calls this: the batches (batch_size
// consecutive windows each) are split into contiguous ranges as even as possible (ranks beyond the number of
// batches idle), each rank scores its range, and the per-batch sums are gathered and combined in batch order, so
// every rank returns exactly the one-rank result (`seconds`: this rank's wall time, the gather included).
PerplexityResult evaluate_perplexity(Model& model, const TokenFile& data, const PerplexityOptions& options,
                                     const std::function<void(int64_t, int64_t)>& progress = {},
                                     Comm* comm = nullptr);

}  // namespace ll
