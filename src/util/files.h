// Small file helpers shared by the loaders and writers.
#pragma once
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
bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
// Creates the directory and its parents when missing; throws naming the path on failure.
void make_directories(const std::string& path);

}  // namespace ll
