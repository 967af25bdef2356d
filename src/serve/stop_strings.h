// OpenAI's `stop` strings over streamed text: the generated text arrives in pieces; what is released never holds
// the start of a stop string that may still complete, and the text ends just before the first stop string found
// (which is not returned).
#pragma once
#include <string>
#include <vector>

namespace ll::serve {

class StopScanner {
 public:
  explicit StopScanner(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Adds a piece; returns the text now safe to release.
  std::string push(const std::string& piece);
  // The text held back (a partial stop string that never completed); "" once stopped.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string text_;
  size_t released_ = 0;
  bool stopped_ = false;
};

}  // namespace ll::serve
