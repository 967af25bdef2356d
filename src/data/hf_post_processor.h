// tokenizer.json post-processors for a single sequence: TemplateProcessing ($A with special tokens around it),
// ByteLevel (no ids change), Sequence, or none. What `tokenizer(text)` with add_special_tokens=True adds, reduced
// to the ids before and after the text's.
#pragma once
#include <cstdint>
#include <vector>

#include "data/hf_json.h"

namespace ll::hf {

struct PostProcessor {
  std::vector<int32_t> prefix, suffix;
};

// `j` may be JSON null (no post-processor). Throws naming the path for an unknown type or a malformed template.
PostProcessor read_post_processor(const JsonAt& j);

}  // namespace ll::hf
