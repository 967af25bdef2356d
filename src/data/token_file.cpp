#include "data/token_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "token files are little-endian; this code assumes a little-endian host");

namespace ll {

namespace {

std::string errno_text() { return std::strerror(errno); }

size_t token_width(TokenFormat f) { return f == TokenFormat::Llmc32 ? 4 : 2; }
size_t header_bytes(TokenFormat f) { return f == TokenFormat::Raw16 ? 0 : kLlmcHeaderBytes; }

int32_t load_i32(const unsigned char* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void write_all(int fd, const void* data, size_t n, off_t offset, const std::string& path) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (n > 0) {
    const ssize_t w = offset >= 0 ? ::pwrite(fd, p, n, offset) : ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("writing `", path, "` failed: ", errno_text());
    p += w, n -= size_t(w);
    if (offset >= 0) offset += w;
  }
}

}  // namespace

const char* token_format_name(TokenFormat format) {
  switch (format) {
    case TokenFormat::Raw16:
      return "raw_uint16";
    case TokenFormat::Llmc16:
      return "llmc_uint16";
    case TokenFormat::Llmc32:
      return "llmc_uint32";
  }
  return "?";
}

TokenFormat parse_token_format(const std::string& name, int64_t vocab_size) {
  if (name == "raw" || name == "raw_uint16") return TokenFormat::Raw16;
  if (name == "llmc_uint16") return TokenFormat::Llmc16;
  if (name == "llmc_uint32") return TokenFormat::Llmc32;
  if (name == "llmc") return vocab_size <= 65536 ? TokenFormat::Llmc16 : TokenFormat::Llmc32;
  if (name == "auto") return vocab_size <= 65536 ? TokenFormat::Raw16 : TokenFormat::Llmc32;
  fail("unknown token file format `", name, "`; expected auto, raw, llmc, raw_uint16, llmc_uint16 or llmc_uint32");
}

// ---------------------------------------------------------------------------------------------- writer

TokenFileWriter::TokenFileWriter(std::string path, TokenFormat format)
    : path_(std::move(path)), tmp_(path_ + ".tmp." + std::to_string(::getpid())), format_(format) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LL_CHECK(fd_ >= 0, "cannot create `", tmp_, "` (for token file `", path_, "`): ", errno_text());
  buffer_.reserve(1 << 20);
  buffer_.resize(header_bytes(format_), 0);  // placeholder; finish() writes the real header
}

TokenFileWriter::~TokenFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) ::unlink(tmp_.c_str());
}

