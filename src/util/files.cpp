#include "util/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

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

bool path_exists(const std::string& path) { return std::filesystem::exists(path); }
bool is_directory(const std::string& path) { return std::filesystem::is_directory(path); }

void make_directories(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  LL_CHECK(!ec && std::filesystem::is_directory(path), "cannot create directory `", path, "`: ", ec.message());
}

}  // namespace ll
