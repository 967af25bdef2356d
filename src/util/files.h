// Small file helpers shared by the loaders and writers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace ll {

// Reads a whole (small) file; throws naming the path when it cannot.
std::string read_text_file(const std::string& path);
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