void TokenFileWriter::append(const int32_t* ids, size_t count) {
  LL_CHECK(!finished_, "token file `", path_, "`: append after finish");
  const int64_t limit = format_ == TokenFormat::Llmc32 ? std::numeric_limits<int32_t>::max() : 65535;
  for (size_t i = 0; i < count; ++i)  // validate first, so a failed append writes nothing
    if (ids[i] < 0 || ids[i] > limit)
      fail("token file `", path_, "` (", token_format_name(format_), "): token id ", ids[i], " at position ",
           count_ + int64_t(i), " does not fit",
           ids[i] < 0 ? "" : "; ids over 65535 need llmc_uint32 (--format llmc picks it for vocabularies over 65536)");
  const size_t width = token_width(format_);
  for (size_t i = 0; i < count; ++i) {
    const uint32_t v = uint32_t(ids[i]);
    const unsigned char bytes[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                                    static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
    buffer_.insert(buffer_.end(), bytes, bytes + width);
    if (buffer_.size() >= (1 << 20)) flush();
  }
  count_ += int64_t(count);
}

void TokenFileWriter::flush() {
  write_all(fd_, buffer_.data(), buffer_.size(), -1, tmp_);
  buffer_.clear();
}

void TokenFileWriter::finish() {
  LL_CHECK(!finished_, "token file `", path_, "`: finish called twice");
  flush();
  if (format_ != TokenFormat::Raw16) {
    LL_CHECK(count_ <= std::numeric_limits<int32_t>::max(), "token file `", path_, "`: ", count_,
             " tokens do not fit llm.c's int32 token count; split the corpus into shards");
    int32_t header[256] = {};
    header[0] = format_ == TokenFormat::Llmc16 ? kLlmcMagic16 : kLlmcMagic32;
    header[1] = format_ == TokenFormat::Llmc16 ? kLlmcVersion16 : kLlmcVersion32;
    header[2] = int32_t(count_);
    write_all(fd_, header, sizeof(header), 0, tmp_);
  }
  LL_CHECK(::fsync(fd_) == 0, "fsync of `", tmp_, "` failed: ", errno_text());
  const int rc = ::close(fd_);
  fd_ = -1;
  LL_CHECK(rc == 0, "closing `", tmp_, "` failed: ", errno_text());
  LL_CHECK(std::rename(tmp_.c_str(), path_.c_str()) == 0, "renaming `", tmp_, "` to `", path_,
           "` failed: ", errno_text());
  finished_ = true;
}

// ---------------------------------------------------------------------------------------------- reader

namespace {

// Reads exactly `n` bytes at `offset`; false when the file ends first.
bool pread_all(int fd, void* out, size_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<unsigned char*>(out);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, off_t(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail("token file `", path, "`: read failed: ", errno_text());
    if (r == 0) return false;
    p += r, n -= size_t(r), offset += uint64_t(r);
  }
  return true;
}

constexpr int64_t kValidateChunkTokens = int64_t(1) << 20;  // tokens checked per read while opening

}  // namespace

TokenFile::TokenFile(const std::string& path, int64_t vocab_size) : path_(path), vocab_size_(vocab_size) {
  LL_CHECK(vocab_size > 0, "token file `", path, "`: the vocabulary size must be positive, got ", vocab_size);
  fd_ = open_regular_file(path);  // a FIFO would block a plain open()
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail("cannot stat token file `", path, "`: ", errno_text());
    const size_t bytes = size_t(st.st_size);
    file_bytes_ = bytes;
    mtime_sec_ = st.st_mtim.tv_sec, mtime_nsec_ = st.st_mtim.tv_nsec;
    if (bytes == 0) fail("token file `", path, "` is empty");
    int32_t header[3] = {0, 0, 0};  // magic, version, ntok (zeros beyond a shorter file's end)
    pread_all(fd_, header, std::min(bytes, sizeof header), 0, path);
    const int32_t magic = header[0];
    if (magic == kLlmcMagic16 || magic == kLlmcMagic32) {
      format_ = magic == kLlmcMagic16 ? TokenFormat::Llmc16 : TokenFormat::Llmc32;
      const int32_t want_version = magic == kLlmcMagic16 ? kLlmcVersion16 : kLlmcVersion32;
      LL_CHECK(bytes >= kLlmcHeaderBytes, "token file `", path, "` starts with llm.c magic ", magic, " but is only ",
               bytes, " bytes, shorter than the 1024-byte header (truncated?)");
      const int32_t version = header[1], ntok = header[2];
      LL_CHECK(version == want_version, "token file `", path, "`: llm.c magic ", magic, " needs version ", want_version,
               ", the header says ", version);
      const size_t width = token_width(format_);
      LL_CHECK(ntok >= 0 && bytes == kLlmcHeaderBytes + size_t(ntok) * width, "token file `", path,
               "`: llm.c header says ", ntok, " tokens, so the file should be 1024 + ", ntok, "×", width, " = ",
               kLlmcHeaderBytes + size_t(std::max(ntok, 0)) * width, " bytes, but it is ", bytes,
               " bytes (truncated or corrupt)");
      size_ = ntok;
    } else {
      format_ = TokenFormat::Raw16;
      LL_CHECK(bytes % 2 == 0, "token file `", path, "` has no llm.c header and an odd size (", bytes,
               " bytes), so it is not a raw uint16 token stream");
      size_ = int64_t(bytes / 2);
    }
    LL_CHECK(size_ > 0, "token file `", path, "` contains no tokens");
    std::vector<int32_t> chunk(size_t(std::min(size_, kValidateChunkTokens)));
    for (int64_t start = 0; start < size_; start += kValidateChunkTokens)  // every id, once (read_tokens checks)
      read_tokens(start, std::min(kValidateChunkTokens, size_ - start), chunk.data());
  } catch (...) {
    close();
    throw;
  }
}

TokenFile::~TokenFile() { close(); }

TokenFile::TokenFile(TokenFile&& o) noexcept { *this = std::move(o); }

TokenFile& TokenFile::operator=(TokenFile&& o) noexcept {
  if (this != &o) {
    close();
    path_ = std::move(o.path_);
    format_ = o.format_;
    fd_ = o.fd_, vocab_size_ = o.vocab_size_, file_bytes_ = o.file_bytes_;
    mtime_sec_ = o.mtime_sec_, mtime_nsec_ = o.mtime_nsec_, size_ = o.size_;
    o.fd_ = -1, o.size_ = 0;
  }
  return *this;
}

void TokenFile::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void TokenFile::check_unchanged() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail("token file `", path_, "`: cannot stat it: ", errno_text());
  const bool same_size = uint64_t(st.st_size) == file_bytes_;
  if (same_size && st.st_mtim.tv_sec == mtime_sec_ && st.st_mtim.tv_nsec == mtime_nsec_) return;
  fail("token file `", path_, "` changed since it was opened (",
       same_size ? std::string("modified in place") : str_cat(file_bytes_, " bytes then, ", st.st_size, " now"),
       "): it was overwritten or truncated while in use. Stopping; the last checkpoint is intact. Write new token "
       "files under another name (or to a temporary file renamed over this one, as `tokenize` does)");
}

