// safetensors reader (mmap, zero-copy, strictly validated) and atomic writer.
// Format: u64 little-endian header length N, N bytes of JSON header, then the data section.
// See shared/reference/formats.md §A2 for the rules this file enforces.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace ll {

// One tensor of a mapped file. `data` points into the mapping and may be unaligned.
struct SafetensorsEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // empty for a 0-dim (scalar) tensor
  const void* data;
  size_t nbytes;
};

// A read-only, memory-mapped safetensors file. Every entry is validated on open; views stay valid
// as long as this object (or the one it was moved into) lives.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // maps + validates; throws ll::Error
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;

  const std::string& path() const { return path_; }
  // "__metadata__" (string → string); empty if absent.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensor names in data-offset order (ties keep header order).
  std::vector<std::string> names() const { return order_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // Throws naming the file and the missing tensor.
  const SafetensorsEntry& entry(const std::string& name) const;
  // CPU view over the mapping. A 0-dim entry becomes shape [1]; more than Tensor::kMaxDims dims is an error.
  Tensor tensor(const std::string& name) const;

 private:
  void unmap() noexcept;

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, SafetensorsEntry> entries_;
  std::vector<std::string> order_;
};

struct SafetensorsWriteItem {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // empty for a scalar; at most 8 dims
  const void* data;            // CPU memory, row-major; may be null only when the tensor has no elements
};

// Writes atomically: to "<path>.tmp.<pid>", then fsync + rename (the temp file is removed on any failure).
// The header JSON is padded with spaces to a multiple of 8 bytes so the data section starts 8-aligned.
// "__metadata__" always holds {"format":"pt"} plus the given entries (a given "format" must be "pt").
// Tensors are laid out in the given order.
void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteItem>& items,
                       const std::map<std::string, std::string>& metadata = {});

// "F32", "BF16", ... as spelled in safetensors headers.
const char* safetensors_dtype_name(DType t);

}  // namespace ll
