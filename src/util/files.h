// Small file helpers shared by the loaders and writers.
#pragma once
#include <string>

namespace ll {

// Reads a whole (small) file; throws naming the path when it cannot.
std::string read_text_file(const std::string& path);
// Writes to "<path>.tmp.<pid>", fsyncs, then renames over `path`: readers see the old file or the new one,
// never a torn one. Throws naming the path; the temporary file is removed on failure.
void write_file_atomic(const std::string& path, const std::string& contents);
bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
// Creates the directory and its parents when missing; throws naming the path on failure.
void make_directories(const std::string& path);

}  // namespace ll
