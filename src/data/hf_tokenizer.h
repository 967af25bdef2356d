// A Hugging Face tokenizer.json, encoding exactly as the `tokenizers` library does (tests/fixtures/tokenizers/, made
// by scripts/make_tokenizer_fixtures.py): added tokens, normalizer, pre-tokenizer, BPE model, post-processor,
// decoder. Any component type it does not implement is an error naming the type and its JSON path.
//
// The pipeline for one text: added tokens matched on the raw text (normalized=false ones); each stretch between
// them normalized, then matched against the normalized=true added tokens; each remaining stretch pre-tokenized into
// words; each word encoded by the BPE model. Invalid UTF-8 is replaced first, one U+FFFD per byte (utf8.h).
// The file's "truncation" and "padding" settings are ignored: ids are never truncated or padded here.
//
// Special tokens (BOS, EOS, UNK, PAD): from tokenizer_config.json beside the file when there is one (its
// bos_token, eos_token, unk_token, pad_token, as transformers reads them); without it, BOS is the token the
// post-processor puts first (else the first present of <s>, <|begin_of_text|>, <|endoftext|>), EOS the first present
// of </s>, <|end_of_text|>, <|endoftext|>, <|im_end|>, UNK the model's unk_token, and no PAD.
#pragma once
#include <memory>
#include <string>

#include "data/tokenizer_impl.h"

namespace ll {

// Reads `path` (a tokenizer.json) from `bytes`, its content. Throws naming the file for an empty file, malformed
// JSON, an unknown component type, merges naming unknown tokens, or a bad tokenizer_config.json beside it.
std::unique_ptr<TokenizerImpl> load_hf_tokenizer(const std::string& path, const std::string& bytes);

}  // namespace ll
