#include "eval/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace ll {

std::string format_eta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t s = int64_t(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                  (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

ProgressBar::ProgressBar(std::string label, std::string unit)
    : ProgressBar(std::move(label), std::move(unit), ::isatty(::fileno(stderr)) != 0) {}

ProgressBar::ProgressBar(std::string label, std::string unit, bool tty)
    : label_(std::move(label)), unit_(std::move(unit)), tty_(tty), start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int64_t done, int64_t total) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total > 0 ? double(done) / double(total) : 1.0;
  const double rate = done / std::max(elapsed, 1e-9);
  const double eta = done > 0 ? elapsed / double(done) * double(total - done) : NAN;
  constexpr int kWidth = 30;
  const int filled = int(frac * kWidth + 1e-9);
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s [%s%s] %lld/%lld %s | %.1f %s/s | elapsed %s | ETA %s", label_.c_str(),
                std::string(size_t(filled), '#').c_str(), std::string(size_t(kWidth - filled), '.').c_str(),
                (long long)done, (long long)total, unit_.c_str(), rate, unit_.c_str(), format_eta(elapsed).c_str(),
                format_eta(eta).c_str());
  last_ = buf;
  if (tty_) {
    std::fprintf(stderr, "\r%s\x1b[K", buf);
    open_ = true;
  } else if (const int decile = int(frac * 10 + 1e-9); decile > last_decile_) {
    last_decile_ = decile;
    std::fprintf(stderr, "%s\n", buf);
  }
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (tty_ && open_) std::fprintf(stderr, "\n");
  open_ = false;
}

}  // namespace ll
