// Mistral folders out: our peft adapter and merged folder made from tests/fixtures/mistral_tiny (sliding window 5),
// checked by transformers + peft (recorded in tests/fixtures/mistral_interop.json by
// scripts/make_mistral_fixtures.py --check-ours); and build/eval perplexity honouring the folder's window.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>
#include <sstream>

#include "core/tensor_host.h"
#include "eval/commands.h"
#include "hf_test_util.h"
#include "interop_record.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/merge.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/param_select.h"
#include "parity_fixture.h"
#include "util/files.h"
#include "util/sha256.h"

namespace ll {
namespace {

namespace fs = std::filesystem;

std::string mistral_tiny_dir() {
  const std::string dir = test::fixtures_dir();
  return dir.empty() ? "" : dir + "/mistral_tiny";
}

// adapter/ (LoRA r 4 / alpha 8 on q,k,v,o_proj; embed_tokens and every RMSNorm trained by LongLoRA's embed,norm rule;
// random "trained" values), merged/ (build/merge's pipeline)
// and ours_logits.safetensors, deterministically from the committed mistral_tiny.
void write_interop_case(const std::string& dir) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  const SafetensorsFile ref(test::fixtures_dir() + "/mistral_window_full.safetensors");
  const std::vector<int32_t> ids = test::ids_of(ref, "input_ids");
  const int64_t batch = ref.entry("input_ids").shape[0], seq = ref.entry("input_ids").shape[1];
  ModelOptions o;
  o.config = read_hf_config(mistral_tiny_dir()).model;
  o.lora.rank = 4, o.lora.alpha = 8;
  o.lora.targets = parse_lora_targets("q_proj,k_proj,v_proj,o_proj", o.config);
  o.trainable = TrainableConfig::parse("embed,norm");
  o.batch = batch, o.seq_len = seq;
  Model model(*backend, o);
  load_hf_weights(mistral_tiny_dir(), model.params(), *backend);
  Rng rng(2019);
  for (Param& p : model.params().all()) {
    if (!p.trainable) continue;
    std::vector<double> v = download_f64(*backend, p.value);
    for (double& x : v) x = (p.role == ParamRole::LoraA || p.role == ParamRole::LoraB) ? rng.uniform(-0.3, 0.3)
                                                                                       : x + rng.uniform(-0.1, 0.1);
    upload_f64(*backend, p.value, v);
  }
  AdapterSaveOptions ao;
  ao.base_model_name_or_path = "tests/fixtures/mistral_tiny";
  // No position interpolation: transformers 4.46's Mistral would ignore a rope_scaling in the merged config.json.
  ao.record = LongLoraRecord{1.0, o.config.max_position_embeddings, o.config.vocab_size};
  save_adapter(dir + "/adapter", model.params(), *backend, o.lora, ao);
  const std::vector<double> lora_logits = model.logits(ids.data());

  MergeOptions m;
  m.base_model = mistral_tiny_dir();
  m.peft_model = dir + "/adapter";
  m.save_path = dir + "/merged";
  m.dtype = "f32";
  std::ostringstream log;
  merge_adapter_folder(m, log);
  const std::vector<double> merged_logits = test::folder_logits(*backend, m.save_path, ids, batch, seq);
  EXPECT_LT(test::rel_error(merged_logits, lora_logits), 1e-5);
  const HfConfig merged = read_hf_config(m.save_path);
  EXPECT_EQ(merged.model.model_type, "mistral");
  EXPECT_EQ(merged.model.sliding_window, 5);

  const std::vector<float> lf(lora_logits.begin(), lora_logits.end()), mf(merged_logits.begin(), merged_logits.end());
  const int64_t rows = int64_t(ids.size()), vocab = o.config.vocab_size;
  write_safetensors(dir + "/ours_logits.safetensors",
                    {{"input_ids", DType::I32, {batch, seq}, ids.data()},
                     {"lora_logits", DType::F32, {rows, vocab}, lf.data()},
                     {"merged_logits", DType::F32, {rows, vocab}, mf.data()}});
}

TEST(MistralInterop, MatchesRecordedCheck) {
  ASSERT_FALSE(mistral_tiny_dir().empty()) << "tests/fixtures/mistral_tiny is committed; run from the repository root";
  // LL_MISTRAL_INTEROP_DIR: set by the rerun steps in scripts/make_mistral_fixtures.py
  const test::InteropOutput output("LL_MISTRAL_INTEROP_DIR", {"adapter", "merged", "ours_logits.safetensors"});
  ASSERT_TRUE(output.usable());
  write_interop_case(output.dir());

  const nlohmann::json record = nlohmann::json::parse(read_text_file(test::fixtures_dir() + "/mistral_interop.json"));
  for (const auto& [versions, check] : record.at("runs").items())
    test::expect_files_match_record(check, output.dir(), {"adapter", "merged"}, versions, "scripts/make_mistral_fixtures.py");
  EXPECT_GE(record.at("runs").size(), 1u);
}

// build/eval perplexity reads the folder's window: the same weights with `sliding_window` null score differently,
// and the windowed score is the model's (cpu-f64 logits through Model, whose mask carries the window).
TEST(MistralEval, PerplexityUsesTheFoldersSlidingWindow) {
  ASSERT_FALSE(mistral_tiny_dir().empty());
  test::TempDir dir;
  const std::string no_window = dir / "no_window";
  fs::copy(mistral_tiny_dir(), no_window);
  nlohmann::json config = nlohmann::json::parse(read_text_file(no_window + "/config.json"));
  config["sliding_window"] = nullptr;
  write_file_atomic(no_window + "/config.json", config.dump(2));
  std::string bytes;
  Rng rng(19);
  for (int i = 0; i < 100; ++i) {  // raw uint16 ids below mistral_tiny's vocabulary of 29
    const auto id = uint16_t(rng.uniform(0, 29.0));
    bytes.push_back(char(id & 0xff)), bytes.push_back(char(id >> 8));
  }
  const std::string tokens = dir / "tokens.bin";
  write_file_atomic(tokens, bytes);
  auto loss = [&](const std::string& base) {
    PerplexityCommand p;
    p.common.base_model = base;
    p.common.progress = false;
    p.data_path = tokens;
    p.seq_len = 16, p.batch_size = 1, p.sliding_window = 16;  // (the eval's stride, not Mistral's window)
    std::ostringstream out, log;
    return run_perplexity_command(p, out, log)["loss"].get<double>();
  };
  const double windowed = loss(mistral_tiny_dir()), full = loss(no_window);
  EXPECT_GT(std::abs(windowed - full), 1e-3 * full) << windowed << " vs " << full;
}

}  // namespace
}  // namespace ll
