// output_dir/metrics.jsonl: one JSON record per optimizer step logged, one line each. Every record is written with
// a single write() of the whole line; a write that fails (disk full) or is cut short is undone and stops the run
// with an error naming the file, so the file never holds a partial line.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace ll {

class MetricsLog {
 public:
  MetricsLog() = default;
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // Opens `path` for appending (created when missing). An existing regular file is first cut back to its leading
  // complete records of steps <= keep_through_step (a resumed run continues one trajectory: the records a killed
  // run logged after its last checkpoint, and a torn last line, are dropped, with a notice on stderr). Anything
  // else at `path` (a device, a FIFO) is appended to as it is.
  void open(const std::string& path, int64_t keep_through_step);
  // Appends `record` as one line; throws ll::Error naming the file when the write fails.
  void append(const nlohmann::json& record);
  bool is_open() const { return fd_ >= 0; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace ll
