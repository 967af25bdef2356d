// A minimal zip archive writer for PyTorch-format files (io/torch_file.h): stored (uncompressed) entries only, each
// entry's data aligned in the file as PyTorch's reader likes it for memory mapping, zip64 records where a size,
// an offset or the entry count passes what the classic zip fields hold (a 70B model's embedding alone is ~1 GB in
// f32; the archive can pass 4 GiB). Deterministic: timestamps are fixed at 1980-01-01 00:00, so equal inputs give
// byte-identical files (the interop fixtures record their sha256).
//
// Layout (PKWARE APPNOTE 6.3): per entry a local header (+ zip64 sizes when needed + a padding extra field) and the
// data; then one central directory header per entry; then, when anything needed zip64, the zip64 end-of-central-
// directory record and its locator; then the classic end-of-central-directory record.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "util/files.h"

namespace ll {

struct ZipWriterOptions {
  uint32_t alignment = 64;   // each entry's data starts at a multiple of this (a power of two, at most 4096)
  bool force_zip64 = false;  // zip64 records for every entry and the archive, even small ones (tests)
};

class ZipWriter {
 public:
  // Appends to `out` (normally empty); `out` is committed by the caller after finish().
  explicit ZipWriter(AtomicFileWriter& out, ZipWriterOptions options = {});

  // One stored entry. `name` must be non-empty, unique, at most 65535 bytes, without a leading '/' or "..".
  void add(const std::string& name, const void* data, uint64_t size);
  // Writes the central directory and the end records; nothing may be added afterwards.
  void finish();

 private:
  struct Entry {
    std::string name;
    uint32_t crc = 0;
    uint64_t size = 0, header_offset = 0;
  };

  AtomicFileWriter& out_;
  ZipWriterOptions options_;
  std::vector<Entry> entries_;
  std::set<std::string> names_;
  bool finished_ = false;
};

}  // namespace ll
