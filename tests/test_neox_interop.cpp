// GPT-NeoX folders in and out: tests/fixtures/neox_tiny (transformers' save_pretrained of the neox_par_q_pi2_full
// fixture's model: sharded, transformers 5's config.json) read by our loader; our adapter and merged folder checked by
// transformers + peft (recorded in tests/fixtures/neox_interop.json by scripts/make_neox_fixtures.py --check-ours).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/tensor_host.h"
#include "hf_test_util.h"
#include "interop_record.h"
#include "data/token_file.h"
#include "eval/commands.h"
#include "eval/perplexity.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/merge.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/describe.h"
#include "model/model.h"
#include "model/registry.h"
#include "model/param_select.h"
#include "parity_fixture.h"
#include "util/files.h"
#include "util/sha256.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
constexpr double kTrainRopeFactor = 4.0;  // TRAIN_ROPE_FACTOR in scripts/make_neox_fixtures.py

std::string neox_tiny_dir() {
  const std::string dir = test::fixtures_dir();
  return dir.empty() ? "" : dir + "/neox_tiny";
}

TEST(NeoxFolder, TransformersSavedFolderGivesItsLogits) {
  ASSERT_FALSE(neox_tiny_dir().empty()) << "tests/fixtures/neox_tiny is committed; run from the repository root";
  const SafetensorsFile ref(test::fixtures_dir() + "/neox_par_q_pi2_full.safetensors");
  int64_t batch = 0, seq = 0;
  const std::vector<int32_t> ids = test::fixture_ids(ref, batch, seq);
  const HfConfig cfg = read_hf_config(neox_tiny_dir());
  EXPECT_EQ(cfg.model.model_type, "gpt_neox");
  EXPECT_EQ(cfg.model.rotary_dims, 2);  // rope_parameters.partial_rotary_factor 0.25 of Dh 8
  EXPECT_EQ(cfg.model.rope_scaling_factor, 2.0);
  EXPECT_TRUE(cfg.model.parallel_residual);
  std::unique_ptr<Backend> backend = create_backend("cpu-f64");
  EXPECT_LT(test::rel_error(test::folder_logits(*backend, neox_tiny_dir(), ids, batch, seq),
                            test::file_values(ref.entry("logits"))),
            2e-7);
}

// Writes adapter/, merged/ and ours_logits.safetensors into `dir`, deterministically from the committed neox_tiny:
// LoRA r 4 / alpha 8 on query_key_value and dense, embed_in / embed_out / every LayerNorm trained (LongLoRA's
// embed,norm), "trained" values drawn at random, RoPE factor 4 recorded; then build/merge's pipeline.
void write_interop_case(const std::string& dir) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  const SafetensorsFile ref(test::fixtures_dir() + "/neox_par_q_pi2_full.safetensors");
  int64_t batch = 0, seq = 0;
  const std::vector<int32_t> ids = test::fixture_ids(ref, batch, seq);
  ModelOptions o;
  o.config = read_hf_config(neox_tiny_dir()).model;
  o.config.rope_scaling_factor = kTrainRopeFactor;
  o.lora.rank = 4, o.lora.alpha = 8;
  o.lora.targets = parse_lora_targets("query_key_value,dense", o.config);
  o.trainable = TrainableConfig::parse("embed,norm");
  o.batch = batch, o.seq_len = seq;
  Model model(*backend, o);
  load_hf_weights(neox_tiny_dir(), model.params(), *backend);
  Rng rng(2025);
  for (Param& p : model.params().all()) {
    if (!p.trainable) continue;
    std::vector<double> v = download_f64(*backend, p.value);
    for (double& x : v) x = (p.role == ParamRole::LoraA || p.role == ParamRole::LoraB) ? rng.uniform(-0.3, 0.3)
                                                                                       : x + rng.uniform(-0.1, 0.1);
    upload_f64(*backend, p.value, v);
  }
  AdapterSaveOptions ao;
  ao.base_model_name_or_path = "tests/fixtures/neox_tiny";
  ao.record = LongLoraRecord{kTrainRopeFactor, 256, o.config.vocab_size};  // ceil(256 / (64 × 1)) = 4
  save_adapter(dir + "/adapter", model.params(), *backend, o.lora, ao);
  const std::vector<double> lora_logits = model.logits(ids.data());

  MergeOptions m;
  m.base_model = neox_tiny_dir();
  m.peft_model = dir + "/adapter";
  m.save_path = dir + "/merged";
  m.max_shard_bytes = 40000;
  m.dtype = "f32";
  std::ostringstream log;
  merge_adapter_folder(m, log);
  const std::vector<double> merged_logits = test::folder_logits(*backend, m.save_path, ids, batch, seq);
  EXPECT_LT(test::rel_error(merged_logits, lora_logits), 1e-5);
  const HfConfig merged = read_hf_config(m.save_path);
  EXPECT_EQ(merged.model.model_type, "gpt_neox");
  EXPECT_EQ(merged.model.rope_scaling_factor, kTrainRopeFactor);
  EXPECT_EQ(merged.model.rotary_dims, 2);

  const std::vector<float> lf(lora_logits.begin(), lora_logits.end()), mf(merged_logits.begin(), merged_logits.end());
  const int64_t rows = int64_t(ids.size()), vocab = o.config.vocab_size;
  write_safetensors(dir + "/ours_logits.safetensors",
                    {{"input_ids", DType::I32, {batch, seq}, ids.data()},
                     {"lora_logits", DType::F32, {rows, vocab}, lf.data()},
                     {"merged_logits", DType::F32, {rows, vocab}, mf.data()}});
}

