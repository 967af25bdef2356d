// One error path for the whole program: what failed, where (file, flag, field), what was expected, and a hint.
#pragma once
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>

namespace ll {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename First, typename... Rest>
void append(std::ostringstream& os, const First& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<< into one message.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(str_cat(args...));
}

// What a binary prints for the exception that ends it: its message, except for std::bad_alloc, whose what() says
// only "std::bad_alloc". The start-up checks name the field or flag behind an absurd size; this is the last resort.
inline std::string exception_message(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr)
    return "out of memory: an allocation failed (std::bad_alloc); a size given in the inputs or flags (model, "
           "batch, context, generation length) may be larger than this machine can hold";
  return e.what();
}

}  // namespace ll

// LL_CHECK(cond, message parts...): throws ll::Error with the message alone. For everything a user can cause (input
// files, flags, sizes, the machine): the message names the file, field or flag and what was expected.
#define LL_CHECK(cond, ...)                \
  do {                                     \
    if (!(cond)) ::ll::fail(__VA_ARGS__);  \
  } while (0)

// LL_ASSERT(cond, message parts...): an internal invariant (a caller broke a contract; no input should reach it).
// The message ends with the failed condition and its source location, which is what a bug report needs.
#define LL_ASSERT(cond, ...)                                                                                  \
  do {                                                                                                        \
    if (!(cond)) ::ll::fail(__VA_ARGS__, "  [internal check `" #cond "` failed at ", __FILE__, ":", __LINE__, "]"); \
  } while (0)
