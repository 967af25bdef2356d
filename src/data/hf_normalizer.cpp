#include "data/hf_normalizer.h"

#include <utility>
#include <vector>

#include "data/regex.h"
#include "data/unicode.h"

namespace ll::hf {

namespace {

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(NormalForm form) : form_(form) {}
  void normalize(std::string& text) const override { text = unicode_normalize(text, form_); }
  bool local() const override { return true; }

 private:
  NormalForm form_;
};

// Prepend: the string goes in front of a non-empty text.
class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

// Replace: every match of the pattern (a string, or a regex) by `content`.
class Replace final : public Normalizer {
 public:
  Replace(const JsonAt& j) : content_(j.str("content")) {
    const JsonAt pattern = j.at("pattern");
    const bool literal = pattern.has("String");
    const std::string p = literal ? pattern.str("String") : pattern.has("Regex") ? pattern.str("Regex") : "";
    LL_CHECK(pattern.has("String") || pattern.has("Regex"), pattern.where,
             ": expected {\"String\": ...} or {\"Regex\": ...}");
    LL_CHECK(!p.empty(), pattern.where, ": the pattern is empty");
    regex_ = std::make_unique<Regex>(p, pattern.where, literal);
  }
  void normalize(std::string& text) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    regex_->find_all(text, &matches);
    if (matches.empty()) return;
    std::string out;
    size_t last = 0;
    for (const auto& [b, e] : matches) {
      out.append(text, last, b - last);
      out += content_;
      last = e;
    }
    out.append(text, last, std::string::npos);
    text = std::move(out);
  }

 private:
  std::string content_;
  std::unique_ptr<Regex> regex_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(const JsonAt& j) {
    const JsonAt list = j.at("normalizers");
    for (size_t i = 0; i < list.array().size(); ++i) parts_.push_back(make_normalizer(list.item(i)));
  }
  void normalize(std::string& text) const override {
    for (const auto& n : parts_) n->normalize(text);
  }
  bool local() const override {
    for (const auto& n : parts_)
      if (!n->local()) return false;
    return true;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const JsonAt& j) {
  const std::string type = j.type();
  if (type == "NFC") return std::make_unique<UnicodeForm>(NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeForm>(NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(NormalForm::NFKD);
  if (type == "Prepend") return std::make_unique<Prepend>(j.str("prepend"));
  if (type == "Replace") return std::make_unique<Replace>(j);
  if (type == "Sequence") return std::make_unique<Sequence>(j);
  unknown_type(j, "normalizer", "NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence");
}

}  // namespace ll::hf
