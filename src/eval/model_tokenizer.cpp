#include "eval/model_tokenizer.h"

#include "data/tokenizer_path.h"
#include "eval/eval_model.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {

Tokenizer load_model_tokenizer(const std::string& flag, const std::string& base_model, const std::string& command,
                               const TokenizerOptions& options) {
  const std::string prefix = command.empty() ? std::string() : command + ": ";
  std::string path = flag;
  if (path.empty()) {
    path = find_tokenizer_in(base_model);
    LL_CHECK(!path.empty(), prefix, "no tokenizer: `", base_model, "` holds neither tokenizer.json nor "
             "tokenizer.model; pass --tokenizer PATH (a tokenizer.json, or a sentencepiece tokenizer.model)");
  }
  LL_CHECK(path_exists(path), prefix, "--tokenizer `", path, "` does not exist");
  return Tokenizer::load(path, options);
}

void check_tokenizer_fits(const Tokenizer& tok, const EvalModel& m) {
  LL_CHECK(tok.vocab_size() <= m.config.vocab_size, "tokenizer `", tok.path(), "` has ", tok.vocab_size(),
           " pieces but the model's vocabulary is ", m.config.vocab_size, "; wrong --tokenizer?");
}

}  // namespace ll
