// The few sentencepiece ModelProto fields that decide whether long texts may be encoded in parts
// (Tokenizer::split_for_encoding). Read straight from the protobuf wire format, because Debian's
// libsentencepiece-dev ships no sentencepiece_model.pb.h.
#pragma once
#include <optional>
#include <string>

namespace ll {

struct SpmModelInfo {
  // TrainerSpec (ModelProto field 2); defaults are the proto's.
  int model_type = 1;                       // field 3: 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR
  bool treat_whitespace_as_suffix = false;  // field 24
  // NormalizerSpec (ModelProto field 3).
  std::string normalizer_name;           // field 1 ("identity" for Llama-2)
  bool has_charsmap = false;             // field 2 non-empty: characters are rewritten (NFKC, ...)
  bool add_dummy_prefix = true;          // field 3
  bool remove_extra_whitespaces = true;  // field 4
  bool escape_whitespaces = true;        // field 5
};

// nullopt when the bytes are not well-formed protobuf.
std::optional<SpmModelInfo> read_spm_model_info(const std::string& model_bytes);

}  // namespace ll
