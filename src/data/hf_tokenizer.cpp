#include "data/hf_tokenizer.h"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <unordered_set>

#include "data/hf_added_tokens.h"
#include "data/hf_bpe.h"
#include "data/hf_decoder.h"
#include "data/hf_json.h"
#include "data/hf_normalizer.h"
#include "data/hf_post_processor.h"
#include "data/hf_pre_tokenizer.h"
#include "data/utf8.h"
#include "util/files.h"

namespace ll {

namespace {

using hf::Json;
using hf::JsonAt;

class HfTokenizer final : public TokenizerImpl {
 public:
  HfTokenizer(const std::string& path, const Json& root);
  const char* kind() const override { return "tokenizer.json"; }
  void encode(std::string_view text, bool at_start, bool parse_special, std::vector<int32_t>* out) const override;
  bool can_split(bool parse_special) const override;
  std::vector<std::string_view> split_for_encoding(std::string_view text, size_t min_bytes,
                                                   bool parse_special) const override;
  void encode_part(std::string_view part, bool first, bool parse_special, std::vector<int32_t>* out) const override {
    encode(part, first, parse_special, out);
  }
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override;
  std::vector<int32_t> post_prefix() const override { return post_.prefix; }
  std::vector<int32_t> post_suffix() const override { return post_.suffix; }
  SpecialTokenIds special_ids() const override { return specials_; }
  int32_t vocab_size() const override { return vocab_size_; }
  bool piece(int32_t id, std::string* out) const override;
  int32_t token_to_id(std::string_view token) const override;
  bool is_special(int32_t id) const override;

 private:
  void encode_stretch(std::string_view text, bool at_start, bool parse_special, std::vector<int32_t>* out) const;
  void read_special_ids(const std::string& path);
  bool cut_allowed(std::string_view text, size_t p, bool parse_special) const;
  void encode_word(std::string_view word, std::vector<int32_t>* out) const;

