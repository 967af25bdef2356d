#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "util/files.h"

namespace ll {
namespace {

using Json = nlohmann::ordered_json;  // ordered: keeps header order so ties in data offset stay stable

constexpr uint64_t kMaxHeaderBytes = 100000000;  // the reference reader's MAX_HEADER_SIZE
constexpr int kMaxJsonDepth = 16;                // header object → tensor object → shape array is 3 levels
constexpr size_t kMaxWriteDims = 8;
constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kSupportedDtypes = "F32, F64, BF16, F16, I32";

std::string errno_text() { return std::strerror(errno); }

bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kTable[] = {
      {"F32", DType::F32}, {"F64", DType::F64}, {"BF16", DType::BF16}, {"F16", DType::F16}, {"I32", DType::I32}};
  for (const auto& [name, t] : kTable) {
    if (s == name) {
      *out = t;
      return true;
    }
  }
  return false;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// Byte size of a tensor, or false on overflow (the header is untrusted input).
bool checked_nbytes(const std::vector<int64_t>& shape, DType t, uint64_t* out) {
  uint64_t n = dtype_size(t);
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  *out = n;
  return true;
}

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void write_u64_le(uint64_t v, unsigned char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

// ---------------------------------------------------------------------------------------------------------------
// Header parsing

// nlohmann silently keeps one of two equal keys, so duplicates are caught while parsing.
// Nesting is bounded while parsing too: nlohmann's parser is iterative, but copying and dumping a value recurse once
// per level, so a hostile header of ~100k nested brackets used to overflow the stack (SIGSEGV).
Json parse_header_json(const std::string& path, const char* text, size_t size) {
  std::vector<std::set<std::string>> keys_per_object;
  std::string top_key;    // the tensor (or "__metadata__") being parsed, to name it in the error
  std::string duplicate;  // first duplicate found, with where it was
  auto cb = [&](int depth, Json::parse_event_t event, Json& parsed) {
    const bool opens = event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start;
    if (opens && depth >= kMaxJsonDepth) {  // depth 0 = the header object itself
      fail(path, ": safetensors header nests JSON objects/arrays more than ", kMaxJsonDepth,
           " levels deep (a valid header needs 3)", top_key.empty() ? std::string() : " in '" + top_key + "'");
    }
    if (event == Json::parse_event_t::object_start) keys_per_object.emplace_back();
    if (event == Json::parse_event_t::object_end) keys_per_object.pop_back();
    if (event == Json::parse_event_t::key) {
      const std::string key = parsed.get<std::string>();
      if (keys_per_object.size() == 1) top_key = key;
      if (!keys_per_object.back().insert(key).second && duplicate.empty()) {
        duplicate = keys_per_object.size() == 1 ? str_cat("'", key, "'") : str_cat("'", key, "' inside '", top_key, "'");
      }
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(text, text + size, cb);
  } catch (const Json::exception& e) {
    fail(path, ": safetensors header is not valid JSON (", e.what(), ")");
  }
  if (!duplicate.empty()) fail(path, ": safetensors header has the key ", duplicate, " more than once");
  if (!header.is_object()) fail(path, ": safetensors header must be a JSON object, got a JSON ", header.type_name());
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const Json& j) {
  std::map<std::string, std::string> out;
  if (j.is_null()) return out;
  if (!j.is_object()) fail(path, ": \"", kMetadataKey, "\" must be an object of string values, got a JSON ", j.type_name());
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      fail(path, ": \"", kMetadataKey, "\" value for '", key, "' must be a string, got a JSON ", value.type_name());
    }
    out[key] = value.get<std::string>();
  }
  return out;
}

bool is_nonnegative_integer(const Json& v) { return v.is_number_unsigned(); }

std::vector<int64_t> parse_shape(const std::string& path, const std::string& name, const Json& j) {
  if (!j.is_array()) fail(path, ": tensor '", name, "': \"shape\" must be an array of non-negative integers");
  std::vector<int64_t> shape;
  for (const Json& d : j) {
    if (!is_nonnegative_integer(d) || d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(path, ": tensor '", name, "': \"shape\" must hold non-negative integers, got ", d.dump());
    }
    shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }
  return shape;
}

std::pair<uint64_t, uint64_t> parse_offsets(const std::string& path, const std::string& name, const Json& j) {
  if (!j.is_array() || j.size() != 2 || !is_nonnegative_integer(j[0]) || !is_nonnegative_integer(j[1])) {
    fail(path, ": tensor '", name, "': \"data_offsets\" must be [begin, end] with non-negative integers, got ", j.dump());
  }
  uint64_t begin = j[0].get<uint64_t>(), end = j[1].get<uint64_t>();
  if (begin > end) fail(path, ": tensor '", name, "': \"data_offsets\" begin ", begin, " is after end ", end);
  return {begin, end};
}

struct ParsedEntry {
  SafetensorsEntry entry;
  uint64_t begin, end;
};

ParsedEntry parse_entry(const std::string& path, const std::string& name, const Json& j, const unsigned char* data,
                        uint64_t data_size) {
  if (!j.is_object() || j.size() != 3 || !j.contains("dtype") || !j.contains("shape") || !j.contains("data_offsets")) {
    fail(path, ": tensor '", name, "' must be an object with exactly \"dtype\", \"shape\" and \"data_offsets\", got ",
         j.dump());
  }
  DType dtype{};
  const Json& jd = j.at("dtype");
  if (!jd.is_string() || !parse_dtype(jd.get<std::string>(), &dtype)) {
    fail(path, ": tensor '", name, "' has unsupported dtype ", jd.dump(), " (supported: ", kSupportedDtypes, ")");
  }
  std::vector<int64_t> shape = parse_shape(path, name, j.at("shape"));
  auto [begin, end] = parse_offsets(path, name, j.at("data_offsets"));
  if (end > data_size) {
    fail(path, ": tensor '", name, "': data_offsets end ", end, " is beyond the data section (", data_size, " bytes)");
  }
  uint64_t expected = 0;
  if (!checked_nbytes(shape, dtype, &expected)) {
    fail(path, ": tensor '", name, "': shape ", shape_text(shape), " is too large (byte size overflows)");
  }
  if (expected != end - begin) {
    fail(path, ": tensor '", name, "': shape ", shape_text(shape), " of ", safetensors_dtype_name(dtype), " needs ",
         expected, " bytes but data_offsets [", begin, ",", end, ") span ", end - begin, " bytes");
  }
  SafetensorsEntry e{name, dtype, std::move(shape), data + begin, static_cast<size_t>(expected)};
  return {std::move(e), begin, end};
}

// The union of byte ranges must tile [0, data_size) exactly: no overlap, no gap, no trailing bytes.
void check_layout(const std::string& path, const std::vector<ParsedEntry*>& sorted, uint64_t data_size) {
  uint64_t cursor = 0;
  const ParsedEntry* prev = nullptr;
  for (const ParsedEntry* p : sorted) {
    const std::string& name = p->entry.name;
    if (p->begin < cursor) {
      fail(path, ": tensor '", name, "' [", p->begin, ",", p->end, ") overlaps tensor '", prev->entry.name, "' [",
           prev->begin, ",", prev->end, ")");
    }
    if (p->begin > cursor) {
      fail(path, ": gap of ", p->begin - cursor, " bytes in the data section before tensor '", name, "' (expected it at offset ",
           cursor, ", found ", p->begin, ")", prev ? " after tensor '" + prev->entry.name + "'" : std::string());
    }
    cursor = p->end;
    prev = p;
  }
  if (cursor != data_size) {
    fail(path, ": data section has ", data_size - cursor, " trailing bytes after the last tensor",
         prev ? " '" + prev->entry.name + "'" : std::string(), " (tensors end at ", cursor, ", data section is ", data_size,
         " bytes)");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Writing helpers

// Checks one item and returns its byte size.
uint64_t validate_item(const std::string& path, const SafetensorsWriteItem& it) {
  if (it.name.empty()) fail(path, ": cannot write a tensor with an empty name");
  if (it.name == kMetadataKey) fail(path, ": '", kMetadataKey, "' is reserved and cannot be a tensor name");
  if (it.shape.size() > kMaxWriteDims) {
    fail(path, ": tensor '", it.name, "' has ", it.shape.size(), " dims, at most ", kMaxWriteDims, " are supported");
  }
  uint64_t nbytes = 0;
  if (!checked_nbytes(it.shape, it.dtype, &nbytes)) {
    fail(path, ": tensor '", it.name, "' has an invalid shape ", shape_text(it.shape),
         " (expected non-negative dims whose byte size fits in 64 bits)");
  }
  if (nbytes > 0 && it.data == nullptr) {
    fail(path, ": tensor '", it.name, "' has shape ", shape_text(it.shape), " but its data pointer is null");
  }
  return nbytes;
}

Json build_metadata(const std::string& path, const std::map<std::string, std::string>& metadata) {
  Json meta = Json::object();
  meta["format"] = "pt";  // transformers and PEFT loaders expect it
  for (const auto& [key, value] : metadata) {
    if (key == "format" && value != "pt") {
      fail(path, ": metadata \"format\" must be \"pt\" (these are PyTorch-layout tensors), got \"", value, "\"");
    }
    meta[key] = value;
  }
  return meta;
}

// Serialised header, space-padded so that 8 + its length is a multiple of 8.
std::string build_header(const std::string& path, const std::vector<SafetensorsWriteItem>& items,
                         const std::vector<uint64_t>& sizes, const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  header[kMetadataKey] = build_metadata(path, metadata);
  uint64_t offset = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    header[items[i].name] = {{"dtype", safetensors_dtype_name(items[i].dtype)},
                             {"shape", items[i].shape},
                             {"data_offsets", {offset, offset + sizes[i]}}};
    offset += sizes[i];
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {  // e.g. a name or metadata value that is not valid UTF-8
    fail(path, ": cannot serialise the safetensors header: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

}  // namespace

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
  }
  return "?";
}

// -------------------------------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open safetensors file: ", errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail(path, ": file is ", file_size, " bytes, shorter than the 8-byte safetensors header length");
  }
  map_ = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(path, ": mmap failed: ", errno_text());
  }
  map_size_ = file_size;
  try {
    const auto* bytes = static_cast<const unsigned char*>(map_);
    const uint64_t header_size = read_u64_le(bytes);
    if (header_size > kMaxHeaderBytes) {
      fail(path, ": header length ", header_size, " is absurdly large (limit ", kMaxHeaderBytes, " bytes)");
    }
    if (header_size > file_size - 8) {
      fail(path, ": header length ", header_size, " is larger than the file allows (", file_size - 8,
           " bytes after the length prefix)");
    }
    const char* text = reinterpret_cast<const char*>(bytes + 8);
    if (header_size == 0 || text[0] != '{') fail(path, ": safetensors header must be a JSON object starting with '{'");
    Json header = parse_header_json(path, text, header_size);

    const unsigned char* data = bytes + 8 + header_size;
    const uint64_t data_size = file_size - 8 - header_size;
    std::vector<ParsedEntry> parsed;
    for (const auto& [name, value] : header.items()) {
      if (name == kMetadataKey) {
        metadata_ = parse_metadata(path, value);
      } else {
        parsed.push_back(parse_entry(path, name, value, data, data_size));
      }
    }
    std::vector<ParsedEntry*> sorted;
    for (ParsedEntry& p : parsed) sorted.push_back(&p);
    std::stable_sort(sorted.begin(), sorted.end(), [](const ParsedEntry* a, const ParsedEntry* b) {
      return std::make_pair(a->begin, a->end) < std::make_pair(b->begin, b->end);
    });
    check_layout(path, sorted, data_size);
    for (ParsedEntry* p : sorted) {
      order_.push_back(p->entry.name);
      entries_.emplace(p->entry.name, std::move(p->entry));
    }
  } catch (...) {
    unmap();
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() { unmap(); }

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_size_(std::exchange(other.map_size_, 0)),
      metadata_(std::move(other.metadata_)),
      entries_(std::move(other.entries_)),
      order_(std::move(other.order_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    metadata_ = std::move(other.metadata_);
    entries_ = std::move(other.entries_);
    order_ = std::move(other.order_);
  }
  return *this;
}

void SafetensorsFile::unmap() noexcept {
  if (map_ != nullptr) ::munmap(map_, map_size_);
  map_ = nullptr;
  map_size_ = 0;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail(path_, ": no tensor named '", name, "' (the file has ", entries_.size(), " tensors)");
  return it->second;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  if (e.shape.size() > static_cast<size_t>(Tensor::kMaxDims)) {
    fail(path_, ": tensor '", name, "' has ", e.shape.size(), " dims ", shape_text(e.shape), ", a Tensor holds at most ",
         Tensor::kMaxDims);
  }
  Tensor t;
  t.data = const_cast<void*>(e.data);  // Tensor has no const flavour; the mapping is PROT_READ, so writes fault
  t.dtype = e.dtype;
  t.device = Device::CPU;
  if (e.shape.empty()) {
    t.ndim = 1;
    t.shape[0] = 1;
  } else {
    for (int64_t d : e.shape) t.shape[t.ndim++] = d;
  }
  return t;
}

// -------------------------------------------------------------------------------------------------------------------
// Writer

void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteItem>& items,
                       const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  std::vector<uint64_t> sizes;
  for (const SafetensorsWriteItem& it : items) {
    if (!seen.insert(it.name).second) fail(path, ": tensor '", it.name, "' is given more than once");
    sizes.push_back(validate_item(path, it));
  }
  const std::string header = build_header(path, items, sizes, metadata);

  AtomicFileWriter out(path);
  unsigned char prefix[8];
  write_u64_le(header.size(), prefix);
  out.write(prefix, sizeof prefix);
  out.write(header.data(), header.size());
  for (size_t i = 0; i < items.size(); ++i) out.write(items[i].data, sizes[i]);
  out.commit();
}

}  // namespace ll
