// Helpers for the build/eval tests: tiny HF folders and adapters written with the project's own writers, the
// hf_tiny fixture copied (optionally without rope_scaling), and the eval binary next to the test binary.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/token_file.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/peft.h"
#include "model/model.h"
#include "model/param_select.h"
#include "core/tensor_host.h"
#include "test_data_util.h"
#include "test_util.h"
#include "util/files.h"
#include "util/random.h"

namespace ll::test {

inline ModelConfig small_config(int64_t vocab, int64_t max_pos = 64) {
  ModelConfig c;
  c.hidden_size = 16, c.intermediate_size = 32, c.num_attention_heads = 4, c.num_key_value_heads = 2;
  c.num_hidden_layers = 2, c.vocab_size = vocab, c.max_position_embeddings = max_pos, c.norm_eps = 1e-5;
  return c;
}

// Every parameter uniform in ±scale, norms around 1 (machine-independent values).
inline void randomize(ParamStore& params, Backend& backend, uint64_t seed, double scale = 0.3) {
  Rng rng(seed);
  for (Param& p : params.all()) {
    std::vector<double> v(size_t(p.numel()));
    for (double& x : v) x = p.is_norm() ? 1.0 + rng.uniform(-0.2, 0.2) : rng.uniform(-scale, scale);
    upload_f64(backend, p.value, v);
  }
}

// A random HF folder (f32 safetensors + config.json) at `dir`.
inline void write_random_hf_folder(const std::string& dir, const ModelConfig& config, uint64_t seed,
                                   double scale = 0.3) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  ParamStore s(*backend, config, {}, {});
  randomize(s, *backend, seed, scale);
  HfSaveOptions o;
  o.dtype = DType::F32;
  o.info.special_token_ids = {{"bos_token_id", 1}, {"eos_token_id", 2}};
  save_hf_folder(dir, s, *backend, config, o);
}

// An adapter for the base folder `base` (LoRA r 4 on q,k,v,o + trainable embed and norms, all random), built with
// vocabulary `vocab` (base + 1: [PAD] row added as training does); longlora.json written when record is set.
inline void write_random_adapter(const std::string& dir, const std::string& base, int64_t vocab, uint64_t seed,
                                 std::optional<LongLoraRecord> record) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  ModelOptions mo;
  mo.config = read_hf_config(base).model;
  const bool pad = vocab == mo.config.vocab_size + 1;
  mo.config.vocab_size = vocab;
  mo.lora.rank = 4, mo.lora.alpha = 8;
  mo.lora.targets = parse_lora_targets("q,k,v,o", mo.config);
  mo.trainable = TrainableConfig::parse("embed,norm");
  mo.batch = 1, mo.seq_len = 4;
  Model model(*backend, mo);
  load_hf_weights(base, model.params(), *backend, {pad});
  Rng rng(seed);
  for (Param& p : model.params().all()) {
    if (!p.trainable) continue;
    std::vector<double> v = download_f64(*backend, p.value);
    for (double& x : v) x += rng.uniform(-0.2, 0.2);
    upload_f64(*backend, p.value, v);
  }
  AdapterSaveOptions ao;
  ao.record = record;
  save_adapter(dir, model.params(), *backend, mo.lora, ao);
}

// tests/fixtures/hf_tiny copied into dir; without_rope_scaling removes rope_scaling / rope_parameters' factor.
inline std::string copy_hf_tiny(const std::string& dir, bool without_rope_scaling) {
  namespace fs = std::filesystem;
  const std::string src = fixtures_dir() + "/hf_tiny";
  for (const auto& e : fs::directory_iterator(src)) fs::copy_file(e.path(), dir + "/" + e.path().filename().string());
  if (without_rope_scaling) {
    nlohmann::json j = nlohmann::json::parse(read_text_file(dir + "/config.json"));
    j.erase("rope_scaling");
    if (j.contains("rope_parameters")) j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
    write_file_atomic(dir + "/config.json", j.dump(2));
  }
  return dir;
}

inline void write_tokens(const std::string& path, const std::vector<int32_t>& ids) {
  TokenFileWriter w(path, TokenFormat::Raw16);
  w.append(ids);
  w.finish();
}

// build/<dir>/<name> (a binary built next to this test binary), or "" when it is not there.
inline std::string sibling_binary(const std::string& name) {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string self(buf, size_t(n));
  const std::string bin = self.substr(0, self.rfind('/') + 1) + name;
  return std::filesystem::is_regular_file(bin) ? bin : "";
}
inline std::string eval_binary() { return sibling_binary("eval"); }

// Runs a shell command; returns its exit status and (in *output) stdout + stderr.
inline int run_command(const std::string& command, std::string* output) {
  const std::string log = ::testing::TempDir() + "/eval_cli_" + std::to_string(::getpid()) + ".log";
  const int status = std::system((command + " > '" + log + "' 2>&1").c_str());
  if (output) *output = read_bytes(log);
  std::remove(log.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace ll::test
