// Helpers for the HF-folder, adapter and merge tests: temporary folders, tiny configs, reproducible weights.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/params.h"
#include "core/tensor_host.h"
#include "test_util.h"
#include "util/random.h"

namespace ll::test {

// A fresh directory under the test temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string templ = ::testing::TempDir() + "ll_hf_XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << templ;
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// GQA 4/2 heads, Dh 4, two layers: small enough that sharding with a 4 KB cap gives several shards.
inline ModelConfig tiny_llama(int64_t vocab = 11, bool tied = false) {
  ModelConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.num_hidden_layers = 2;
  c.vocab_size = vocab;
  c.norm_eps = 1e-5;
  c.max_position_embeddings = 32;
  c.tie_word_embeddings = tied;
  return c;
}

// Every parameter (LoRA B included, so adapters matter) drawn uniformly; norms around 1. Uniform draws use only
// integer and double arithmetic, so the values are bit-identical on every machine.
inline void fill_params(ParamStore& params, Backend& backend, uint64_t seed, double scale = 0.3) {
  Rng rng(seed);
  for (Param& p : params.all()) {
    std::vector<double> v(size_t(p.numel()));
    for (double& x : v) x = p.is_norm() ? 1.0 + rng.uniform(-0.2, 0.2) : rng.uniform(-scale, scale);
    upload_f64(backend, p.value, v);
  }
}

inline std::string hf_tiny_dir() {
  const std::string dir = fixtures_dir();
  return dir.empty() ? "" : dir + "/hf_tiny";
}

inline std::vector<double> file_values(const SafetensorsEntry& e) {
  std::vector<double> out(e.nbytes / dtype_size(e.dtype));
  convert_values(e.data, e.dtype, out.data(), DType::F64, out.size());
  return out;
}

// Rewrites the safetensors file at `path` with element `index` of tensor `name` set to `value` (NaN, inf, …): what
// the project's own writers refuse to produce, for the readers' tests.
inline void poison_tensor(const std::string& path, const std::string& name, size_t index, double value) {
  std::vector<std::vector<unsigned char>> keep;
  std::vector<SafetensorsWriteItem> items;
  std::map<std::string, std::string> metadata;
  {
    const SafetensorsFile f(path);
    metadata = f.metadata();
    for (const std::string& n : f.names()) {
      const SafetensorsEntry& e = f.entry(n);
      keep.emplace_back(static_cast<const unsigned char*>(e.data), static_cast<const unsigned char*>(e.data) + e.nbytes);
      if (n == name) convert_values(&value, DType::F64, keep.back().data() + index * dtype_size(e.dtype), e.dtype, 1);
      items.push_back({n, e.dtype, e.shape, keep.back().data()});
    }
  }
  write_safetensors(path, items, metadata);
}

}  // namespace ll::test
