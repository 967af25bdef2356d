// Shared helpers for the tests: random host data, tensor views over host vectors, norms, and
// central finite differences in double precision.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "util/error.h"
#include "util/random.h"

namespace ll::test {

// The message of the ll::Error that `f` throws; "" when it throws none (so a search for any expected text fails).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// tests/fixtures, found from the repository root (where `make test` runs) or next to this source file.
inline std::string fixtures_dir() {
  for (std::string dir : {std::string("tests/fixtures"), std::string(__FILE__).substr(0, std::string(__FILE__).rfind('/') + 1) + "fixtures"}) {
    if (FILE* f = std::fopen((dir + "/mha_full.safetensors").c_str(), "rb")) {
      std::fclose(f);
      return dir;
    }
  }
  return "";
}

// A file of the shared assets folder (../shared/assets, never part of the project): $LONGLORA_ASSETS when set (an
// explicit choice, no fallback), else ../shared/assets from the working directory (the repository root under
// `make test`), else the same folder found from this source file. "" when absent: callers GTEST_SKIP with a reason.
inline std::string asset_path(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("LONGLORA_ASSETS"); env && *env) {
    dirs.push_back(env);
  } else {
    const std::string here = std::string(__FILE__).substr(0, std::string(__FILE__).rfind('/') + 1);
    dirs = {"../shared/assets", here + "../../shared/assets"};
  }
  for (const std::string& dir : dirs)
    if (FILE* f = std::fopen((dir + "/" + name).c_str(), "rb")) {
      std::fclose(f);
      return dir + "/" + name;
    }
  return "";
}

inline std::vector<double> random_vector(Rng& rng, int64_t n, double scale = 1.0) {
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = scale * rng.normal();
  return v;
}

// A CPU tensor view over a host vector (the cpu backends operate on host memory).
template <typename T>
Tensor view(std::vector<T>& v, std::initializer_list<int64_t> dims) {
  Tensor t(v.data(), dtype_of<T>(), Device::CPU, dims);
  EXPECT_EQ(size_t(t.numel()), v.size()) << "test bug: view shape " << t.shape_str() << " for " << v.size() << " values";
  return t;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline double norm(const std::vector<double>& a) { return std::sqrt(dot(a, a)); }

// ‖a − b‖ / ‖b‖ (absolute when ‖b‖ is tiny).
inline double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    ref += b[i] * b[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(ref), 1e-12);
}

// Central finite differences of `loss` with respect to every element of `x` (which `loss` reads),
// compared with `analytic` as a relative error over the whole tensor.
inline void expect_gradient(const std::function<double()>& loss, std::vector<double>& x,
                            const std::vector<double>& analytic, const std::string& what, double tol = 1e-6,
                            double h = 1e-6) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  std::vector<double> numeric(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = loss();
    x[i] = saved - h;
    const double down = loss();
    x[i] = saved;
    numeric[i] = (up - down) / (2 * h);
  }
  ASSERT_GT(norm(numeric), 0.0) << what << ": the loss does not depend on this input, so the check proves nothing";
  EXPECT_LT(rel_error(analytic, numeric), tol) << what << ": analytic gradient disagrees with finite differences";
}

}  // namespace ll::test
