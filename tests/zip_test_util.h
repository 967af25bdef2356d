// A small, strict zip reader for tests of io/zip_writer and io/torch_file: parses the end records (zip64 included),
// the central directory and each local header the way a reader must, and hands back each entry's bytes. Checks as
// it goes (signatures, stored method, sizes in both headers, zip64 fields, bounds) with gtest failures.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "util/crc32.h"
#include "util/files.h"

namespace ll::test {

struct ZipEntry {
  std::string name;
  uint32_t crc = 0;
  uint64_t size = 0, header_offset = 0, data_offset = 0;
  bool zip64_sizes = false, zip64_offset = false;  // the central header's 32-bit fields read 0xFFFFFFFF
  std::string data;
};

struct ZipArchive {
  std::vector<ZipEntry> entries;
  bool zip64_end = false;  // zip64 end record + locator present
  const ZipEntry* find(const std::string& name) const {
    for (const ZipEntry& e : entries)
      if (e.name == name) return &e;
    return nullptr;
  }
};

inline uint64_t zip_le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | uint8_t(s.at(at + size_t(i)));
  return v;
}

// Reads `bytes` (a whole archive, no archive comment). Failures are reported through gtest; a malformed archive
// returns what was parsed so far.
inline ZipArchive parse_zip(const std::string& bytes) {
  ZipArchive z;
  if (bytes.size() < 22) {
    ADD_FAILURE() << "archive of " << bytes.size() << " bytes has no end record";
    return z;
  }
  const size_t end = bytes.size() - 22;
  EXPECT_EQ(zip_le(bytes, end, 4), 0x06054b50u) << "end of central directory signature";
  uint64_t count = zip_le(bytes, end + 10, 2), dir_size = zip_le(bytes, end + 12, 4), dir_offset = zip_le(bytes, end + 16, 4);
  if (end >= 20 && zip_le(bytes, end - 20, 4) == 0x07064b50u) {  // zip64 locator just before the end record
    z.zip64_end = true;
    const uint64_t rec = zip_le(bytes, end - 20 + 8, 8);
    EXPECT_EQ(zip_le(bytes, end - 20 + 16, 4), 1u) << "zip64 locator: total disks";
    EXPECT_EQ(rec + 56, end - 20) << "the zip64 end record sits right before its locator";
    EXPECT_EQ(zip_le(bytes, rec, 4), 0x06064b50u) << "zip64 end record signature";
    EXPECT_EQ(zip_le(bytes, rec + 4, 8), 44u) << "zip64 end record size";
    EXPECT_EQ(count, 0xFFFFu);
    EXPECT_EQ(dir_size, 0xFFFFFFFFu);
    EXPECT_EQ(dir_offset, 0xFFFFFFFFu);
    EXPECT_EQ(zip_le(bytes, rec + 24, 8), zip_le(bytes, rec + 32, 8)) << "entries on this disk = total";
    count = zip_le(bytes, rec + 32, 8);
    dir_size = zip_le(bytes, rec + 40, 8);
    dir_offset = zip_le(bytes, rec + 48, 8);
    EXPECT_EQ(dir_offset + dir_size, rec) << "central directory ends where the zip64 end record starts";
  } else {
    EXPECT_EQ(dir_offset + dir_size, end) << "central directory ends where the end record starts";
  }
  size_t at = size_t(dir_offset);
  for (uint64_t i = 0; i < count; ++i) {
    if (at + 46 > bytes.size()) {
      ADD_FAILURE() << "central directory runs past the file";
      return z;
    }
    EXPECT_EQ(zip_le(bytes, at, 4), 0x02014b50u) << "central header signature, entry " << i;
    EXPECT_EQ(zip_le(bytes, at + 10, 2), 0u) << "method: stored";
    ZipEntry e;
    e.crc = uint32_t(zip_le(bytes, at + 16, 4));
    const uint64_t comp = zip_le(bytes, at + 20, 4), uncomp = zip_le(bytes, at + 24, 4);
    const size_t name_len = zip_le(bytes, at + 28, 2), extra_len = zip_le(bytes, at + 30, 2);
    const size_t comment_len = zip_le(bytes, at + 32, 2);
    e.header_offset = zip_le(bytes, at + 42, 4);
    e.name = bytes.substr(at + 46, name_len);
    EXPECT_EQ(comp, uncomp) << e.name;
    e.size = uncomp;
    e.zip64_sizes = uncomp == 0xFFFFFFFFu;
    e.zip64_offset = e.header_offset == 0xFFFFFFFFu;
    if (e.zip64_sizes || e.zip64_offset) {  // the zip64 extra field: the flagged values, in order
      const size_t x = at + 46 + name_len;
      EXPECT_EQ(zip_le(bytes, x, 2), 1u) << e.name << ": zip64 extra field id";
      EXPECT_EQ(zip_le(bytes, x + 2, 2), (e.zip64_sizes ? 16u : 0u) + (e.zip64_offset ? 8u : 0u)) << e.name;
      size_t v = x + 4;
      if (e.zip64_sizes) {
        e.size = zip_le(bytes, v, 8);
        EXPECT_EQ(zip_le(bytes, v + 8, 8), e.size) << e.name << ": compressed = uncompressed size";
        v += 16;
      }
      if (e.zip64_offset) e.header_offset = zip_le(bytes, v, 8);
    }
    at += 46 + name_len + extra_len + comment_len;

    // The local header agrees with the central one.
    const size_t h = size_t(e.header_offset);
    if (h + 30 > bytes.size()) {
      ADD_FAILURE() << e.name << ": local header past the end";
      return z;
    }
    EXPECT_EQ(zip_le(bytes, h, 4), 0x04034b50u) << e.name << ": local header signature";
    EXPECT_EQ(zip_le(bytes, h + 8, 2), 0u) << e.name << ": local method";
    EXPECT_EQ(zip_le(bytes, h + 14, 4), e.crc) << e.name << ": local CRC";
    EXPECT_EQ(bytes.substr(h + 30, zip_le(bytes, h + 26, 2)), e.name) << "local name";
    e.data_offset = h + 30 + zip_le(bytes, h + 26, 2) + zip_le(bytes, h + 28, 2);
    if (e.data_offset + e.size > bytes.size()) {
      ADD_FAILURE() << e.name << ": data past the end";
      return z;
    }
    e.data = bytes.substr(size_t(e.data_offset), size_t(e.size));
    EXPECT_EQ(crc32_update(0, e.data.data(), e.data.size()), e.crc) << e.name << ": CRC of the data";
    z.entries.push_back(std::move(e));
  }
  EXPECT_EQ(at, dir_offset + dir_size) << "central directory size";
  return z;
}

inline ZipArchive read_zip_file(const std::string& path) { return parse_zip(read_text_file(path)); }

}  // namespace ll::test
