#include "data/spm_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "data/spm_model_info.h"
#include "util/error.h"

namespace ll {

namespace {

// See Tokenizer::can_split: BPE, no normalization rules, dummy prefix, and no piece with "▁" right after another
// character, so that no merge can cross a cut before a space.
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

class SpmTokenizer final : public TokenizerImpl {
 public:
  SpmTokenizer(const std::string& path, const std::string& bytes) : path_(path) {
    const auto status = sp_.LoadFromSerializedProto(bytes);
    LL_CHECK(status.ok(), "tokenizer `", path, "` is not a valid sentencepiece model: ", status.ToString());
    LL_CHECK(sp_.GetPieceSize() > 0, "tokenizer `", path, "` has no pieces");
    can_split_ = splittable(bytes, sp_);
    for (int id = 0; id < sp_.GetPieceSize(); ++id)
      if (sp_.IsControl(id) || sp_.IsUnknown(id)) specials_.emplace_back(sp_.IdToPiece(id), id);
    // Longest first: at one position the longest special string wins.
    std::stable_sort(specials_.begin(), specials_.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
  const char* kind() const override { return "sentencepiece"; }

  void encode(std::string_view text, bool, bool parse_special, std::vector<int32_t>* out) const override {
    if (!parse_special) return encode_plain(text, out);
    size_t start = 0;
    for (size_t i = 0; i < text.size();) {
      const auto* found = match_special(text, i);
      if (!found) {
        ++i;
        continue;
      }
      if (i > start) encode_plain(text.substr(start, i - start), out);
      out->push_back(found->second);
      i += found->first.size();
      start = i;
    }
    if (start < text.size()) encode_plain(text.substr(start), out);
  }

  bool can_split(bool parse_special) const override { return can_split_ && !parse_special; }

  std::vector<std::string_view> split_for_encoding(std::string_view text, size_t min_bytes,
                                                   bool parse_special) const override {
    std::vector<std::string_view> parts;
    size_t start = 0;
    if (can_split(parse_special)) {
      // A cut at `p` needs text[p] == ' ', a non-empty rest (encoding "" gives no "▁"), and before it a character
      // that does not become "▁": neither ' ' nor a literal U+2581, which sentencepiece treats as a space. The
      // space itself is dropped: the later part's dummy prefix puts the "▁" back.
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

  void encode_part(std::string_view part, bool, bool parse_special, std::vector<int32_t>* out) const override {
    encode(part, true, parse_special, out);
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string text;
    if (skip_special) {
      const auto status = sp_.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
      LL_CHECK(status.ok(), "tokenizer `", path_, "`: decoding failed: ", status.ToString());
      return text;
    }
    // Special pieces spelled out between the decoded runs of ordinary ids.
    std::vector<int> run;
    auto flush = [&] {
      std::string part;
      const auto status = sp_.Decode(run, &part);
      LL_CHECK(status.ok(), "tokenizer `", path_, "`: decoding failed: ", status.ToString());
      text += part;
      run.clear();
    };
    for (int32_t id : ids) {
      if (is_special(id)) {
        flush();
        text += sp_.IdToPiece(id);
      } else {
        run.push_back(id);
      }
    }
    flush();
    return text;
  }

  std::vector<int32_t> post_prefix() const override {
    return sp_.bos_id() >= 0 ? std::vector<int32_t>{sp_.bos_id()} : std::vector<int32_t>{};
  }
  std::vector<int32_t> post_suffix() const override { return {}; }
  SpecialTokenIds special_ids() const override { return {sp_.bos_id(), sp_.eos_id(), sp_.unk_id(), sp_.pad_id()}; }
  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  bool piece(int32_t id, std::string* out) const override {
    if (id < 0 || id >= sp_.GetPieceSize()) return false;
    *out = sp_.IdToPiece(id);
    return true;
  }
  int32_t token_to_id(std::string_view token) const override {
    const int id = sp_.PieceToId(token);  // the unknown id for anything that is not a piece
    return id >= 0 && sp_.IdToPiece(id) == token ? id : -1;
  }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < sp_.GetPieceSize() && (sp_.IsControl(id) || sp_.IsUnknown(id));
  }

 private:
  void encode_plain(std::string_view text, std::vector<int32_t>* out) const {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    LL_CHECK(status.ok(), "tokenizer `", path_, "`: encoding failed: ", status.ToString());
    out->insert(out->end(), ids.begin(), ids.end());
  }
  const std::pair<std::string, int32_t>* match_special(std::string_view text, size_t i) const {
    for (const auto& s : specials_)
      if (text.compare(i, s.first.size(), s.first) == 0) return &s;
    return nullptr;
  }

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  bool can_split_ = false;
  std::vector<std::pair<std::string, int32_t>> specials_;  // control and unknown pieces, longest first
};

}  // namespace

std::unique_ptr<TokenizerImpl> load_spm_tokenizer(const std::string& path, const std::string& bytes) {
  return std::make_unique<SpmTokenizer>(path, bytes);
}

}  // namespace ll
