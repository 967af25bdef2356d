// Small file helpers shared by the loaders and writers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

namespace ll {

// Config-like files (config.json, indexes, adapter configs, checkpoint state, tokenizer models, flag files) are
// small: anything larger is the wrong file, and is refused before it is read.
constexpr uint64_t kMaxSmallFileBytes = uint64_t(64) << 20;
constexpr uint64_t kNoSizeLimit = std::numeric_limits<uint64_t>::max();

// Every reader of a user-given path reads regular files only (links followed): a FIFO would block the open or the
// read until a writer appears — forever —, a device such as /dev/zero would be read until memory runs out, and a
// directory cannot be read. These throw naming the path and what it is instead ("is a FIFO (named pipe), …").
// Opens `path` read-only without blocking (O_NONBLOCK, cleared once it is known to be a regular file); returns the
// descriptor (O_CLOEXEC), which the caller closes.
int open_regular_file(const std::string& path);
// For readers that open the path themselves (ifstream, fopen): checks with stat(), which never blocks.
void require_regular_file(const std::string& path);
// Reads a whole regular file of at most `max_bytes` (kNoSizeLimit for documents); throws naming the path when it
// cannot, when it is not a regular file, or when it is larger.
std::string read_text_file(const std::string& path, uint64_t max_bytes = kMaxSmallFileBytes);
// Writes to "<path>.tmp.<pid>", fsyncs, then renames over `path`: readers see the old file or the new one,
// never a torn one. Throws naming the path; the temporary file is removed on failure.
void write_file_atomic(const std::string& path, const std::string& contents);
// The streaming form of write_file_atomic, for files too large to build in memory: bytes go to "<path>.tmp.<pid>";
// commit() fsyncs it, renames it over `path` and fsyncs the folder. Destroyed before commit() (an exception on the
// way), it removes the temporary file and leaves `path` as it was.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);  // throws naming the path (disk full, I/O error)
  uint64_t bytes_written() const { return written_; }
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
  bool committed_ = false;
};

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
// Creates the directory and its parents when missing; throws naming the path on failure.
void make_directories(const std::string& path);

}  // namespace ll
