#include "serve/stop_strings.h"

#include <algorithm>

namespace ll::serve {

std::string StopScanner::push(const std::string& piece) {
  if (stopped_) return "";
  text_ += piece;
  // An occurrence cannot start before released_: the released text never ends in the start of a stop string.
  size_t first = std::string::npos;
  for (const std::string& s : stops_)
    if (!s.empty()) first = std::min(first, text_.find(s, released_));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = text_.substr(released_, first - released_);
    released_ = text_.size();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), text_.size() - released_); n > hold; --n)
      if (text_.compare(text_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  std::string out = text_.substr(released_, text_.size() - hold - released_);
  released_ = text_.size() - hold;
  return out;
}

std::string StopScanner::flush() {
  if (stopped_) return "";
  std::string out = text_.substr(released_);
  released_ = text_.size();
  return out;
}

}  // namespace ll::serve