  std::string path_;
  std::unique_ptr<hf::Normalizer> normalizer_;
  std::unique_ptr<hf::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<hf::BpeModel> model_;
  std::unique_ptr<hf::Decoder> decoder_;
  hf::PostProcessor post_;
  hf::AddedVocabulary added_;
  std::unordered_set<std::string> special_contents_;
  SpecialTokenIds specials_;
  int32_t vocab_size_ = 0;
  // split_for_encoding: which cut rule applies (see can_split)
  hf::PreTokenizer::CutRule cut_rule_ = hf::PreTokenizer::CutRule::None;
  std::string replacement_;       // Metaspace's
  bool metaspace_words_ = false;  // see encode_word
};

HfTokenizer::HfTokenizer(const std::string& path, const Json& root) : path_(path) {
  const JsonAt top{root, "tokenizer.json `" + path + "`"};
  LL_CHECK(root.is_object(), top.where, ": expected a JSON object at the top, got ", root.type_name());
  LL_CHECK(top.has("model"), top.where, ": no `model` (not a Hugging Face tokenizer.json?)");
  static const Json kNull;
  auto part = [&](const char* key) -> JsonAt {
    const auto it = root.find(key);
    return {it == root.end() ? kNull : *it, top.where + ": " + key};
  };
  if (const JsonAt n = part("normalizer"); !n.value.is_null()) normalizer_ = hf::make_normalizer(n);
  if (const JsonAt p = part("pre_tokenizer"); !p.value.is_null()) pre_tokenizer_ = hf::make_pre_tokenizer(p);
  const bool byte_level = pre_tokenizer_ && pre_tokenizer_->byte_level();
  model_ = std::make_unique<hf::BpeModel>(part("model"), byte_level);
  if (const JsonAt d = part("decoder"); !d.value.is_null()) decoder_ = hf::make_decoder(d);
  post_ = hf::read_post_processor(part("post_processor"));
  if (const JsonAt a = part("added_tokens"); !a.value.is_null()) added_ = hf::AddedVocabulary(a, normalizer_.get());

  int32_t max_id = model_->max_id();
  for (const hf::AddedToken& t : added_.tokens()) {
    max_id = std::max(max_id, t.id);
    if (t.special) special_contents_.insert(t.content);
  }
  vocab_size_ = max_id + 1;
  for (int32_t id : post_.prefix) LL_CHECK(id < vocab_size_, top.where, ": post_processor id ", id, " is not in the vocabulary");
  for (int32_t id : post_.suffix) LL_CHECK(id < vocab_size_, top.where, ": post_processor id ", id, " is not in the vocabulary");
  read_special_ids(path);

  // Metaspace words: as for sentencepiece, when no token holds the replacement after another character, no merge can
  // join a character to a following replacement, so a word is encoded as its sub-words cut before each replacement
  // that follows another character (each then cached on its own; Mistral's words are whole texts otherwise).
  if (pre_tokenizer_ && !pre_tokenizer_->replacement().empty()) {
    replacement_ = pre_tokenizer_->replacement();
    metaspace_words_ = true;
    for (const std::string& t : model_->tokens())
      for (size_t pos = t.find(replacement_, 1); pos != std::string::npos; pos = t.find(replacement_, pos + 1))
        if (pos < replacement_.size() || t.compare(pos - replacement_.size(), replacement_.size(), replacement_) != 0)
          metaspace_words_ = false;
  }
  // Splitting rules (see can_split): a local normalizer, no ByteLevel prefix space, no stripping added tokens, and a
  // pre-tokenizer whose cuts are known.
  if ((!normalizer_ || normalizer_->local()) && pre_tokenizer_ && !added_.any_strip()) {
    cut_rule_ = pre_tokenizer_->cut_rule();
    if (cut_rule_ == hf::PreTokenizer::CutRule::Metaspace && !metaspace_words_) cut_rule_ = hf::PreTokenizer::CutRule::None;
  }
}

// The model's ids for one pre-tokenized word (cut into Metaspace sub-words when that is exact).
void HfTokenizer::encode_word(std::string_view word, std::vector<int32_t>* out) const {
  if (!metaspace_words_) return model_->encode_word(word, out);
  const std::string_view rep = replacement_;
  size_t begin = 0;
  for (size_t pos = word.find(rep, 1); pos != std::string_view::npos; pos = word.find(rep, pos + 1)) {
    const bool after_replacement = pos >= rep.size() && word.compare(pos - rep.size(), rep.size(), rep) == 0;
    if (after_replacement) continue;  // "▁▁" may be one token
    model_->encode_word(word.substr(begin, pos - begin), out);
    begin = pos;
  }
  model_->encode_word(word.substr(begin), out);
}

void HfTokenizer::read_special_ids(const std::string& path) {
  specials_.unk = -1;
  const std::string config = (std::filesystem::path(path).parent_path() / "tokenizer_config.json").string();
  if (path_exists(config)) {
    Json j;
    try {
      j = Json::parse(read_text_file(config));
    } catch (const Json::exception& e) {
      fail(config, ": not valid JSON (", e.what(), ")");
    }
    LL_CHECK(j.is_object(), config, ": expected a JSON object");
    auto role = [&](const char* key) {
      const auto it = j.find(key);
      if (it == j.end() || it->is_null()) return -1;
      std::string name;
      if (it->is_string()) name = it->get<std::string>();
      else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) name = (*it)["content"].get<std::string>();
      else fail(config, ": ", key, ": expected a token string or {\"content\": ...}, got ", it->dump());
      const int32_t id = token_to_id(name);
      LL_CHECK(id >= 0, config, ": ", key, " `", name, "` is not a token of ", path);
      return int(id);
    };
    specials_.bos = role("bos_token");
    specials_.eos = role("eos_token");
    specials_.unk = role("unk_token");
    specials_.pad = role("pad_token");
    return;
  }
  auto first_present = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (const hf::AddedToken* t = added_.by_content(n); t && t->special) return t->id;
    return -1;
  };
  specials_.bos = post_.prefix.size() == 1 ? post_.prefix[0] : first_present({"<s>", "<|begin_of_text|>", "<|endoftext|>"});
  specials_.eos = first_present({"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>"});
  specials_.unk = model_->unk_id();
}

// One stretch of raw text between added tokens: normalize, match normalized added tokens, pre-tokenize, BPE.
void HfTokenizer::encode_stretch(std::string_view text, bool at_start, bool parse_special,
                                 std::vector<int32_t>* out) const {
  thread_local std::string normalized;
  thread_local std::vector<hf::TextSplit> splits;
  thread_local std::vector<hf::Piece> pieces;
  thread_local std::deque<std::string> store;  // text the pre-tokenizer makes; the pieces point into it
  normalized.assign(text);
  if (normalizer_) normalizer_->normalize(normalized);
  added_.split(normalized, true, parse_special, &splits);
  for (const hf::TextSplit& s : splits) {
    if (s.id >= 0) {
      out->push_back(s.id);
      continue;
    }
    if (s.end == s.begin) continue;
    store.clear();
    pieces.assign(1, {std::string_view(normalized).substr(s.begin, s.end - s.begin), at_start && s.begin == 0});
    if (pre_tokenizer_) pre_tokenizer_->split(pieces, store);
    for (const hf::Piece& p : pieces) encode_word(p.text, out);
  }
}

