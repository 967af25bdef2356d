// MD5 of a byte buffer, as lowercase hex. Used to fingerprint tokenizer models in token-file sidecars:
// md5 is what formats.md records for the Llama-2 tokenizer (eeec4125…), so users can compare by eye.
// Not for security.
#pragma once
#include <cstddef>
#include <string>

namespace ll {

std::string md5_hex(const void* data, size_t size);

}  // namespace ll
