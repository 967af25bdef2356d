// Token files (formats.md §A5): LongLoRA's raw little-endian uint16 stream with no header (pg19/*.bin), or
// llm.c's headered shards (256 × int32: magic, version, ntok, zeros; then the tokens).
//   magic 20240520, version 1: uint16 tokens        magic 20240801, version 7: uint32 tokens
// Readers tell them apart by the magic: as uint16 the magics start with 55432 / 55713, which no Llama-2 id
// (< 32001) can be, so a raw Llama-2 stream never looks like a header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ll {

enum class TokenFormat { Raw16, Llmc16, Llmc32 };

constexpr int32_t kLlmcMagic16 = 20240520, kLlmcVersion16 = 1;
constexpr int32_t kLlmcMagic32 = 20240801, kLlmcVersion32 = 7;
constexpr size_t kLlmcHeaderBytes = 256 * sizeof(int32_t);

// "raw_uint16", "llmc_uint16", "llmc_uint32" (the spelling used in sidecars).
const char* token_format_name(TokenFormat format);
// Accepts the names above, "raw", "llmc" (uint16 when every id of a `vocab_size` vocabulary fits in 16 bits, i.e.
// vocab_size <= 65536, else uint32) and "auto" (raw uint16 when they fit, else llmc uint32). Throws for anything
// else.
TokenFormat parse_token_format(const std::string& name, int64_t vocab_size);

// Streaming writer: tokens go to "<path>.tmp.<pid>"; finish() fills in the header, fsyncs and renames over
// `path`. Destroying an unfinished writer removes the temporary file, so `path` is never left half-written.
class TokenFileWriter {
 public:
  TokenFileWriter(std::string path, TokenFormat format);
  ~TokenFileWriter();
  TokenFileWriter(const TokenFileWriter&) = delete;
  TokenFileWriter& operator=(const TokenFileWriter&) = delete;

  // Throws for a negative id or one too wide for the format (≥ 65536 in the uint16 formats), naming the file
  // and the token position.
  void append(const int32_t* ids, size_t count);
  void append(const std::vector<int32_t>& ids) { append(ids.data(), ids.size()); }
  void finish();
  int64_t count() const { return count_; }

 private:
  void flush();
  std::string path_, tmp_;
  TokenFormat format_;
  int fd_ = -1;
  int64_t count_ = 0;
  bool finished_ = false;
  std::vector<unsigned char> buffer_;
};

// A read-only token file of either format, validated on open: an odd-sized raw file, a known magic with the wrong
// version or a size that disagrees with the header's ntok, an empty file, and any id >= vocab_size are errors naming
// the file (and the position and id). Tokens are read with pread() from the descriptor held open, not through a
// memory mapping: a file truncated or rewritten in place while training runs would fault a mapping (SIGBUS, the run
// gone without a word). Every read checks the file against what was opened (size, modification time) and the ids
// against the vocabulary, and throws naming the file instead. A file replaced by rename (as TokenFileWriter does)
// is harmless: the open descriptor keeps reading the original.
class TokenFile {
 public:
  TokenFile(const std::string& path, int64_t vocab_size);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;
  TokenFile(TokenFile&& other) noexcept;
  TokenFile& operator=(TokenFile&& other) noexcept;

  const std::string& path() const { return path_; }
  TokenFormat format() const { return format_; }
  int64_t size() const { return size_; }  // number of tokens
  int32_t at(int64_t i) const;            // bounds-checked
  // Copies tokens [start, start + count) into out; the range must lie inside the file. Safe to call from several
  // threads at once.
  void read(int64_t start, int64_t count, int32_t* out) const;

 private:
  // Reads tokens [start, start + count) (already bounds-checked), checking the file and every id.
  void read_tokens(int64_t start, int64_t count, int32_t* out) const;
  void check_unchanged() const;
  void close() noexcept;
  std::string path_;
  TokenFormat format_ = TokenFormat::Raw16;
  int fd_ = -1;
  int64_t vocab_size_ = 0;
  uint64_t file_bytes_ = 0;                 // size when opened
  int64_t mtime_sec_ = 0, mtime_nsec_ = 0;  // modification time when opened
  int64_t size_ = 0;
};

// The sidecar "<token file>.json": how the tokens were made, so a loader can check them against its tokenizer.
struct TokenFileSidecar {
  std::string format;  // token_format_name()
  int64_t token_count = 0, document_count = 0, empty_documents_skipped = 0;
  bool bos = true, eos = true;  // each document is [BOS] + tokens + [EOS]
  int32_t bos_id = -1, eos_id = -1;
  std::string tokenizer_path, tokenizer_md5;
  int64_t vocab_size = 0;
  std::string input_format, text_field;
  std::vector<std::string> inputs;
  std::string tokenizer_kind;           // "sentencepiece" or "tokenizer.json" ("" in older sidecars)
  bool parse_special_tokens = false;    // literal special-token strings in the text were turned into their ids
  int64_t invalid_utf8_replaced = 0;    // invalid UTF-8 bytes read as U+FFFD
};

std::string sidecar_path(const std::string& token_file);                             // token_file + ".json"
void write_sidecar(const std::string& token_file, const TokenFileSidecar& sidecar);  // atomic
TokenFileSidecar read_sidecar(const std::string& token_file);  // throws naming the sidecar on a bad field

}  // namespace ll
