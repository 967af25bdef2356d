// Llama-3.x and Qwen2 folders in and out: tests/fixtures/{llama3,qwen2}_tiny (transformers' save_pretrained of the
// family fixtures' models) read by our loader; our adapter and merged folder — trained with LongLoRA's factor 2 on
// top of the base's RoPE — checked by transformers + peft (recorded in tests/fixtures/family_interop.json by
// scripts/make_family_fixtures.py --check-ours).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/tensor_host.h"
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
#include "util/random.h"
#include "util/sha256.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
constexpr double kTrainRopeFactor = 2.0;  // TRAIN_ROPE_FACTOR in scripts/make_family_fixtures.py

struct Family {
  const char* name;     // folder under the interop directory
  const char* folder;   // tests/fixtures/<folder>
  const char* fixture;  // the family_<fixture>.safetensors whose weights the folder holds
};
constexpr Family kFamilies[] = {{"llama3", "llama3_tiny", "llama3_pi2_lora"}, {"qwen2", "qwen2_tiny", "qwen2_full"}};

std::string folder_of(const Family& f) { return test::fixtures_dir() + "/" + f.folder; }

TEST(FamilyFolder, TransformersSavedFoldersLoadWithTheirWeightsAndLogits) {
  ASSERT_FALSE(test::fixtures_dir().empty()) << "tests/fixtures is committed; run from the repository root";
  std::unique_ptr<Backend> backend = create_backend("cpu-f64");
  for (const Family& f : kFamilies) {
    const SafetensorsFile ref(test::fixtures_dir() + "/family_" + f.fixture + ".safetensors");
    const HfConfig cfg = read_hf_config(folder_of(f));  // transformers 5's form: rope_parameters, `dtype`
    ModelOptions o;
    o.config = cfg.model;
    o.batch = 1, o.seq_len = 4;
    Model model(*backend, o);
    load_hf_weights(folder_of(f), model.params(), *backend);
    for (Param& p : model.params().all())
      EXPECT_EQ(download_f64(*backend, p.value), test::file_values(ref.entry(p.name))) << f.folder << ": " << p.name;
  }
  const HfConfig llama3 = read_hf_config(folder_of(kFamilies[0]));
  EXPECT_TRUE(llama3.model.rope_llama3 == (RopeLlama3{2.0, 1.0, 4.0, 64}));
  EXPECT_EQ(llama3.model.rope_theta, 100.0);
  // qwen2_tiny is qwen2_full's model (tied, biases): its logits are the fixture's.
  const SafetensorsFile q(test::fixtures_dir() + "/family_qwen2_full.safetensors");
  int64_t batch = 0, seq = 0;
  const std::vector<int32_t> ids = test::fixture_ids(q, batch, seq);
  EXPECT_LT(test::rel_error(test::folder_logits(*backend, folder_of(kFamilies[1]), ids, batch, seq),
                            test::file_values(q.entry("logits"))),
            4e-6);  // transformers' float32 RoPE (tests/test_family_fixtures.cpp)
}

