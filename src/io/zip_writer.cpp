#include "io/zip_writer.h"

#include "util/crc32.h"
#include "util/error.h"

namespace ll {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50, kCentralHeaderSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kPaddingExtraId = 'F' | ('B' << 8);  // the id PyTorch's writer uses for its alignment padding
constexpr uint16_t kVersionClassic = 20, kVersionZip64 = 45;  // "version needed to extract": 2.0, 4.5 (zip64)
constexpr uint16_t kDosDate19800101 = (0 << 9) | (1 << 5) | 1;  // the earliest date a zip header can hold
constexpr uint32_t kMax32 = 0xFFFFFFFFu;
constexpr uint16_t kMax16 = 0xFFFFu;
constexpr size_t kLocalHeaderSize = 30, kExtraHeaderSize = 4;

// Little-endian field appender.
struct Bytes {
  std::string s;
  Bytes& u16(uint64_t v) { return put(v, 2); }
  Bytes& u32(uint64_t v) { return put(v, 4); }
  Bytes& u64(uint64_t v) { return put(v, 8); }
  Bytes& raw(const std::string& b) { s += b; return *this; }
  Bytes& put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
    return *this;
  }
};

}  // namespace

ZipWriter::ZipWriter(AtomicFileWriter& out, ZipWriterOptions options) : out_(out), options_(options) {
  const uint32_t a = options_.alignment;
  LL_ASSERT(a >= 1 && a <= 4096 && (a & (a - 1)) == 0, "zip writer: alignment must be a power of two in [1, 4096], got ",
           a);
}

void ZipWriter::add(const std::string& name, const void* data, uint64_t size) {
  LL_ASSERT(!finished_, "zip writer: entry `", name, "` added after finish()");
  LL_CHECK(!name.empty() && name.size() <= kMax16 && name[0] != '/' && name.find("..") == std::string::npos,
           "zip writer: invalid entry name `", name, "` (expected 1 to 65535 bytes, relative, without \"..\")");
  LL_ASSERT(names_.insert(name).second, "zip writer: entry `", name, "` written twice");
  LL_ASSERT(size == 0 || data != nullptr, "zip writer: entry `", name, "` has ", size, " bytes but no data");

  Entry e;
  e.name = name;
  e.size = size;
  e.header_offset = out_.bytes_written();
  e.crc = crc32_update(0, data, size);
  const bool zip64_sizes = options_.force_zip64 || size >= kMax32;

  Bytes extra;
  if (zip64_sizes) extra.u16(kZip64ExtraId).u16(16).u64(size).u64(size);  // uncompressed, compressed
  // Padding so the data starts aligned: the padding field's own 4-byte header always goes in.
  const uint64_t unpadded = e.header_offset + kLocalHeaderSize + name.size() + extra.s.size() + kExtraHeaderSize;
  const uint64_t pad = (options_.alignment - unpadded % options_.alignment) % options_.alignment;
  extra.u16(kPaddingExtraId).u16(pad).raw(std::string(pad, '\0'));

  Bytes h;
  h.u32(kLocalHeaderSig).u16(zip64_sizes ? kVersionZip64 : kVersionClassic).u16(0).u16(0)  // flags, method: stored
      .u16(0).u16(kDosDate19800101).u32(e.crc)
      .u32(zip64_sizes ? kMax32 : size).u32(zip64_sizes ? kMax32 : size)
      .u16(name.size()).u16(extra.s.size()).raw(name).raw(extra.s);
  out_.write(h.s.data(), h.s.size());
  out_.write(data, size);
  entries_.push_back(std::move(e));
}

void ZipWriter::finish() {
  LL_ASSERT(!finished_, "zip writer: finish() called twice");
  finished_ = true;
  const uint64_t directory_offset = out_.bytes_written();
  bool zip64_archive = options_.force_zip64 || entries_.size() >= kMax16;
  Bytes dir;
  for (const Entry& e : entries_) {
    const bool big_size = options_.force_zip64 || e.size >= kMax32;
    const bool big_offset = options_.force_zip64 || e.header_offset >= kMax32;
    Bytes extra;
    if (big_size || big_offset) {  // only the fields whose classic slot reads 0xFFFFFFFF, in this order
      extra.u16(kZip64ExtraId).u16((big_size ? 16 : 0) + (big_offset ? 8 : 0));
      if (big_size) extra.u64(e.size).u64(e.size);
      if (big_offset) extra.u64(e.header_offset);
    }
    const uint16_t version = big_size || big_offset ? kVersionZip64 : kVersionClassic;
    dir.u32(kCentralHeaderSig).u16(version).u16(version).u16(0).u16(0)  // made by, needed, flags, method: stored
        .u16(0).u16(kDosDate19800101).u32(e.crc)
        .u32(big_size ? kMax32 : e.size).u32(big_size ? kMax32 : e.size)
        .u16(e.name.size()).u16(extra.s.size()).u16(0)  // comment length
        .u16(0).u16(0).u32(0)                           // disk number, internal and external attributes
        .u32(big_offset ? kMax32 : e.header_offset).raw(e.name).raw(extra.s);
    zip64_archive = zip64_archive || big_size || big_offset;
  }
  const uint64_t directory_size = dir.s.size();
  zip64_archive = zip64_archive || directory_offset >= kMax32 || directory_offset + directory_size >= kMax32;

  Bytes end;
  if (zip64_archive) {
    const uint64_t record_offset = directory_offset + directory_size;
    end.u32(kZip64EndSig).u64(44).u16(kVersionZip64).u16(kVersionZip64)  // size of the rest of the record
        .u32(0).u32(0).u64(entries_.size()).u64(entries_.size())       // disks; entries on this disk, in all
        .u64(directory_size).u64(directory_offset);
    end.u32(kZip64LocatorSig).u32(0).u64(record_offset).u32(1);  // disk of the record, its offset, disks in all
  }
  const uint64_t n = entries_.size();
  end.u32(kEndSig).u16(0).u16(0)
      .u16(zip64_archive ? kMax16 : n).u16(zip64_archive ? kMax16 : n)
      .u32(zip64_archive ? kMax32 : directory_size).u32(zip64_archive ? kMax32 : directory_offset)
      .u16(0);  // comment length
  out_.write(dir.s.data(), dir.s.size());
  out_.write(end.s.data(), end.s.size());
}

}  // namespace ll
