// Passkey retrieval by LongLoRA's passkey_retrivial.py (longlora.md §5): LongLoRA's exact prompts (the filler
// sentence repeated and cut at character counts, the key line at a numpy-random character position), seeds
// 0..num_tests−1 at every length, greedy decoding of exactly len(answer ids) tokens, exact token match.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "eval/generate.h"

namespace ll {

class Comm;

struct PasskeyPrompt {
  std::string text;    // "\n".join([task, filler[:n_prefix], key line, filler[:n_suffix], question])
  std::string answer;  // str(pass_key)
  int64_t pass_key = 0, n_prefix = 0, n_garbage = 0;
  double depth = 0;  // n_prefix / n_garbage
};

// generate_prompt_landmark(n_garbage, seed): numpy.random.seed(seed); n_prefix = randint(0, n_garbage);
// pass_key = randint(1, 50000). Throws for n_garbage outside [1, 449999] (numpy's randint(0, 0) raises; the
// reference's filler is 449999 characters long).
PasskeyPrompt passkey_prompt(int64_t n_garbage, uint32_t seed);
// The lengths swept: int(3.75·(i+1)·interval // 1024 · 1024) for i < max_tokens // interval.
std::vector<int64_t> passkey_garbage_lengths(int64_t max_tokens, int64_t interval);

// Greedy-decodes exactly answer_ids.size() tokens after `prompt_ids`; true iff they equal answer_ids.
bool passkey_trial(InferenceSession& session, const std::vector<int32_t>& prompt_ids,
                   const std::vector<int32_t>& answer_ids, std::vector<int32_t>* generated, bool reuse_prefix);

struct PasskeyTrial {
  int64_t seed = 0, pass_key = 0, n_prefix = 0, prompt_tokens = 0;
  double depth = 0;
  std::vector<int32_t> answer_ids, generated;
  bool correct = false;
};

struct PasskeyPoint {
  int64_t n_garbage = 0;
  double mean_prompt_tokens = 0;
  int64_t reference_tokens = 0;  // total // num_tests: the key passkey_retrivial.py prints accuracies under
  double accuracy = 0;
  double seconds = 0;
  std::vector<PasskeyTrial> trials;  // in seed order
};

struct PasskeyOptions {
  int64_t max_tokens = 32000, interval = 1000, num_tests = 10;
  bool reuse_prefix = true;  // keep the KV cache of the filler shared with the previous prompt
};

// Runs the whole sweep. The model must be planned for batch 1 (its seq_len is the prefill chunk).
// `on_point` is called after each length (with several ranks: for every length, in order, once all are done);
// `progress(done, total)` counts this rank's filler characters (known up front).
// With `comm` of several ranks every rank calls this: one rank's schedule (length by length, longest filler prefix
// first) is cut into contiguous ranges of about equal filler characters, each rank runs its range with its own KV
// cache, and the outcomes are gathered, so every rank returns the one-rank points (`seconds`: summed over the
// ranks). With --reuse_prefix a rank's first trial prefills its whole prompt where one rank reuses a cached
// prefix: the same answers up to rounding, as --reuse_prefix itself; without it the ranks repeat one rank's work.
std::vector<PasskeyPoint> run_passkey(Model& model, const Tokenizer& tokenizer, const PasskeyOptions& options,
                                      const std::function<void(const PasskeyPoint&)>& on_point = {},
                                      const std::function<void(int64_t, int64_t)>& progress = {},
                                      Comm* comm = nullptr);

}  // namespace ll
