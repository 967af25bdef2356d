#include "data/hf_added_tokens.h"

#include <algorithm>
#include <cstring>

#include "data/hf_normalizer.h"
#include "data/unicode.h"
#include "data/utf8.h"

namespace ll::hf {

namespace {

// The code point that ends at byte `end` of `s` (valid UTF-8).
char32_t char_before(std::string_view s, size_t end) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  char32_t cp = 0;
  utf8_decode(s, b, &cp);
  return cp;
}

}  // namespace

AddedVocabulary::AddedVocabulary(const JsonAt& j, const Normalizer* normalizer)
    : pairs_all_(65536, false), pairs_nonspecial_(65536, false) {
  const Json& list = j.array();
  for (size_t i = 0; i < list.size(); ++i) {
    const JsonAt t = j.item(i);
    AddedToken a;
    const int64_t id = t.at("id").integer();
    LL_CHECK(id >= 0 && id < (int64_t(1) << 30), t.where, ".id: ", id, " is out of range");
    a.id = int32_t(id);
    a.content = t.str("content");
    LL_CHECK(!a.content.empty(), t.where, ".content: an added token cannot be empty");
    LL_CHECK(is_valid_utf8(a.content), t.where, ".content: not valid UTF-8");
    a.special = t.boolean_or("special", false);
    a.lstrip = t.boolean_or("lstrip", false);
    a.rstrip = t.boolean_or("rstrip", false);
    a.single_word = t.boolean_or("single_word", false);
    a.normalized = t.boolean_or("normalized", !a.special);
    a.pattern = a.content;
    if (a.normalized && normalizer) normalizer->normalize(a.pattern);
    any_strip_ = any_strip_ || a.lstrip || a.rstrip || a.single_word;
    if (by_content_.count(a.content)) {  // tokenizers keeps the last definition of a content
      tokens_[by_content_[a.content]] = a;
    } else {
      by_content_[a.content] = tokens_.size();
      tokens_.push_back(a);
    }
  }
  for (size_t k = 0; k < tokens_.size(); ++k) {
    const AddedToken& a = tokens_[k];
    by_id_[a.id] = k;
    if (a.pattern.empty()) continue;
    Set& set = a.normalized ? normalized_ : raw_;
    set.candidates[static_cast<unsigned char>(a.pattern[0])].push_back(int(k));
    set.empty = false;
    for (size_t p = 0; p + 1 < a.pattern.size(); ++p) {
      const size_t pair = size_t(static_cast<unsigned char>(a.pattern[p])) << 8 | static_cast<unsigned char>(a.pattern[p + 1]);
      pairs_all_[pair] = true;
      if (!a.special) pairs_nonspecial_[pair] = true;
    }
  }
  for (Set* set : {&raw_, &normalized_})
    for (auto& c : set->candidates)
      std::stable_sort(c.begin(), c.end(),
                       [&](int x, int y) { return tokens_[size_t(x)].pattern.size() > tokens_[size_t(y)].pattern.size(); });
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::by_content(std::string_view content) const {
  const auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

bool AddedVocabulary::pair_inside_token(unsigned char a, unsigned char b, bool parse_special) const {
  return (parse_special ? pairs_all_ : pairs_nonspecial_)[size_t(a) << 8 | b];
}

void AddedVocabulary::split(std::string_view text, bool normalized_set, bool parse_special,
                            std::vector<TextSplit>* out) const {
  out->clear();
  const Set& set = normalized_set ? normalized_ : raw_;
  if (set.empty || text.empty()) {
    out->push_back({0, text.size(), -1});
    return;
  }
  size_t start_offset = 0;
  for (size_t i = 0; i < text.size();) {
    const std::vector<int>& cands = set.candidates[static_cast<unsigned char>(text[i])];
    const AddedToken* found = nullptr;
    for (int k : cands) {
      const std::string& p = tokens_[size_t(k)].pattern;
      if (p.size() <= text.size() - i && std::memcmp(text.data() + i, p.data(), p.size()) == 0) {
        found = &tokens_[size_t(k)];
        break;
      }
    }
    if (!found) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + found->pattern.size();
    i = stop;  // the match is consumed even when it is skipped below
    if (found->special && !parse_special) continue;
    if (found->single_word) {
      const bool start_space = start == 0 || !is_word_char(char_before(text, start));
      char32_t next = 0;
      const bool stop_space = stop == text.size() || (utf8_decode(text, stop, &next), !is_word_char(next));
      if (!start_space || !stop_space) continue;
    }
    if (found->lstrip) {
      size_t s = start;
      while (s > 0 && is_unicode_whitespace(char_before(text, s))) {
        size_t b = s - 1;
        while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
        s = b;
      }
      start = std::max(s, start_offset);
    }
    if (found->rstrip) {
      char32_t cp;
      size_t n;
      while (stop < text.size() && (n = utf8_decode(text, stop, &cp)) > 0 && is_unicode_whitespace(cp)) stop += n;
      i = stop;
    }
    if (start_offset < start) out->push_back({start_offset, start, -1});
    out->push_back({start, stop, found->id});
    start_offset = stop;
  }
  if (start_offset != text.size()) out->push_back({start_offset, text.size(), -1});
}

}  // namespace ll::hf
