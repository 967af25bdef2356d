// SHA-256 (FIPS 180-4), for checksums recorded in sidecars and fixtures that Python's hashlib must reproduce.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace ll {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  std::string hex_digest();  // lowercase hex of the 32-byte digest; finalises the object

 private:
  void block(const unsigned char* p);
  uint32_t h_[8];
  unsigned char buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const void* data, size_t size);
// Streams the file; throws ll::Error naming the path when it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace ll