void HfTokenizer::encode(std::string_view text, bool at_start, bool parse_special, std::vector<int32_t>* out) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    replace_invalid_utf8(text, &repaired);
    text = repaired;
  }
  std::vector<hf::TextSplit> splits;
  added_.split(text, false, parse_special, &splits);
  for (const hf::TextSplit& s : splits) {
    if (s.id >= 0) out->push_back(s.id);
    else if (s.end > s.begin) encode_stretch(text.substr(s.begin, s.end - s.begin), at_start && s.begin == 0, parse_special, out);
  }
}

bool HfTokenizer::can_split(bool) const {
  return cut_rule_ == hf::PreTokenizer::CutRule::KnownRegex || cut_rule_ == hf::PreTokenizer::CutRule::Metaspace;
}

// May the text be cut before byte p? (The rules are explained in docs/architecture.md, "Tokenizers".)
bool HfTokenizer::cut_allowed(std::string_view t, size_t p, bool parse_special) const {
  if (p < 2 || p + 1 >= t.size()) return false;
  auto ascii_letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  auto printable = [](char c) { return c > ' ' && c < 0x7F; };
  bool ok = false;
  if (cut_rule_ == hf::PreTokenizer::CutRule::KnownRegex) {
    // "x Abc" cut before the space, or "x\nAbc" cut after the newline; x printable ASCII.
    ok = (t[p] == ' ' && printable(t[p - 1]) && ascii_letter(t[p + 1])) ||
         (t[p - 1] == '\n' && printable(t[p - 2]) && ascii_letter(t[p]));
  } else if (cut_rule_ == hf::PreTokenizer::CutRule::Metaspace) {
    // Before a space that follows a character that is neither a space nor the replacement character.
    ok = t[p] == ' ' && t[p - 1] != ' ' &&
         !(p >= replacement_.size() && t.compare(p - replacement_.size(), replacement_.size(), replacement_) == 0);
  }
  return ok && !added_.pair_inside_token(static_cast<unsigned char>(t[p - 1]), static_cast<unsigned char>(t[p]),
                                         parse_special);
}

std::vector<std::string_view> HfTokenizer::split_for_encoding(std::string_view text, size_t min_bytes,
                                                              bool parse_special) const {
  std::vector<std::string_view> parts;
  size_t start = 0;
  if (can_split(parse_special) && is_valid_utf8(text)) {
    for (size_t p = start + std::max<size_t>(min_bytes, 2); p + 1 < text.size(); ++p) {
      if (!cut_allowed(text, p, parse_special)) continue;
      parts.push_back(text.substr(start, p - start));
      start = p;
      p = start + std::max<size_t>(min_bytes, 2) - 1;  // the loop's ++p makes it start + min_bytes
    }
  }
  parts.push_back(text.substr(start));
  return parts;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    LL_CHECK(ids[i] >= 0 && ids[i] < vocab_size_, "tokenizer `", path_, "`: cannot decode id ", ids[i],
             " at position ", i, " (vocabulary has ", vocab_size_, " ids)");
    std::string token;
    if (const hf::AddedToken* a = added_.by_id(ids[i])) token = a->normalized ? a->pattern : a->content;
    else if (!model_->id_to_token(ids[i], &token)) continue;  // an id the vocabulary skips: nothing, as tokenizers
    if (skip_special && special_contents_.count(token)) continue;
    tokens.push_back(std::move(token));
  }
  if (!decoder_) {
    std::string text;
    for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
    return text;
  }
  decoder_->decode_chain(tokens);
  std::string text;
  for (const std::string& t : tokens) text += t;
  return text;
}

bool HfTokenizer::piece(int32_t id, std::string* out) const {
  if (const hf::AddedToken* a = added_.by_id(id)) {
    *out = a->content;
    return true;
  }
  return model_->id_to_token(id, out);
}

int32_t HfTokenizer::token_to_id(std::string_view token) const {
  if (const hf::AddedToken* a = added_.by_content(token)) return a->id;
  return model_->token_to_id(token);
}

bool HfTokenizer::is_special(int32_t id) const {
  std::string token;
  return piece(id, &token) && special_contents_.count(token) > 0;
}

}  // namespace

std::unique_ptr<TokenizerImpl> load_hf_tokenizer(const std::string& path, const std::string& bytes) {
  LL_CHECK(!bytes.empty(), "tokenizer.json `", path, "` is empty");
  Json root;
  try {
    root = Json::parse(bytes);
  } catch (const Json::exception& e) {
    fail("tokenizer.json `", path, "` is not valid JSON (", e.what(), ")");
  }
  return std::make_unique<HfTokenizer>(path, root);
}

}  // namespace ll