// Writes <dir>/adapter, <dir>/merged and <dir>/ours_logits.safetensors deterministically from the family's folder:
// LoRA r 4 / alpha 8 on q,k,v,o_proj, embed_tokens and every RMSNorm trained (LongLoRA's embed,norm), "trained"
// values drawn at random, LongLoRA's factor from model_max_length = 2 × max_position_embeddings (2) recorded; then
// build/merge's pipeline. Returns the merged folder's config.
HfConfig write_interop_case(const Family& f, const std::string& dir) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  const SafetensorsFile ref(test::fixtures_dir() + "/family_" + f.fixture + ".safetensors");
  int64_t batch = 0, seq = 0;
  const std::vector<int32_t> ids = test::fixture_ids(ref, batch, seq);
  ModelOptions o;
  o.config = read_hf_config(folder_of(f)).model;
  const int64_t model_max_length = 2 * o.config.max_position_embeddings;
  o.config.rope_scaling_factor =
      derive_rope_factor(model_max_length, o.config.max_position_embeddings, o.config.rope_scaling_factor);
  EXPECT_EQ(o.config.rope_scaling_factor, kTrainRopeFactor);
  o.lora.rank = 4, o.lora.alpha = 8;
  o.lora.targets = parse_lora_targets("q_proj,k_proj,v_proj,o_proj", o.config);
  o.trainable = TrainableConfig::parse("embed,norm");
  o.batch = batch, o.seq_len = seq;
  Model model(*backend, o);
  load_hf_weights(folder_of(f), model.params(), *backend);
  Rng rng(2026);
  for (Param& p : model.params().all()) {
    if (!p.trainable) continue;
    std::vector<double> v = download_f64(*backend, p.value);
    for (double& x : v) x = (p.role == ParamRole::LoraA || p.role == ParamRole::LoraB) ? rng.uniform(-0.3, 0.3)
                                                                                       : x + rng.uniform(-0.1, 0.1);
    upload_f64(*backend, p.value, v);
  }
  AdapterSaveOptions ao;
  ao.base_model_name_or_path = std::string("tests/fixtures/") + f.folder;
  ao.record = LongLoraRecord{kTrainRopeFactor, model_max_length, o.config.vocab_size};
  save_adapter(dir + "/adapter", model.params(), *backend, o.lora, ao);
  const std::vector<double> lora_logits = model.logits(ids.data());

  MergeOptions m;
  m.base_model = folder_of(f);
  m.peft_model = dir + "/adapter";
  m.save_path = dir + "/merged";
  m.max_shard_bytes = 40000;
  m.dtype = "f32";
  std::ostringstream log;
  merge_adapter_folder(m, log);
  const std::vector<double> merged_logits = test::folder_logits(*backend, m.save_path, ids, batch, seq);
  EXPECT_LT(test::rel_error(merged_logits, lora_logits), 1e-5) << f.name;

  const std::vector<float> lf(lora_logits.begin(), lora_logits.end()), mf(merged_logits.begin(), merged_logits.end());
  const int64_t rows = int64_t(ids.size()), vocab = o.config.vocab_size;
  write_safetensors(dir + "/ours_logits.safetensors",
                    {{"input_ids", DType::I32, {batch, seq}, ids.data()},
                     {"lora_logits", DType::F32, {rows, vocab}, lf.data()},
                     {"merged_logits", DType::F32, {rows, vocab}, mf.data()}});
  return read_hf_config(m.save_path);
}

TEST(FamilyInterop, MergedConfigsCarryTheTrainingRope) {
  test::TempDir temp;
  const HfConfig llama3 = write_interop_case(kFamilies[0], temp / "llama3");
  // LongLoRA's factor 2 composed into the llama3 rule (docs/architecture.md): factor 2 × 2, context doubled.
  EXPECT_EQ(llama3.model.rope_scaling_factor, 1.0);
  EXPECT_EQ(llama3.model.rope_llama3.factor, 4.0);
  EXPECT_EQ(llama3.model.max_position_embeddings, 512);
  const HfConfig qwen2 = write_interop_case(kFamilies[1], temp / "qwen2");
  EXPECT_EQ(qwen2.model.model_type, "qwen2");
  EXPECT_EQ(qwen2.model.rope_scaling_factor, kTrainRopeFactor);
  EXPECT_TRUE(qwen2.model.qkv_bias);
  EXPECT_TRUE(qwen2.model.tie_word_embeddings);
}

TEST(FamilyInterop, MatchesRecordedCheck) {
  ASSERT_FALSE(test::fixtures_dir().empty()) << "tests/fixtures is committed; run from the repository root";
  // LL_FAMILY_INTEROP_DIR: set by the rerun steps in scripts/make_family_fixtures.py
  const test::InteropOutput output("LL_FAMILY_INTEROP_DIR", {"llama3", "qwen2"});
  ASSERT_TRUE(output.usable());
  std::vector<std::string> folders;
  for (const Family& f : kFamilies) {
    write_interop_case(f, output.dir() + "/" + f.name);
    for (const char* sub : {"adapter", "merged"}) folders.push_back(std::string(f.name) + "/" + sub);
  }
  const std::string record_path = test::fixtures_dir() + "/family_interop.json";
  if (output.kept() && !fs::exists(record_path)) GTEST_SKIP() << "no record yet: run the --check-ours step";
  const nlohmann::json record = nlohmann::json::parse(read_text_file(record_path));
  for (const auto& [versions, check] : record.at("runs").items())
    test::expect_files_match_record(check, output.dir(), folders, versions, "scripts/make_family_fixtures.py");
  EXPECT_GE(record.at("runs").size(), 1u);
}

}  // namespace
}  // namespace ll
