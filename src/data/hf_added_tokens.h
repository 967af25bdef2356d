// The added tokens of a tokenizer.json ("added_tokens"): matched in the text before the model sees it, as the
// `tokenizers` library does — leftmost-longest, tokens with normalized=false on the raw text, tokens with
// normalized=true on the normalized text, honouring lstrip / rstrip / single_word. A special token (special=true)
// matched while special tokens are text is skipped: its characters stay text (tokenizers' encode_special_tokens).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/hf_json.h"

namespace ll::hf {

class Normalizer;

struct AddedToken {
  int32_t id = -1;
  std::string content;  // as in the file
  std::string pattern;  // what is matched: content, normalized when `normalized` is set
  bool special = false, lstrip = false, rstrip = false, normalized = true, single_word = false;
};

// A stretch of text: an added token (id >= 0) or text for the normalizer / model (id < 0).
struct TextSplit {
  size_t begin, end;
  int32_t id;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // Reads `j` (the "added_tokens" array); `normalizer` (may be null) gives the patterns of normalized tokens.
  AddedVocabulary(const JsonAt& j, const Normalizer* normalizer);

  // `text` cut at the matches of the normalized (true) or raw (false) set; text splits may be empty only when
  // `text` is. `parse_special`: special tokens are matched too (else their strings are text).
  void split(std::string_view text, bool normalized_set, bool parse_special, std::vector<TextSplit>* out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* by_id(int32_t id) const;
  const AddedToken* by_content(std::string_view content) const;
  // Whether a match could span byte pair (a, b): some token of the set matched in this mode holds `a` followed by `b`
  // (see HfTokenizer's splitting of long documents).
  bool pair_inside_token(unsigned char a, unsigned char b, bool parse_special) const;
  bool any_strip() const { return any_strip_; }  // some token has lstrip, rstrip or single_word

 private:
  struct Set {
    std::vector<int> candidates[256];  // token indices by first byte, longest pattern first
    bool empty = true;
  };
  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, size_t> by_content_;
  Set raw_, normalized_;
  std::vector<bool> pairs_all_, pairs_nonspecial_;  // 65536 flags each
  bool any_strip_ = false;
};

}  // namespace ll::hf
