// UTF-8 at the byte level: decoding one character, validity, and the two repair rules the tokenizers need.
//  * Input text: every byte that does not belong to a valid UTF-8 sequence becomes U+FFFD, one per byte. This is
//    what sentencepiece does inside (so Llama-2 ids do not change when the job repairs text first) and the rule the
//    project documents for both tokenizer kinds.
//  * Decoded bytes (byte-level BPE output): Rust's String::from_utf8_lossy, one U+FFFD per maximal invalid subpart
//    (Unicode's recommended practice), which is what the `tokenizers` library's ByteLevel decoder does.
// Valid means well-formed per Unicode: no overlong forms, no surrogates, nothing above U+10FFFF.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ll {

// Length (1-4) of the valid UTF-8 sequence starting at s[pos], storing its code point; 0 when invalid or truncated.
size_t utf8_decode(std::string_view s, size_t pos, char32_t* cp);
// Length of the sequence starting with this lead byte when it is well formed (1-4), else 0 (no decoding).
inline size_t utf8_lead_length(unsigned char b) {
  return b < 0x80 ? 1 : b < 0xC2 ? 0 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF5 ? 4 : 0;
}
bool is_valid_utf8(std::string_view s);
void append_utf8(char32_t cp, std::string* out);

// `in` with each invalid byte replaced by U+FFFD into *out; returns how many bytes were replaced (0: *out == in).
size_t replace_invalid_utf8(std::string_view in, std::string* out);
// Rust's from_utf8_lossy: one U+FFFD per maximal invalid subpart.
std::string utf8_lossy(std::string_view bytes);

}  // namespace ll
