// Which file a tokenizer flag (--tokenizer) names: the flag may give the tokenizer file itself or the model folder
// that holds it, as `transformers` accepts a folder for AutoTokenizer.
#pragma once
#include <string>

namespace ll {

// A file is returned as given; a folder resolves to the tokenizer inside it: <folder>/tokenizer.json (a Hugging Face
// fast tokenizer, which transformers prefers when a folder has both) else <folder>/tokenizer.model (sentencepiece).
// Throws naming the path when it does not exist, and the folder and every file looked for when it holds neither.
std::string resolve_tokenizer_path(const std::string& flag_value);

// Whether `path` is read as a tokenizer.json (its name ends in .json) rather than a sentencepiece model.
bool is_tokenizer_json(const std::string& path);

// The tokenizer of a model folder, if it has one: resolve_tokenizer_path(folder), or "" when the folder holds
// neither file (callers that can do without a tokenizer).
std::string find_tokenizer_in(const std::string& folder);

}  // namespace ll
