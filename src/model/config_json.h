// Reading config.json fields for an architecture's definition: typed getters whose errors name the file and the
// field, and the RoPE scaling forms every family shares (rope_scaling / rope_parameters: linear, llama3 or none).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace ll {

class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}
  const nlohmann::json& json() const { return j_; }
  const std::string& where() const { return where_; }  // the file, for errors

  // The value of `key`, or null when it is absent or JSON null (HF writes null for "not set").
  const nlohmann::json* field(const char* key) const;
  bool has(const char* key) const { return field(key) != nullptr; }
  // Required unless a fallback is given; the wrong JSON type is an error naming the key.
  int64_t get_int(const char* key, std::optional<int64_t> fallback = {}) const;
  double get_number(const char* key, std::optional<double> fallback = {}) const;
  bool get_bool(const char* key, bool fallback) const;
  std::string get_string(const char* key) const;  // "" when absent
  [[noreturn]] void fail_field(const std::string& message) const;  // "<where>: <message>"

 private:
  const nlohmann::json& j_;
  std::string where_;
};

// rope_theta (`theta_key`, default 10000) and the scaling from rope_scaling and/or transformers 5's rope_parameters:
// null, {"type"|"rope_type": "linear"|"default", "factor": F}, {"rope_type": "llama3", "factor", "low_freq_factor",
// "high_freq_factor", "original_max_position_embeddings"} (into c.rope_llama3), rope_parameters possibly carrying
// rope_theta; the two must agree. Any other type (dynamic, yarn, longrope, …) is an error naming it and the supported
// ones.
void read_rope_scaling(const ConfigReader& r, ModelConfig& c, const char* theta_key = "rope_theta");

}  // namespace ll