void TokenFile::read_tokens(int64_t start, int64_t count, int32_t* out) const {
  check_unchanged();
  const size_t width = token_width(format_);
  std::vector<unsigned char> bytes(size_t(count) * width);
  const uint64_t offset = header_bytes(format_) + uint64_t(start) * width;
  if (!pread_all(fd_, bytes.data(), bytes.size(), offset, path_)) {
    check_unchanged();  // it shrank since the check above: say so
    fail("token file `", path_, "` ended before token ", start + count, " of ", size_);
  }
  for (int64_t i = 0; i < count; ++i) {
    const unsigned char* p = bytes.data() + size_t(i) * width;
    const int32_t id = format_ == TokenFormat::Llmc32 ? load_i32(p) : int32_t(p[0] | (p[1] << 8));
    if (id < 0 || id >= vocab_size_)
      fail("token file `", path_, "` (", token_format_name(format_), "): token id ", id, " at position ", start + i,
           " is outside the vocabulary [0, ", vocab_size_, ") (a different tokenizer, or not a token file?)");
    out[i] = id;
  }
}

int32_t TokenFile::at(int64_t i) const {
  LL_CHECK(i >= 0 && i < size_, "token file `", path_, "`: position ", i, " is outside [0, ", size_, ")");
  int32_t id = 0;
  read_tokens(i, 1, &id);
  return id;
}

void TokenFile::read(int64_t start, int64_t count, int32_t* out) const {
  LL_CHECK(start >= 0 && count >= 0 && start <= size_ - count, "token file `", path_, "`: range [", start, ", ",
           start + count, ") is outside [0, ", size_, ")");
  read_tokens(start, count, out);
}

// ---------------------------------------------------------------------------------------------- sidecar

std::string sidecar_path(const std::string& token_file) { return token_file + ".json"; }

void write_sidecar(const std::string& token_file, const TokenFileSidecar& s) {
  nlohmann::ordered_json j;
  j["format"] = s.format;
  j["token_count"] = s.token_count;
  j["document_count"] = s.document_count;
  j["empty_documents_skipped"] = s.empty_documents_skipped;
  j["bos"] = s.bos;
  j["eos"] = s.eos;
  j["bos_id"] = s.bos_id;
  j["eos_id"] = s.eos_id;
  j["convention"] = str_cat("each document is ", s.bos ? "BOS + " : "", "tokens", s.eos ? " + EOS" : "",
                            " (special tokens inserted by id, never as text)");
  j["tokenizer_path"] = s.tokenizer_path;
  j["tokenizer_md5"] = s.tokenizer_md5;
  j["tokenizer_kind"] = s.tokenizer_kind;
  j["vocab_size"] = s.vocab_size;
  j["special_tokens_in_text"] = s.parse_special_tokens ? "parsed into their ids" : "text";
  j["invalid_utf8_replaced"] = s.invalid_utf8_replaced;
  j["input_format"] = s.input_format;
  j["text_field"] = s.text_field;
  j["inputs"] = s.inputs;
  write_file_atomic(sidecar_path(token_file), j.dump(2) + "\n");
}

TokenFileSidecar read_sidecar(const std::string& token_file) {
  const std::string path = sidecar_path(token_file);
  const std::string text = read_text_file(path);
  TokenFileSidecar s;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    s.format = j.at("format").get<std::string>();
    s.token_count = j.at("token_count").get<int64_t>();
    s.document_count = j.at("document_count").get<int64_t>();
    s.empty_documents_skipped = j.value("empty_documents_skipped", int64_t(0));
    s.bos = j.at("bos").get<bool>();
    s.eos = j.at("eos").get<bool>();
    s.bos_id = j.at("bos_id").get<int32_t>();
    s.eos_id = j.at("eos_id").get<int32_t>();
    s.tokenizer_path = j.at("tokenizer_path").get<std::string>();
    s.tokenizer_md5 = j.at("tokenizer_md5").get<std::string>();
    s.vocab_size = j.at("vocab_size").get<int64_t>();
    s.input_format = j.value("input_format", std::string());
    s.text_field = j.value("text_field", std::string());
    s.inputs = j.value("inputs", std::vector<std::string>());
    s.tokenizer_kind = j.value("tokenizer_kind", std::string());
    s.parse_special_tokens = j.value("special_tokens_in_text", std::string("text")) != "text";
    s.invalid_utf8_replaced = j.value("invalid_utf8_replaced", int64_t(0));
  } catch (const nlohmann::json::exception& e) {
    fail("token file sidecar `", path, "` is invalid: ", e.what());
  }
  return s;
}

}  // namespace ll
