// Reading the parts of a tokenizer.json: every error names the file and the JSON path of the value
// ("tokenizer.json `/m/tokenizer.json`: pre_tokenizer.pretokenizers[1].pattern: ...").
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace ll::hf {

using Json = nlohmann::json;

// A JSON value and where it is, for error messages.
struct JsonAt {
  const Json& value;
  std::string where;  // "<file>: <path>"

  // The member `key`; an error when this is not an object or `key` is absent (or null, unless `null_ok`).
  JsonAt at(const std::string& key) const {
    LL_CHECK(value.is_object(), where, ": expected a JSON object, got ", value.type_name());
    auto it = value.find(key);
    LL_CHECK(it != value.end() && !it->is_null(), where, ": missing field `", key, "`");
    return {*it, where + "." + key};
  }
  // True when `key` is present and not null.
  bool has(const std::string& key) const {
    if (!value.is_object()) return false;
    auto it = value.find(key);
    return it != value.end() && !it->is_null();
  }
  JsonAt item(size_t i) const { return {value[i], where + "[" + std::to_string(i) + "]"}; }
  const Json& array() const {
    LL_CHECK(value.is_array(), where, ": expected a JSON array, got ", value.type_name());
    return value;
  }
  std::string str() const {
    LL_CHECK(value.is_string(), where, ": expected a string, got ", value.type_name());
    return value.get<std::string>();
  }
  bool boolean() const {
    LL_CHECK(value.is_boolean(), where, ": expected true or false, got ", value.type_name());
    return value.get<bool>();
  }
  int64_t integer() const {
    LL_CHECK(value.is_number_integer(), where, ": expected an integer, got ", value.dump());
    return value.get<int64_t>();
  }
  std::string str(const std::string& key) const { return at(key).str(); }
  std::string str_or(const std::string& key, const std::string& fallback) const {
    return has(key) ? at(key).str() : fallback;
  }
  bool boolean_or(const std::string& key, bool fallback) const { return has(key) ? at(key).boolean() : fallback; }
  std::string type() const { return at("type").str(); }
};

// The error for a component type this reader does not implement.
[[noreturn]] inline void unknown_type(const JsonAt& j, const char* kind, const char* supported) {
  fail(j.where, ": ", kind, " type `", j.type(), "` is not supported (supported: ", supported, ")");
}

}  // namespace ll::hf
