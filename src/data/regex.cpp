#include "data/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "util/error.h"

namespace ll {

namespace {

// Unicode White_Space, Oniguruma's \s: Zs, Zl, Zp, tab to carriage return, and NEL.
constexpr const char* kWhiteSpace =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

// Escapes every character PCRE2 treats specially, for a literal pattern.
std::string quote(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::string oniguruma_to_pcre2(const std::string& p, const std::string& where) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[++i];
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpace) : std::string("[") + kWhiteSpace + "]";
      } else if (e == 'S') {
        LL_CHECK(!in_class, where, ": regex `", p, "`: \\S inside a character class is not supported");
        out += std::string("[^") + kWhiteSpace + "]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[') {
      LL_CHECK(i + 1 < p.size() && p[i + 1] == ':', where, ": regex `", p,
               "`: nested character classes (Oniguruma set operations) are not supported");
      const size_t close = p.find(":]", i + 2);
      LL_CHECK(close != std::string::npos, where, ": regex `", p, "`: unterminated POSIX class");
      out.append(p, i, close + 2 - i);
      i = close + 1;
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Impl() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern, const std::string& where, bool literal)
    : impl_(std::make_unique<Impl>()), pattern_(pattern) {
  const std::string translated = literal ? quote(pattern) : oniguruma_to_pcre2(pattern, where);
  int error = 0;
  PCRE2_SIZE offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  LL_CHECK(impl_->code != nullptr, where, ": regex `", pattern, "` does not compile: ", pcre2_message(error),
           " (at byte ", offset, " of its PCRE2 form `", translated, "`)");
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;  // without JIT (no support): the interpreter
}

Regex::~Regex() = default;

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  matches->clear();
  // One match block per thread, reused: a pattern has at most a few dozen groups.
  thread_local struct Block {
    pcre2_match_data* data = pcre2_match_data_create(32, nullptr);
    ~Block() { pcre2_match_data_free(data); }
  } block;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = impl_->jit ? pcre2_jit_match(impl_->code, subject, text.size(), start, 0, block.data, nullptr)
                              : pcre2_match(impl_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, block.data,
                                            nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    LL_CHECK(rc >= 0 || rc == PCRE2_ERROR_NOMATCH, "regex `", pattern_, "` failed on a text of ", text.size(),
             " bytes: ", pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(block.data);
    const size_t b = ov[0], e = ov[1];
    matches->emplace_back(b, e);
    if (e > b) {
      start = e;
    } else {  // an empty match: go on after the next character
      if (b >= text.size()) break;
      start = b + 1;
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
    }
  }
}

}  // namespace ll
