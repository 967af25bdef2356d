#include "data/hf_pre_tokenizer.h"

#include <algorithm>
#include <utility>

#include "data/regex.h"
#include "data/utf8.h"

namespace ll::hf {

namespace {

using Spans = std::vector<std::pair<size_t, size_t>>;

// The GPT-2 pattern ByteLevel splits with when use_regex is set.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama-3's and Qwen2's Split patterns: with GPT-2's, the ones the cut rules of split_for_encoding were checked
// against (no match can hold a space or newline followed by an ASCII letter, except a match starting there).
constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const JsonAt& j) {
  const std::string b = j.str();
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  fail(j.where, ": unknown split behavior `", b,
       "` (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

// tokenizers' NormalizedString::split: the text as alternating (range, is_match) runs, combined per behavior.
// Appends the resulting non-empty pieces of `piece`.
void split_by_matches(const Piece& piece, const Spans& matches, bool invert, Behavior behavior,
                      std::vector<Piece>& out) {
  struct Run {
    size_t b, e;
    bool match;
  };
  std::vector<Run> runs;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) runs.push_back({prev, b, invert});
    runs.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != piece.text.size()) runs.push_back({prev, piece.text.size(), invert});

  std::vector<Run> kept;  // (range, remove)
  switch (behavior) {
    case Behavior::Isolated:
      for (Run r : runs) kept.push_back({r.b, r.e, false});
      break;
    case Behavior::Removed:
      kept = runs;  // `match` now means "remove"
      break;
    case Behavior::Contiguous: {
      bool previous = false;
      for (const Run& r : runs) {
        if (r.match == previous && !kept.empty()) kept.back().e = r.e;
        else kept.push_back({r.b, r.e, false});
        previous = r.match;
      }
      break;
    }
    case Behavior::MergedWithPrevious: {
      bool previous = false;
      for (const Run& r : runs) {
        if (r.match && !previous && !kept.empty()) kept.back().e = r.e;
        else kept.push_back({r.b, r.e, false});
        previous = r.match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool previous = false;
      for (size_t k = runs.size(); k-- > 0;) {
        const Run& r = runs[k];
        if (r.match && !previous && !kept.empty()) kept.back().b = r.b;
        else kept.push_back({r.b, r.e, false});
        previous = r.match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const Run& r : kept)
    if (!r.match && r.e > r.b) out.push_back({piece.text.substr(r.b, r.e - r.b), piece.at_start && r.b == 0});
}

class Split final : public PreTokenizer {
 public:
  explicit Split(const JsonAt& j) : invert_(j.boolean_or("invert", false)), behavior_(parse_behavior(j.at("behavior"))) {
    const JsonAt pattern = j.at("pattern");
    LL_CHECK(pattern.has("String") || pattern.has("Regex"), pattern.where,
             ": expected {\"String\": ...} or {\"Regex\": ...}");
    const bool literal = pattern.has("String");
    const std::string p = literal ? pattern.str("String") : pattern.str("Regex");
    LL_CHECK(!p.empty(), pattern.where, ": the pattern is empty");
    regex_ = std::make_unique<Regex>(p, pattern.where, literal);
    known_ = !literal && !invert_ && behavior_ == Behavior::Isolated && (p == kLlama3Pattern || p == kQwen2Pattern);
  }
  CutRule cut_rule() const override { return known_ ? CutRule::KnownRegex : CutRule::None; }
  void split(std::vector<Piece>& pieces, std::deque<std::string>&) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    Spans matches;
    for (const Piece& piece : pieces) {
      regex_->find_all(piece.text, &matches);
      split_by_matches(piece, matches, invert_, behavior_, out);
    }
    pieces.swap(out);
  }

 private:
  bool invert_;
  Behavior behavior_;
  std::unique_ptr<Regex> regex_;
  bool known_ = false;
};

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(const JsonAt& j, const std::string& where)
      : add_prefix_space_(j.boolean_or("add_prefix_space", true)), use_regex_(j.boolean_or("use_regex", true)) {
    if (use_regex_) regex_ = std::make_unique<Regex>(kGpt2Pattern, where);
  }
  void split(std::vector<Piece>& pieces, std::deque<std::string>& store) const override {
    if (add_prefix_space_)
      for (Piece& p : pieces)
        if (p.text.empty() || p.text[0] != ' ') p.text = store.emplace_back(" " + std::string(p.text));
    if (!use_regex_) return;
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    Spans matches;
    for (const Piece& piece : pieces) {
      regex_->find_all(piece.text, &matches);
      split_by_matches(piece, matches, false, Behavior::Isolated, out);
    }
    pieces.swap(out);
  }
  bool byte_level() const override { return true; }
  bool adds_prefix_space() const override { return add_prefix_space_; }
  CutRule cut_rule() const override {
    if (add_prefix_space_) return CutRule::None;
    return use_regex_ ? CutRule::KnownRegex : CutRule::Neutral;
  }

 private:
  bool add_prefix_space_, use_regex_;
  std::unique_ptr<Regex> regex_;
};

class Metaspace final : public PreTokenizer {
 public:
  explicit Metaspace(const JsonAt& j) : split_(j.boolean_or("split", true)) {
    const std::string rep = j.str("replacement");
    char32_t cp = 0;
    LL_CHECK(!rep.empty() && utf8_decode(rep, 0, &cp) == rep.size(), j.where,
             ".replacement: expected one character, got `", rep, "`");
    replacement_ = rep;
    const std::string scheme = j.str_or("prepend_scheme", "always");
    if (scheme == "always") scheme_ = Scheme::Always;
    else if (scheme == "first") scheme_ = Scheme::First;
    else if (scheme == "never") scheme_ = Scheme::Never;
    else fail(j.where, ".prepend_scheme: expected always, first or never, got `", scheme, "`");
    if (j.has("add_prefix_space") && !j.at("add_prefix_space").boolean()) {  // the older spelling of "never"
      LL_CHECK(scheme_ == Scheme::Never || !j.has("prepend_scheme"), j.where,
               ": add_prefix_space false does not match prepend_scheme `", scheme, "`");
      scheme_ = Scheme::Never;
    }
  }
  void split(std::vector<Piece>& pieces, std::deque<std::string>& store) const override {
    std::vector<Piece> out;
    for (const Piece& piece : pieces) {
      std::string& s = store.emplace_back();
      s.reserve(piece.text.size() + 8);
      const bool starts = piece.text.substr(0, 1) == " " || piece.text.substr(0, replacement_.size()) == replacement_;
      if (!starts && !piece.text.empty() &&
          (scheme_ == Scheme::Always || (scheme_ == Scheme::First && piece.at_start)))
        s += replacement_;
      for (char c : piece.text) {
        if (c == ' ') s += replacement_;
        else s += c;
      }
      if (!split_) {
        out.push_back({s, piece.at_start});
        continue;
      }
      // MergedWithNext on the replacement: each word starts with its replacement character.
      size_t begin = 0;
      for (size_t pos = s.find(replacement_, 1); pos != std::string::npos; pos = s.find(replacement_, pos + 1)) {
        out.push_back({std::string_view(s).substr(begin, pos - begin), piece.at_start && begin == 0});
        begin = pos;
      }
      if (begin < s.size()) out.push_back({std::string_view(s).substr(begin), piece.at_start && begin == 0});
    }
    pieces.swap(out);
  }
  CutRule cut_rule() const override { return CutRule::Metaspace; }
  std::string replacement() const override { return replacement_; }

 private:
  enum class Scheme { Always, First, Never };
  std::string replacement_;
  Scheme scheme_ = Scheme::Always;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void split(std::vector<Piece>& pieces, std::deque<std::string>& store) const override {
    for (const auto& p : parts_) p->split(pieces, store);
  }
  bool byte_level() const override { return !parts_.empty() && parts_.back()->byte_level(); }
  bool adds_prefix_space() const override {
    for (const auto& p : parts_)
      if (p->adds_prefix_space()) return true;
    return false;
  }
  std::string replacement() const override {
    for (const auto& p : parts_)
      if (!p->replacement().empty()) return p->replacement();
    return "";
  }
  CutRule cut_rule() const override {
    // Parts that do not cut, and either known regexes or one Metaspace alone.
    CutRule rule = CutRule::Neutral;
    for (const auto& p : parts_) {
      const CutRule r = p->cut_rule();
      if (r == CutRule::Neutral) continue;
      if (r == CutRule::None || rule != CutRule::Neutral) {
        if (!(r == CutRule::KnownRegex && rule == CutRule::KnownRegex)) return CutRule::None;
      }
      rule = r;
    }
    return rule;
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

std::unique_ptr<PreTokenizer> make_one(const JsonAt& j) {
  const std::string type = j.type();
  if (type == "Split") return std::make_unique<Split>(j);
  if (type == "ByteLevel") return std::make_unique<ByteLevel>(j, j.where);
  if (type == "Metaspace") return std::make_unique<Metaspace>(j);
  if (type == "Sequence") {
    const JsonAt list = j.at("pretokenizers");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list.array().size(); ++i) {
      const JsonAt item = list.item(i);
      if (i > 0)
        LL_CHECK(!parts.back()->byte_level(), item.where,
                 ": a pre-tokenizer after ByteLevel is not supported (ByteLevel must come last)");
      parts.push_back(make_one(item));
    }
    return std::make_unique<Sequence>(std::move(parts));
  }
  unknown_type(j, "pre_tokenizer", "ByteLevel, Split, Metaspace, Sequence");
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const JsonAt& j) { return make_one(j); }

}  // namespace ll::hf
