// Regular expressions of tokenizer files, through Debian's PCRE2 with its JIT compiler. tokenizer.json patterns are
// written for Oniguruma (what the `tokenizers` library uses); PCRE2 reads the same syntax for everything the
// families' Split patterns use (\p{L}, \p{N}, classes, look-ahead, (?i:...)), except that PCRE2's \s also matches
// U+180E: \s and \S are rewritten to Unicode White_Space, which is Oniguruma's \s.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ll {

class Regex {
 public:
  // Compiles `pattern` (Oniguruma syntax, UTF-8, Unicode classes); throws naming `where` and the position of a
  // syntax error. `literal`: the pattern is a plain string to find (tokenizers' {"String": ...} patterns).
  Regex(const std::string& pattern, const std::string& where, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every non-overlapping match in `text` (valid UTF-8), left to right, as [begin, end) byte ranges; an empty match
  // is kept and the search goes on one character later (as Oniguruma's find_iter does). Thread-safe.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string pattern_;
};

// The PCRE2 form of an Oniguruma pattern (\s, \S rewritten; see above). Throws naming `where` for a construct
// PCRE2 would read differently (a nested character class, \S inside a class).
std::string oniguruma_to_pcre2(const std::string& pattern, const std::string& where);

}  // namespace ll
