// Reading what a training run wrote, for comparing runs: the logged losses, every tensor of a safetensors file
// as doubles, and the relative L2 distance of two such vectors.
#pragma once
#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "tensor_host.h"

namespace ll::test {

// The `loss` of every line of out_dir/metrics.jsonl.
inline std::vector<double> logged_losses(const std::string& out_dir) {
  std::vector<double> out;
  std::ifstream in(out_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line).at("loss"));
  return out;
}

// Every tensor of a safetensors file (any stored dtype), in name order, concatenated.
inline std::vector<double> stored_values(const std::string& file) {
  const SafetensorsFile f(file);
  std::vector<double> all;
  for (const std::string& name : f.names()) {
    const SafetensorsEntry& e = f.entry(name);
    std::vector<double> v(e.nbytes / dtype_size(e.dtype));
    convert_values(e.data, e.dtype, v.data(), DType::F64, v.size());
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

// ‖a − b‖ / ‖b‖; 1 when the lengths differ.
inline double relative_distance(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return 1.0;
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]), n += b[i] * b[i];
  return std::sqrt(d / std::max(n, 1e-30));
}

}  // namespace ll::test
