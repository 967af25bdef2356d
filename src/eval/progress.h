// A one-line progress bar with rate and ETA on stderr: redrawn in place on a terminal, or a line at every 10%
// when stderr is not a terminal (logs stay short).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace ll {

class ProgressBar {
 public:
  // `unit` names what is counted ("windows", "tokens").
  ProgressBar(std::string label, std::string unit);
  ProgressBar(std::string label, std::string unit, bool tty);  // tests: force either mode
  void update(int64_t done, int64_t total);
  ~ProgressBar() { finish(); }
  void finish();  // ends the line on a terminal (also on destruction, e.g. when an error unwinds)
  std::string last_line() const { return last_; }

 private:
  std::string label_, unit_, last_;
  bool tty_;
  int last_decile_ = -1;
  bool open_ = false;
  std::chrono::steady_clock::time_point start_;
};

// "mm:ss", or "h:mm:ss" from an hour on; "--:--" when unknown.
std::string format_eta(double seconds);

}  // namespace ll
