#include "train/metrics_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "util/error.h"

namespace ll {

namespace {

// The length of the leading part of the regular file `path` made of complete records (JSON objects with an integer
// `step`, each on a line ending in '\n') of steps <= keep_through_step; `dropped` says what follows it.
uint64_t consistent_prefix(const std::string& path, int64_t keep_through_step, std::string* dropped) {
  std::ifstream in(path, std::ios::binary);
  LL_CHECK(in.good(), "cannot open `", path, "` for reading: ", std::strerror(errno));
  uint64_t kept = 0;
  int64_t later = 0, invalid = 0;
  bool torn = false, cut = false;
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) {  // no '\n' after it: a write cut short
      torn = cut = true;
      break;
    }
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const auto step = record.is_object() ? record.find("step") : record.end();
    if (!record.is_object() || step == record.end() || !step->is_number_integer()) ++invalid, cut = true;
    else if (step->get<int64_t>() > keep_through_step) ++later, cut = true;
    if (!cut) kept += line.size() + 1;
  }
  std::vector<std::string> parts;
  if (later) parts.push_back(str_cat(later, " record", later == 1 ? "" : "s", " after step ", keep_through_step,
                                     " (the step the run resumes from)"));
  if (invalid)
    parts.push_back(str_cat(invalid, invalid == 1 ? " line that is" : " lines that are", " no JSON record with a step"));
  if (torn) parts.push_back("an incomplete last line");
  for (size_t i = 0; i < parts.size(); ++i) *dropped += (i == 0 ? "" : i + 1 == parts.size() ? " and " : ", ") + parts[i];
  return kept;
}

}  // namespace

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::open(const std::string& path, int64_t keep_through_step) {
  LL_CHECK(fd_ < 0, "MetricsLog::open: `", path_, "` is already open");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    std::string why;
    const uint64_t kept = consistent_prefix(path, keep_through_step, &why);
    if (kept < uint64_t(st.st_size)) {
      if (::truncate(path.c_str(), off_t(kept)) != 0)
        fail("cannot cut `", path, "` back to its records up to step ", keep_through_step, ": ", std::strerror(errno));
      std::fprintf(stderr, "%s: dropped %s (%lld bytes), so that the file is one consistent run\n", path.c_str(),
                   why.c_str(), (long long)(uint64_t(st.st_size) - kept));
    }
  }
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot open `", path, "` for appending: ", std::strerror(errno));
  path_ = path;
}

void MetricsLog::append(const nlohmann::json& record) {
  LL_CHECK(fd_ >= 0, "MetricsLog::append before open");
  const std::string line = record.dump() + "\n";
  struct stat st {};
  const bool regular = ::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
  // One write() of the whole line (an O_APPEND write lands in one piece); only when it is cut short is the rest
  // written separately, which tells why (ENOSPC, EFBIG).
  size_t done = 0;
  int err = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    done += size_t(n);
  }
  if (done == line.size()) return;
  // Undo a partial line, so that the file stays a list of complete records.
  if (done > 0 && regular && ::ftruncate(fd_, st.st_size) != 0)
    fail("writing `", path_, "` failed (", std::strerror(err), ") and its partial last line could not be removed: ",
         std::strerror(errno));
  fail("writing `", path_, "` failed: ", std::strerror(err), "; the run stops (free some space, then resume with "
       "--resume_from_checkpoint auto)");
}

}  // namespace ll
