// tokenizer.json pre-tokenizers: ByteLevel (add_prefix_space, use_regex: GPT-2's pattern), Split (string or regex,
// every delimiter behaviour, invert), Metaspace (replacement, prepend_scheme, split), Sequence.
// They cut normalized text into the words the model encodes one by one. ByteLevel's character mapping itself is
// done by the BPE model on the raw bytes (see hf_bpe.h), so ByteLevel must be the last pre-tokenizer.
#pragma once
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/hf_json.h"

namespace ll::hf {

// A piece of text on its way to the model. `at_start`: it begins at offset 0 of the input (Metaspace's
// prepend_scheme "first" prepends only there).
struct Piece {
  std::string_view text;
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their split (empty pieces dropped); new text lives in `store`.
  virtual void split(std::vector<Piece>& pieces, std::deque<std::string>& store) const = 0;
  // ByteLevel is in it (the model then works on bytes mapped to the byte-level alphabet).
  virtual bool byte_level() const { return false; }
  // ByteLevel with add_prefix_space is in it (a space goes in front of every piece).
  virtual bool adds_prefix_space() const { return false; }
  // Where a long text may be cut so that its parts, encoded one after the other, give the ids of the whole
  // (HfTokenizer::split_for_encoding): KnownRegex for GPT-2's, Llama-3's and Qwen2's splitting patterns (the cut
  // rules were checked against those patterns alone), Metaspace, Neutral for a part that does not cut (ByteLevel
  // without its regex), None when no rule is known.
  enum class CutRule { None, Neutral, KnownRegex, Metaspace };
  virtual CutRule cut_rule() const = 0;
  // Metaspace's replacement character ("" without a Metaspace).
  virtual std::string replacement() const { return ""; }
};

// Builds the pre-tokenizer `j` describes; throws naming the path for an unknown type, a bad field, or a
// ByteLevel that is not last.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const JsonAt& j);

}  // namespace ll::hf
