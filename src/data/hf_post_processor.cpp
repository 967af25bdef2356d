#include "data/hf_post_processor.h"

#include <string>

namespace ll::hf {

namespace {

void read_into(const JsonAt& j, PostProcessor* out) {
  const std::string type = j.type();
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const JsonAt list = j.at("processors");
    for (size_t i = 0; i < list.array().size(); ++i) read_into(list.item(i), out);
    return;
  }
  if (type != "TemplateProcessing")
    unknown_type(j, "post_processor", "TemplateProcessing, ByteLevel, Sequence (RobertaProcessing and "
                                      "BertProcessing are not implemented)");
  LL_CHECK(out->prefix.empty() && out->suffix.empty(), j.where, ": more than one TemplateProcessing");
  const JsonAt single = j.at("single");
  const JsonAt specials = j.at("special_tokens");
  bool seen_sequence = false;
  for (size_t i = 0; i < single.array().size(); ++i) {
    const JsonAt piece = single.item(i);
    if (piece.has("Sequence")) {
      LL_CHECK(!seen_sequence, piece.where, ": the single-sequence template has more than one sequence");
      LL_CHECK(piece.at("Sequence").str("id") == "A", piece.where, ": the single-sequence template uses sequence `",
               piece.at("Sequence").str("id"), "` (expected A)");
      seen_sequence = true;
      continue;
    }
    const std::string name = piece.at("SpecialToken").str("id");
    LL_CHECK(specials.has(name), piece.where, ": special token `", name, "` is not in ", specials.where);
    const JsonAt ids = specials.at(name).at("ids");
    for (size_t k = 0; k < ids.array().size(); ++k) {
      const int64_t id = ids.item(k).integer();
      LL_CHECK(id >= 0 && id < (int64_t(1) << 30), ids.item(k).where, ": id ", id, " is out of range");
      (seen_sequence ? out->suffix : out->prefix).push_back(int32_t(id));
    }
  }
  LL_CHECK(seen_sequence, single.where, ": the single-sequence template has no sequence $A");
}

}  // namespace

PostProcessor read_post_processor(const JsonAt& j) {
  PostProcessor p;
  if (!j.value.is_null()) read_into(j, &p);
  return p;
}

}  // namespace ll::hf
