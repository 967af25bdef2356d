// Unicode facts the tokenizers need, from Debian's utf8proc: normalization forms and character classes.
// utf8proc and the `tokenizers` library (Rust's unicode-normalization, Oniguruma) may follow different Unicode
// versions; characters assigned in between are the only place where results could differ.
#pragma once
#include <string>
#include <string_view>

namespace ll {

enum class NormalForm { NFC, NFD, NFKC, NFKD };

// `text` (valid UTF-8) in the given normal form (ASCII, and for NFC text below U+0300, is copied as it is).
std::string unicode_normalize(std::string_view text, NormalForm form);

// Unicode White_Space (what Rust's char::is_whitespace and regex \s match).
bool is_unicode_whitespace(char32_t cp);
// A word character as regex \w means it: letters, marks, decimal digits, letter numbers, connector punctuation
// (from the general category; Rust also counts the few Other_Alphabetic symbols, which no tokenizer file relies on).
bool is_word_char(char32_t cp);

}  // namespace ll
