// tokenizer.json decoders: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence. Each rewrites the
// list of token strings as the `tokenizers` library's decode_chain does; the text is their concatenation.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/hf_json.h"

namespace ll::hf {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

std::unique_ptr<Decoder> make_decoder(const JsonAt& j);

}  // namespace ll::hf
