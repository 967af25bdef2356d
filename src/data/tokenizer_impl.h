// What a tokenizer implementation provides behind ll::Tokenizer (data/tokenizer.h): sentencepiece models
// (spm_tokenizer.h) and Hugging Face tokenizer.json files (hf_tokenizer.h). All methods are const and thread-safe.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ll {

struct SpecialTokenIds {
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;  // -1: the tokenizer has none
};

class TokenizerImpl {
 public:
  virtual ~TokenizerImpl() = default;
  virtual const char* kind() const = 0;  // "sentencepiece" or "tokenizer.json"

  // Appends the ids of `text` (valid UTF-8). `at_start`: the text begins the input, rather than following other
  // text or a special token (Metaspace's prepend_scheme "first" depends on it). `parse_special`: literal
  // special-token strings in the text become their ids (else they are text).
  virtual void encode(std::string_view text, bool at_start, bool parse_special, std::vector<int32_t>* out) const = 0;

  // Cutting long texts for parallel encoding (see Tokenizer::split_for_encoding).
  virtual bool can_split(bool parse_special) const = 0;
  virtual std::vector<std::string_view> split_for_encoding(std::string_view text, size_t min_bytes,
                                                           bool parse_special) const = 0;
  // The ids of one part from split_for_encoding; `first`: the text's first part.
  virtual void encode_part(std::string_view part, bool first, bool parse_special, std::vector<int32_t>* out) const = 0;

  // Ids → text; `skip_special` drops special (control) tokens. Ids must be in [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special) const = 0;

  // What the tokenizer puts around a text when asked for its special tokens (`tokenizer(text)` in transformers).
  virtual std::vector<int32_t> post_prefix() const = 0;
  virtual std::vector<int32_t> post_suffix() const = 0;

  virtual SpecialTokenIds special_ids() const = 0;
  virtual int32_t vocab_size() const = 0;  // every id is below it
  virtual bool piece(int32_t id, std::string* out) const = 0;  // false when the vocabulary has no such id
  virtual int32_t token_to_id(std::string_view token) const = 0;  // -1 when absent
  virtual bool is_special(int32_t id) const = 0;
};

}  // namespace ll
