// Sentencepiece models (tokenizer.model, Llama-2's) through Debian's libsentencepiece, behind ll::Tokenizer.
// Special tokens are the control pieces (<s>, </s>) and the unknown piece (<unk>): with parse_special, their
// literal strings in a text become their ids and the text between them is encoded piece by piece (each piece
// getting sentencepiece's dummy-prefix space, as transformers' Llama tokenizer does); otherwise they are text.
#pragma once
#include <memory>
#include <string>

#include "data/tokenizer_impl.h"

namespace ll {

// Reads `path` from `bytes`, its content; throws naming the file when it is not a sentencepiece model.
std::unique_ptr<TokenizerImpl> load_spm_tokenizer(const std::string& path, const std::string& bytes);

}  // namespace ll