TEST(NeoxInterop, MatchesRecordedCheck) {
  ASSERT_FALSE(neox_tiny_dir().empty()) << "tests/fixtures/neox_tiny is committed; run from the repository root";
  // LL_NEOX_INTEROP_DIR: set by the rerun steps in scripts/make_neox_fixtures.py
  const test::InteropOutput output("LL_NEOX_INTEROP_DIR", {"adapter", "merged", "ours_logits.safetensors"});
  ASSERT_TRUE(output.usable());
  write_interop_case(output.dir());

  const nlohmann::json record = nlohmann::json::parse(read_text_file(test::fixtures_dir() + "/neox_interop.json"));
  for (const auto& [versions, check] : record.at("runs").items())
    test::expect_files_match_record(check, output.dir(), {"adapter", "merged"}, versions, "scripts/make_neox_fixtures.py");
  EXPECT_GE(record.at("runs").size(), 1u);
}


TEST(NeoxFolder, InfoDescribesTheArchitecture) {
  ASSERT_FALSE(neox_tiny_dir().empty());
  const std::string text = describe_model(read_hf_config(neox_tiny_dir()).model);
  for (const char* line : {"model_type: gpt_neox (GPTNeoXForCausalLM)\n", "parameters: 16928 ", "layers: 2\n",
                           "attention_heads: 4 of 8 dims, 4 key/value heads\n", "rotary: 2 of 8 head dims",
                           "factor 2\n", "residual: parallel", "intermediate_size: 48 (gelu)\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << " not in:\n" << text;
  // The Pythia presets have the published sizes (Biderman et al. 2023, total parameters with vocabulary 50304).
  for (const auto& [name, count] : std::vector<std::pair<std::string, int64_t>>{
           {"pythia-70m", 70426624}, {"pythia-160m", 162322944}, {"pythia-410m", 405334016},
           {"pythia-1.4b", 1414647808}}) {
    ModelConfig c;
    ASSERT_TRUE(model_preset(name, &c)) << name;
    EXPECT_NE(describe_model(c).find(str_cat("parameters: ", count, " ")), std::string::npos)
        << name << ":\n" << describe_model(c);
  }
}


// build/eval perplexity on NeoX folders: our adapter applied without merging scores like the merged folder, and
// both like windows scored independently through the merged model's logits.
TEST(NeoxEval, PerplexityOfAdapterMergedFolderAndIndependentScoring) {
  ASSERT_FALSE(neox_tiny_dir().empty());
  test::TempDir dir;
  write_interop_case(dir.path());  // adapter/ (RoPE factor 4 in longlora.json) and merged/
  const int64_t seq = 16, windows_stride = 8, vocab = 29;
  std::string bytes;
  Rng rng(7);
  for (int i = 0; i < 200; ++i) {  // raw uint16 ids below neox_tiny's vocabulary
    const auto id = uint16_t(rng.uniform(0, double(vocab)));
    bytes.push_back(char(id & 0xff)), bytes.push_back(char(id >> 8));
  }
  const std::string tokens = dir / "tokens.bin";
  write_file_atomic(tokens, bytes);

  auto run = [&](const std::string& base, const std::string& adapter) {
    PerplexityCommand p;
    p.common.base_model = base;
    p.common.peft_model = adapter;
    p.common.progress = false;
    p.data_path = tokens;
    p.seq_len = seq, p.batch_size = 2, p.sliding_window = windows_stride;
    std::ostringstream out, log;
    return run_perplexity_command(p, out, log);
  };
  const nlohmann::json with_adapter = run(neox_tiny_dir(), dir / "adapter"), merged = run(dir / "merged", "");
  EXPECT_EQ(with_adapter["model"]["rope_scaling_factor"], 4.0);
  EXPECT_EQ(merged["model"]["rope_scaling_factor"], 4.0);
  EXPECT_NEAR(with_adapter["loss"].get<double>(), merged["loss"].get<double>(), 1e-5);

  std::unique_ptr<Backend> backend = create_backend("cpu-f64");
  ModelOptions mo;
  mo.config = read_hf_config(dir / "merged").model;
  mo.batch = 1, mo.seq_len = seq;
  Model model(*backend, mo);
  load_hf_weights(dir / "merged", model.params(), *backend);
  const TokenFile data(tokens, vocab);
  std::vector<int32_t> ids(size_t(data.size()));
  data.read(0, data.size(), ids.data());
  double sum = 0;
  int64_t count = 0;
  for (int64_t start : perplexity_window_starts(data.size(), seq, windows_stride, true)) {
    const std::vector<double> logits = model.logits(ids.data() + start);
    for (int64_t l = 0; l + 1 < seq; ++l) {
      const double* row = logits.data() + l * vocab;
      double mx = row[0], z = 0;
      for (int j = 1; j < vocab; ++j) mx = std::max(mx, row[j]);
      for (int j = 0; j < vocab; ++j) z += std::exp(row[j] - mx);
      sum += mx + std::log(z) - row[ids[size_t(start + l + 1)]], ++count;
    }
  }
  EXPECT_EQ(merged["tokens_scored"].get<int64_t>(), count);
  EXPECT_NEAR(merged["perplexity_token_weighted"].get<double>() / std::exp(sum / double(count)), 1.0, 1e-5);
}

}  // namespace
}  // namespace ll
