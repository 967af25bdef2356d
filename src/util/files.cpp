#include "util/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "util/error.h"

namespace ll {

namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

void check_regular(const std::string& path, mode_t mode) {
  if (!S_ISREG(mode)) fail("`", path, "` is ", kind_of(mode), ", not a regular file; expected a file to read");
}

std::string size_text(uint64_t bytes) {
  return bytes >= (uint64_t(1) << 20) ? str_cat(bytes >> 20, " MiB") : str_cat(bytes, " bytes");
}

}  // namespace

void require_regular_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("cannot open `", path, "` for reading: ", std::strerror(errno));
  check_regular(path, st.st_mode);
}

int open_regular_file(const std::string& path) {
  require_regular_file(path);  // devices are refused before they are opened (opening some has side effects)
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail("cannot open `", path, "` for reading: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {  // replaced between the stat and the open
    const mode_t mode = st.st_mode;
    ::close(fd);
    check_regular(path, mode);
    fail("cannot stat `", path, "`");
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

std::string read_text_file(const std::string& path, uint64_t max_bytes) {
  const int fd = open_regular_file(path);
  struct stat st {};
  ::fstat(fd, &st);
  if (uint64_t(st.st_size) > max_bytes) {
    ::close(fd);
    fail("`", path, "` is ", size_text(uint64_t(st.st_size)), ", larger than the ", size_text(max_bytes),
         " a file of this kind may be; is it the right file?");
  }
  std::string out;
  out.reserve(size_t(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      fail("reading `", path, "` failed: ", std::strerror(err));
    }
    if (n == 0) break;
    if (out.size() + size_t(n) > max_bytes) {
      ::close(fd);
      fail("`", path, "` grew past ", size_text(max_bytes), " while being read");
    }
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  LL_CHECK(fd >= 0, "cannot create `", tmp, "`: ", std::strerror(errno));
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("writing `", tmp, "` failed: ", std::strerror(err));
    }
    done += size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("flushing `", tmp, "` failed: ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("renaming `", tmp, "` to `", path, "` failed: ", std::strerror(err));
  }
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LL_CHECK(fd_ >= 0, "cannot create `", tmp_, "`: ", std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t size) {
  LL_CHECK(fd_ >= 0, "`", path_, "`: write after commit");
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("writing `", tmp_, "` failed: ", n < 0 ? std::strerror(errno) : "no progress");
    p += n;
    size -= size_t(n);
    written_ += uint64_t(n);
  }
}

void AtomicFileWriter::commit() {
  LL_CHECK(fd_ >= 0, "`", path_, "`: committed twice");
  if (::fsync(fd_) != 0) fail("flushing `", tmp_, "` failed: ", std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail("closing `", tmp_, "` failed: ", std::strerror(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail(path_, ": cannot rename temp file ", tmp_, " into place: ", std::strerror(errno));
  committed_ = true;
  // The rename itself is durable only once the folder is synced; best effort, the data already is.
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

bool path_exists(const std::string& path) { return std::filesystem::exists(path); }
bool is_directory(const std::string& path) { return std::filesystem::is_directory(path); }

void make_directories(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  LL_CHECK(!ec && std::filesystem::is_directory(path), "cannot create directory `", path, "`: ", ec.message());
}

}  // namespace ll
