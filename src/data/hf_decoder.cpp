#include "data/hf_decoder.h"

#include <utility>

#include "data/hf_bpe.h"
#include "data/regex.h"
#include "data/utf8.h"

namespace ll::hf {

namespace {

std::vector<char32_t> chars_of(const std::string& s) {
  std::vector<char32_t> out;
  char32_t cp;
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_decode(s, i, &cp);
    out.push_back(n ? cp : 0xFFFD);
    i += n ? n : 1;
  }
  return out;
}

std::string single_char(const JsonAt& j, const std::string& key) {
  const std::string s = j.str(key);
  char32_t cp;
  LL_CHECK(!s.empty() && utf8_decode(s, 0, &cp) == s.size(), j.where, ".", key, ": expected one character, got `", s,
           "`");
  return s;
}

// All tokens to bytes through the byte-level alphabet (a token with a character outside it keeps its own bytes),
// then one lossy UTF-8 string.
class ByteLevel final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      std::string mapped;
      bool ok = true;
      for (char32_t c : chars_of(t)) {
        const int b = byte_level_byte(c);
        if (b < 0) {
          ok = false;
          break;
        }
        mapped.push_back(char(b));
      }
      bytes += ok ? mapped : t;
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

// The replacement character becomes a space, except at the very start of the first token (unless prepend_scheme
// is never).
class Metaspace final : public Decoder {
 public:
  explicit Metaspace(const JsonAt& j) : replacement_(single_char(j, "replacement")) {
    std::string scheme = j.str_or("prepend_scheme", "always");
    if (j.has("add_prefix_space") && !j.at("add_prefix_space").boolean()) scheme = "never";
    strip_first_ = scheme != "never";
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t pos = 0; pos < t.size();) {
        if (t.compare(pos, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && strip_first_)) out += ' ';
          pos += replacement_.size();
        } else {
          out += t[pos++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

// Runs of "<0xXX>" tokens become their bytes when those are valid UTF-8, else one U+FFFD per byte.
class ByteFallback final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t count = 0;
    auto flush = [&] {
      if (count == 0) return;
      if (is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < count; ++k) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      count = 0;
    };
    for (std::string& t : tokens) {
      int value = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') value = hex_byte(t[3], t[4]);
      if (value >= 0) {
        bytes.push_back(char(value));
        ++count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int hex_byte(char a, char b) {
    const int h = hex_digit(a), l = hex_digit(b);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class Fuse final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Strips up to `start` leading and `stop` trailing `content` characters from every token.
class Strip final : public Decoder {
 public:
  explicit Strip(const JsonAt& j) : content_(single_char(j, "content")) {
    const int64_t start = j.at("start").integer(), stop = j.at("stop").integer();
    LL_CHECK(start >= 0 && stop >= 0, j.where, ": start and stop must be >= 0");
    start_ = size_t(start), stop_ = size_t(stop);
    utf8_decode(content_, 0, &content_cp_);
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      const std::vector<char32_t> cs = chars_of(t);
      size_t begin = 0, end = cs.size();
      while (begin < cs.size() && begin < start_ && cs[begin] == content_cp_) ++begin;
      for (size_t k = 0; k < stop_ && end > begin && cs[end - 1] == content_cp_; ++k) --end;
      std::string out;
      for (size_t k = begin; k < end; ++k) append_utf8(cs[k], &out);
      t = std::move(out);
    }
  }

 private:
  std::string content_;
  char32_t content_cp_ = 0;
  size_t start_ = 0, stop_ = 0;
};

class Replace final : public Decoder {
 public:
  explicit Replace(const JsonAt& j) : content_(j.str("content")) {
    const JsonAt pattern = j.at("pattern");
    LL_CHECK(pattern.has("String") || pattern.has("Regex"), pattern.where,
             ": expected {\"String\": ...} or {\"Regex\": ...}");
    const bool literal = pattern.has("String");
    const std::string p = literal ? pattern.str("String") : pattern.str("Regex");
    LL_CHECK(!p.empty(), pattern.where, ": the pattern is empty");
    regex_ = std::make_unique<Regex>(p, pattern.where, literal);
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    for (std::string& t : tokens) {
      regex_->find_all(t, &matches);
      if (matches.empty()) continue;
      std::string out;
      size_t last = 0;
      for (const auto& [b, e] : matches) {
        out.append(t, last, b - last);
        out += content_;
        last = e;
      }
      out.append(t, last, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  std::string content_;
  std::unique_ptr<Regex> regex_;
};

class Sequence final : public Decoder {
 public:
  explicit Sequence(const JsonAt& j) {
    const JsonAt list = j.at("decoders");
    for (size_t i = 0; i < list.array().size(); ++i) parts_.push_back(make_decoder(list.item(i)));
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : parts_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const JsonAt& j) {
  const std::string type = j.type();
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "Metaspace") return std::make_unique<Metaspace>(j);
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") return std::make_unique<Strip>(j);
  if (type == "Replace") return std::make_unique<Replace>(j);
  if (type == "Sequence") return std::make_unique<Sequence>(j);
  unknown_type(j, "decoder", "ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence");
}

}  // namespace ll::hf
