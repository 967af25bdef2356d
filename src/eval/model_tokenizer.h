// The tokenizer that goes with an evaluated or served model: --tokenizer, else the one in the model folder; and the
// check that its ids fit the model's vocabulary. build/eval's subcommands and build/serve share these.
#pragma once
#include <string>

#include "data/tokenizer.h"

namespace ll {

struct EvalModel;

// --tokenizer `flag`, else the tokenizer in `base_model` (tokenizer.json, else tokenizer.model). Errors start with
// "`command`: " when `command` is not empty.
Tokenizer load_model_tokenizer(const std::string& flag, const std::string& base_model, const std::string& command,
                               const TokenizerOptions& options = {});

// Throws when the tokenizer has more pieces than the model has embedding rows.
void check_tokenizer_fits(const Tokenizer& tok, const EvalModel& model);

}  // namespace ll
