// Building the model that build/eval runs: a Hugging Face folder (--base_model), optionally a PEFT/LongLoRA adapter
// folder (--peft_model) applied without merging, with the RoPE factor and vocabulary chosen as below.
//
// RoPE factor (first rule that applies; every choice is reported, disagreements are warned about):
//   1. --rope_scaling_factor F > 0: F.
//   2. no --context_size, and the adapter has longlora.json: the factor it was trained with.
//   3. the base config.json carries rope_scaling with a factor ≠ 1 (an already extended model, e.g. a merged
//      folder or a released *-ft model): that factor (issue 5's rule). eval.py would instead override it with
//      ceil(context / max_position_embeddings) when --context_size is larger; a warning says so when they differ.
//   4. context = --context_size, else the default context (perplexity: seq_len, as eval.py defaults it):
//      ceil(context / max_position_embeddings) when context is larger, else 1 (eval.py, passkey_retrivial.py).
// Vocabulary: LongLoRA's scripts resize every model to 32001 ([PAD]). Here the vocabulary is the adapter's when it
// saves an embedding (or records one in longlora.json), else the base's; base + 1 appends a [PAD] row equal to the
// mean of the other rows to embed and lm_head, as training did (smart_tokenizer_and_embedding_resize). Anything
// else is an error. A base model alone is not resized (eval.py's extra row is randomly initialised, never a target,
// and only adds one term to the softmax; --add_pad_token true reproduces the mean-initialised variant).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/backend.h"
#include "io/peft.h"
#include "model/config.h"
#include "model/model.h"
#include "model/quant_options.h"

namespace ll {

struct RopeChoice {
  double factor = 1.0;
  std::string reason;                 // which rule gave it, in words
  std::vector<std::string> warnings;  // disagreements with eval.py or with the adapter's record
};

// `context_flag` is --context_size (≤ 0: not given); `default_context` the context used by rule 4 when it is not
// given (≤ 0: none); `base_factor` the base config's linear factor (1 when it carries none).
RopeChoice choose_eval_rope_factor(double explicit_factor, int64_t context_flag, int64_t default_context,
                                   int64_t max_position_embeddings, double base_factor,
                                   const std::optional<LongLoraRecord>& record);

// The vocabulary to build with; `mode` is auto | true | false (--add_pad_token). Throws naming `peft_dir`.
int64_t choose_eval_vocab(const std::string& mode, int64_t base_vocab, int64_t adapter_rows, int64_t recorded_vocab,
                          const std::string& peft_dir);

// The flags that choose and build the model: every build/eval subcommand's and build/serve's (one set, so that the
// two load a model the same way).
struct EvalModelFlags {
  std::string base_model, peft_model;
  std::string device = "cpu";
  int64_t context_size = -1;        // --context_size (≤ 0: not given)
  double rope_scaling_factor = 0;   // > 0: rule 1
  std::string add_pad_token = "auto";
  QuantOptions quant;               // --load_in_4bit and the bnb_4bit_* flags
};

struct EvalModelOptions : EvalModelFlags {
  int device_index = -1;        // cuda: the GPU (-1: the first usable one)
  int64_t default_context = 0;  // rule 4's context when --context_size is not given
  int64_t batch = 1;    // planned batch
  int64_t seq_len = 0;  // planned length: the window (perplexity) or the prefill chunk (KV-cache inference)
};

EvalModelOptions eval_model_options(const EvalModelFlags& flags, int64_t batch, int64_t seq_len,
                                    int64_t default_context = 0);

struct EvalModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  ModelConfig config;  // as built (vocabulary and RoPE factor included)
  RopeChoice rope;
  bool padded = false;  // a [PAD] row was appended to the base
  int64_t base_vocab = 0;
  nlohmann::json describe() const;  // for --json
  // The positions the model attends over: the base's context stretched by the RoPE factor.
  int64_t context() const { return int64_t(double(config.max_position_embeddings) * rope.factor); }
};

// Reads the folders, builds a full-causal-attention model with checkpointing (forward only: one shared set of
// layer activations), loads the weights, then the adapter. Prints what it did to `log`.
EvalModel load_eval_model(const EvalModelOptions& options, std::ostream& log);

}  // namespace ll
