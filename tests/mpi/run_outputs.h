// Reading what a training run wrote, for comparing runs: the logged losses, every tensor of a safetensors file
// as doubles, the relative L2 distance of two such vectors, and the comparison of two runs built on them.
#pragma once
#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "core/tensor_host.h"

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

// Run `run` follows the reference run `ref` (output directories): both logged `steps` losses, each within
// loss_rel of the reference's, and the trainable weights of checkpoint-<steps> agree within weights_rel (relative L2).
inline void expect_run_matches(const std::string& run, const std::string& ref, size_t steps, double loss_rel,
                               double weights_rel) {
  const std::vector<double> a = logged_losses(run), b = logged_losses(ref);
  ASSERT_EQ(a.size(), steps) << run;
  ASSERT_EQ(b.size(), steps) << ref;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], loss_rel * std::abs(b[i])) << run << " step " << i + 1;
  const std::string weights = "/checkpoint-" + std::to_string(steps) + "/trainable.safetensors";
  EXPECT_LT(relative_distance(stored_values(run + weights), stored_values(ref + weights)), weights_rel) << run;
}

}  // namespace ll::test
