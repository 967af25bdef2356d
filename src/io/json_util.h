// JSON helpers shared by the config/index/adapter readers.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"

namespace ll {

// Parses a whole JSON file; errors name the file.
inline nlohmann::json read_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

// The value of `key`, or null when it is absent or JSON null (HF writes null for "not set").
inline const nlohmann::json* json_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

}  // namespace ll
