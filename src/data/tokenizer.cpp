#include "data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <optional>

#include "data/spm_model_info.h"
#include "data/tokenizer_path.h"
#include "util/error.h"
#include "util/files.h"
#include "util/md5.h"

namespace ll {

namespace {

// See Tokenizer::can_split.
bool splittable(const std::string& model_bytes, const sentencepiece::SentencePieceProcessor& sp) {
  const std::optional<SpmModelInfo> info = read_spm_model_info(model_bytes);
  if (!info || info->model_type != 2 || info->has_charsmap || !info->add_dummy_prefix ||
      info->remove_extra_whitespaces || !info->escape_whitespaces || info->treat_whitespace_as_suffix)
    return false;
  const std::string ws = "\xe2\x96\x81";  // ▁
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    const std::string piece = sp.IdToPiece(id);
    for (size_t pos = piece.find(ws, 1); pos != std::string::npos; pos = piece.find(ws, pos + 1))
      if (pos < 3 || piece.compare(pos - 3, 3, ws) != 0) return false;  // another character, then ▁
  }
  return true;
}

}  // namespace

Tokenizer::Tokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& file_or_folder) {
  const std::string path = resolve_tokenizer_path(file_or_folder);
  // Load from the bytes we hash, so the checksum describes exactly the model in use.
  const std::string bytes = read_text_file(path);
  Tokenizer t;
  const auto status = t.sp_->LoadFromSerializedProto(bytes);
  LL_CHECK(status.ok(), "tokenizer `", path, "` is not a valid sentencepiece model: ", status.ToString());
  LL_CHECK(t.sp_->GetPieceSize() > 0, "tokenizer `", path, "` has no pieces");
  t.path_ = path;
  t.md5_ = md5_hex(bytes.data(), bytes.size());
  t.can_split_ = splittable(bytes, *t.sp_);
  return t;
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>* out) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  LL_CHECK(status.ok(), "tokenizer `", path_, "`: encoding failed: ", status.ToString());
  out->insert(out->end(), ids.begin(), ids.end());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int32_t> out;
  if (add_bos) {
    LL_CHECK(bos_id() >= 0, "tokenizer `", path_, "` has no BOS piece, so BOS cannot be added");
    out.push_back(bos_id());
  }
  encode_append(text, &out);
  if (add_eos) {
    LL_CHECK(eos_id() >= 0, "tokenizer `", path_, "` has no EOS piece, so EOS cannot be added");
    out.push_back(eos_id());
  }
  return out;
}

std::vector<std::string_view> Tokenizer::split_for_encoding(std::string_view text, size_t min_bytes) const {
  std::vector<std::string_view> parts;
  size_t start = 0;
  if (can_split_) {
    // A cut at `p` needs text[p] == ' ', a non-empty rest (encoding "" gives no "▁"), and before it a character
    // that does not become "▁": neither ' ' nor a literal U+2581, which sentencepiece treats as a space.
    const std::string_view ws = "\xe2\x96\x81";
    for (size_t p = start + std::max<size_t>(min_bytes, 1); p + 1 < text.size(); ++p) {
      p = text.find(' ', p);
      if (p == std::string_view::npos || p + 1 >= text.size()) break;
      if (text[p - 1] == ' ' || (p >= 3 && text.substr(p - 3, 3) == ws)) continue;
      parts.push_back(text.substr(start, p - start));
      start = p + 1;
      p = start + std::max<size_t>(min_bytes, 1) - 1;  // the loop's ++p makes it start + min_bytes
    }
  }
  parts.push_back(text.substr(start));
  return parts;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const int32_t n = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i)
    LL_CHECK(ids[i] >= 0 && ids[i] < n, "tokenizer `", path_, "`: cannot decode id ", ids[i], " at position ", i,
             " (vocabulary has ", n, " pieces)");
  std::string text;
  const auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  LL_CHECK(status.ok(), "tokenizer `", path_, "`: decoding failed: ", status.ToString());
  return text;
}

int32_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int32_t Tokenizer::eos_id() const { return sp_->eos_id(); }
int32_t Tokenizer::unk_id() const { return sp_->unk_id(); }
int32_t Tokenizer::pad_id() const { return sp_->pad_id(); }
int32_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

std::string Tokenizer::piece(int32_t id) const {
  LL_CHECK(id >= 0 && id < vocab_size(), "tokenizer `", path_, "`: id ", id, " is outside [0, ", vocab_size(), ")");
  return sp_->IdToPiece(id);
}

}  // namespace ll
