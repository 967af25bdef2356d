// Small string helpers the code needs in many places (C++17 has no std::string::ends_with).
#pragma once
#include <string>

namespace ll {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ASCII lower case (flag values, file extensions); other bytes are kept.
inline std::string to_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return s;
}

}  // namespace ll
