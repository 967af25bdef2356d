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

using Json = nlohmann::ordered_json;  // the writer's header keeps the given tensor order
using HeaderValue = nlohmann::json;   // one top-level value of a header being read (a few keys: std::map is fine)

constexpr uint64_t kMaxHeaderBytes = 100000000;  // the reference reader's MAX_HEADER_SIZE
constexpr int kMaxJsonDepth = 16;                // header object → tensor object → shape array is 3 levels
constexpr size_t kMaxWriteDims = 8;
constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kSupportedDtypes = "F32, F64, BF16, F16, I32, U8";

std::string errno_text() { return std::strerror(errno); }

bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kTable[] = {
      {"F32", DType::F32}, {"F64", DType::F64}, {"BF16", DType::BF16}, {"F16", DType::F16}, {"I32", DType::I32},
      {"U8", DType::U8}};
  for (const auto& [name, t] : kTable) {
    if (s == name) {
      *out = t;
      return true;
    }
  }
  return false;
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

std::map<std::string, std::string> parse_metadata(const std::string& path, const HeaderValue& j) {
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

bool is_nonnegative_integer(const HeaderValue& v) { return v.is_number_unsigned(); }

std::vector<int64_t> parse_shape(const std::string& path, const std::string& name, const HeaderValue& j) {
  if (!j.is_array()) fail(path, ": tensor '", name, "': \"shape\" must be an array of non-negative integers");
  std::vector<int64_t> shape;
  for (const HeaderValue& d : j) {
    if (!is_nonnegative_integer(d) || d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(path, ": tensor '", name, "': \"shape\" must hold non-negative integers, got ", d.dump());
    }
    shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }
  return shape;
}

std::pair<uint64_t, uint64_t> parse_offsets(const std::string& path, const std::string& name, const HeaderValue& j) {
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

ParsedEntry parse_entry(const std::string& path, const std::string& name, const HeaderValue& j,
                        const unsigned char* data, uint64_t data_size) {
  if (!j.is_object() || j.size() != 3 || !j.contains("dtype") || !j.contains("shape") || !j.contains("data_offsets")) {
    fail(path, ": tensor '", name, "' must be an object with exactly \"dtype\", \"shape\" and \"data_offsets\", got ",
         j.dump());
  }
  DType dtype{};
  const HeaderValue& jd = j.at("dtype");
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

// Where one tensor's bytes lie; `name` points at the key of SafetensorsFile::entries_ (stable).
struct Span {
  uint64_t begin, end;
  const std::string* name;
};

// The union of byte ranges must tile [0, data_size) exactly: no overlap, no gap, no trailing bytes.
void check_layout(const std::string& path, const std::vector<Span>& sorted, uint64_t data_size) {
  uint64_t cursor = 0;
  const Span* prev = nullptr;
  for (const Span& s : sorted) {
    const std::string& name = *s.name;
    if (s.begin < cursor) {
      fail(path, ": tensor '", name, "' [", s.begin, ",", s.end, ") overlaps tensor '", *prev->name, "' [", prev->begin,
           ",", prev->end, ")");
    }
    if (s.begin > cursor) {
      fail(path, ": gap of ", s.begin - cursor, " bytes in the data section before tensor '", name, "' (expected it at offset ",
           cursor, ", found ", s.begin, ")", prev ? " after tensor '" + *prev->name + "'" : std::string());
    }
    cursor = s.end;
    prev = &s;
  }
  if (cursor != data_size) {
    fail(path, ": data section has ", data_size - cursor, " trailing bytes after the last tensor",
         prev ? " '" + *prev->name + "'" : std::string(), " (tensors end at ", cursor, ", data section is ", data_size,
         " bytes)");
  }
}

// The header, read in one streaming pass (nlohmann's SAX interface): each top-level value — one small tensor object,
// or "__metadata__" — is built as a JSON value of its own and checked the moment it closes, so a header of n entries
// costs O(n log n). (Parsing it into one ordered JSON object looked every key up linearly: 1.3M entries took hours.)
// Tensors come out in header order, which keeps ties in data offset stable. Also checked while parsing, since
// nlohmann would silently keep one of two equal keys: duplicate keys inside an entry and a second "__metadata__"
// (duplicate tensor names are caught when they are indexed); and the nesting depth, since copying and dumping a
// value recurse once per level (a hostile header of ~100k nested brackets used to overflow the stack).
class HeaderParser : public nlohmann::json_sax<HeaderValue> {
 public:
  using Value = HeaderValue;

  HeaderParser(const std::string& path, const unsigned char* data, uint64_t data_size)
      : path_(path), data_(data), data_size_(data_size) {}

  void parse(const char* text, size_t size) {
    if (!HeaderValue::sax_parse(text, text + size, this)) {
      fail(path_, ": safetensors header is not valid JSON (", syntax_error_, ")");
    }
  }
  std::vector<ParsedEntry>& entries() { return entries_; }
  std::map<std::string, std::string>& metadata() { return metadata_; }

  bool null() override { return add(Value()); }
  bool boolean(bool v) override { return add(Value(v)); }
  bool number_integer(number_integer_t v) override { return add(Value(v)); }
  bool number_unsigned(number_unsigned_t v) override { return add(Value(v)); }
  bool number_float(number_float_t v, const string_t&) override { return add(Value(v)); }
  bool string(string_t& v) override { return add(Value(std::move(v))); }
  bool binary(binary_t&) override { return true; }  // JSON text has no binary values
  bool start_object(std::size_t) override { return open(Value::object()); }
  bool start_array(std::size_t) override {
    if (depth_ == 0) fail(path_, ": safetensors header must be a JSON object, got a JSON array");
    return open(Value::array());
  }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    if (depth_ == 1) {  // tensor names are checked for duplicates by the caller
      if (k == kMetadataKey && seen_metadata_) fail(path_, ": safetensors header has the key '", k, "' more than once");
      seen_metadata_ = seen_metadata_ || k == kMetadataKey;
      top_key_ = k;
    } else {
      if (open_.back()->contains(k)) {
        fail(path_, ": safetensors header has the key '", k, "' inside '", top_key_, "' more than once");
      }
      pending_key_ = k;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    syntax_error_ = e.what();
    return false;
  }

 private:
  // Places `v` in the open container (or as the top-level entry's value) and returns where it now lives.
  Value* place(Value&& v) {
    if (open_.empty()) {
      value_ = std::move(v);
      return &value_;
    }
    Value& parent = *open_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();  // stays valid: nothing is appended to `parent` while this child is open
    }
    Value& slot = parent[pending_key_];
    slot = std::move(v);
    return &slot;
  }
  bool add(Value&& v) {
    place(std::move(v));
    if (open_.empty()) finish_entry();  // a top-level value that is not an object (rejected by parse_entry)
    return true;
  }
  bool open(Value&& container) {
    if (depth_ >= kMaxJsonDepth) {  // depth 0 = the header object itself
      fail(path_, ": safetensors header nests JSON objects/arrays more than ", kMaxJsonDepth,
           " levels deep (a valid header needs 3)", top_key_.empty() ? std::string() : " in '" + top_key_ + "'");
    }
    if (depth_++ > 0) open_.push_back(place(std::move(container)));
    return true;
  }
  bool close() {
    if (--depth_ == 0) return true;  // the header object
    open_.pop_back();
    if (open_.empty()) finish_entry();
    return true;
  }
  void finish_entry() {
    if (top_key_ == kMetadataKey) {
      metadata_ = parse_metadata(path_, value_);
    } else {
      entries_.push_back(parse_entry(path_, top_key_, value_, data_, data_size_));
    }
    value_ = Value();
  }

  const std::string& path_;
  const unsigned char* data_;
  uint64_t data_size_;
  int depth_ = 0;                   // open objects/arrays, the header object included
  std::vector<Value*> open_;        // the open containers inside the current entry, innermost last
  Value value_;                     // the current top-level entry's value
  std::string top_key_, pending_key_;
  bool seen_metadata_ = false;
  std::string syntax_error_;
  std::vector<ParsedEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

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
    case DType::U8: return "U8";
    default: break;  // 4-bit formats are stored as their U8 parts (io/bnb_weights.h)
  }
  return "?";
}

// -------------------------------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = open_regular_file(path);  // a FIFO named model.safetensors would block a plain open()
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(path, ": cannot stat the safetensors file: ", errno_text());
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
    const unsigned char* data = bytes + 8 + header_size;
    const uint64_t data_size = file_size - 8 - header_size;
    HeaderParser parser(path, data, data_size);
    parser.parse(text, header_size);
    metadata_ = std::move(parser.metadata());
    // Tensor names are checked for duplicates here, while filling the name index, rather than while parsing:
    // a hash set of every key took a third of the time of a 1.3M-entry header.
    std::vector<Span> spans;
    spans.reserve(parser.entries().size());
    for (ParsedEntry& p : parser.entries()) {
      auto at = entries_.lower_bound(p.entry.name);
      if (at != entries_.end() && at->first == p.entry.name) {
        fail(path, ": safetensors header has the key '", p.entry.name, "' more than once");
      }
      std::string name = p.entry.name;
      at = entries_.emplace_hint(at, std::move(name), std::move(p.entry));
      spans.push_back({p.begin, p.end, &at->first});
    }
    std::stable_sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
      return std::make_pair(a.begin, a.end) < std::make_pair(b.begin, b.end);
    });
    check_layout(path, spans, data_size);
    order_.reserve(spans.size());
    for (const Span& sp : spans) order_.push_back(*sp.name);
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
