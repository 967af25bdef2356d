// Which file a tokenizer flag (--tokenizer) names: the flag may give the tokenizer file itself or the model folder
// that holds it, as `transformers` accepts a folder for AutoTokenizer.
#pragma once
#include <string>

namespace ll {

// A file is returned as given; a folder resolves to the tokenizer inside it, <folder>/tokenizer.model (the
// sentencepiece model of a Hugging Face Llama-2 folder). Throws naming the path when it does not exist, and the
// folder and every file looked for when the folder holds none. (New tokenizer formats add their file names here.)
std::string resolve_tokenizer_path(const std::string& flag_value);

}  // namespace ll
