#include "data/pdf_text.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <vector>

#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

extern char** environ;

namespace ll {

namespace {

// Reads all of `fd` into `out` (until EOF).
void drain(int fd, std::string* out) {
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) out->append(buffer, size_t(n));
    else if (n == 0 || errno != EINTR) break;
  }
}

}  // namespace

bool is_pdf_file(const std::string& path) {
  if (ends_with(to_lower(path), ".pdf")) return true;
  // Only a regular file is sniffed: opening a FIFO would block, and the reader refuses anything else by name.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  const int fd = open_regular_file(path);
  char head[5] = {};
  const ssize_t got = ::read(fd, head, sizeof head);
  ::close(fd);
  return got == ssize_t(sizeof head) && std::memcmp(head, "%PDF-", 5) == 0;
}

std::string pdf_to_text(const std::string& path) {
  require_regular_file(path);
  // stdout to a pipe we read; stderr to a temporary file (both pipes would need polling to avoid a deadlock).
  int out_pipe[2];
  LL_CHECK(::pipe(out_pipe) == 0, "reading PDF `", path, "`: cannot create a pipe: ", std::strerror(errno));
  char err_name[] = "/tmp/ll_pdftotext_XXXXXX";
  const int err_fd = ::mkstemp(err_name);
  if (err_fd < 0) {
    ::close(out_pipe[0]), ::close(out_pipe[1]);
    fail("reading PDF `", path, "`: cannot create a temporary file: ", std::strerror(errno));
  }
  ::unlink(err_name);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_fd, STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, out_pipe[0]);
  // -enc UTF-8: the text's encoding; "-": to stdout. Reading order (no -layout), as a text extractor would.
  std::vector<std::string> args = {"pdftotext", "-enc", "UTF-8", path, "-"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, "pdftotext", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  if (spawned != 0) {
    ::close(out_pipe[0]), ::close(err_fd);
    if (spawned == ENOENT)
      fail("input `", path, "` is a PDF: reading it needs `pdftotext`, which is not installed (Debian package "
           "poppler-utils: apt-get install poppler-utils; scripts/setup.sh installs it)");
    fail("reading PDF `", path, "`: cannot run pdftotext: ", std::strerror(spawned));
  }
  std::string text;
  drain(out_pipe[0], &text);
  ::close(out_pipe[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::string message;
  ::lseek(err_fd, 0, SEEK_SET);
  drain(err_fd, &message);
  ::close(err_fd);
  while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) message.pop_back();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("reading PDF `", path, "`: pdftotext failed (",
         WIFEXITED(status) ? str_cat("exit status ", WEXITSTATUS(status)) : std::string("killed by a signal"), ")",
         message.empty() ? std::string() : ": " + message);
  // pdftotext ends every page with a form feed: a blank line between pages instead, none at the end.
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\f') out += "\n\n";
    else out += c;
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  LL_CHECK(!out.empty(), "PDF `", path, "` holds no text (pdftotext found none: a scanned document needs OCR, "
           "which this project does not do)");
  return out;
}

}  // namespace ll
