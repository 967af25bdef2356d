// tokenizer.json normalizers: NFC, NFD, NFKC, NFKD (utf8proc), Prepend, Replace, Sequence.
#pragma once
#include <memory>
#include <string>

#include "data/hf_json.h"

namespace ll::hf {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual void normalize(std::string& text) const = 0;
  // Normalizing text piece by piece, cut before a space, gives the normalization of the whole (the Unicode normal
  // forms); Prepend and Replace say no.
  virtual bool local() const { return false; }
};

// Builds the normalizer `j` describes; throws naming the path for an unknown type or a bad field.
std::unique_ptr<Normalizer> make_normalizer(const JsonAt& j);

}  // namespace ll::hf
