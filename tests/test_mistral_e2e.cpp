// Mistral end to end with the real Mistral-7B-v0.1 tokenizer (tokenizers/mistral-7b-v0.1 of the shared assets;
// skipped with the reason when absent): a tiny random Mistral folder (GQA 4/2, sliding_window 8, shorter than every
// context used here) holding that tokenizer is tokenized with, SFT-trained on LongAlpaca-style records with the
// mistral template (S2 + window), and used by generate and passkey (the protocol, not the accuracy).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "data/tokenizer.h"
#include "eval/commands.h"
#include "eval/passkey.h"
#include "eval_test_util.h"
#include "io/hf_config.h"
#include "train/trainer.h"
#include "util/files.h"

namespace ll {
namespace {

constexpr int64_t kWindow = 8;

// The model folder, or "" when the tokenizer is not available.
std::string mistral_folder(const test::TempDir& dir) {
  const std::string tok = test::asset_path("tokenizers/mistral-7b-v0.1/tokenizer.json");
  if (tok.empty()) return "";
  const std::filesystem::path src = std::filesystem::path(tok).parent_path();
  const std::string model = dir.file("model");
  make_directories(model);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(src / f, std::filesystem::path(model) / f);
  ModelConfig c;  // GQA 4/2 heads of Dh 4, two layers
  c.model_type = "mistral";
  c.hidden_size = 16, c.intermediate_size = 24, c.num_attention_heads = 4, c.num_key_value_heads = 2;
  c.num_hidden_layers = 2, c.vocab_size = 32000;
  c.sliding_window = kWindow;
  c.max_position_embeddings = 512;
  test::write_random_hf_folder(model, c, 19, 0.4);
  return model;
}

#define LL_REQUIRE_MISTRAL_FOLDER(var, dir)                                                                 \
  const std::string var = mistral_folder(dir);                                                              \
  if (var.empty())                                                                                          \
  GTEST_SKIP() << "tokenizers/mistral-7b-v0.1 not found in $LONGLORA_ASSETS or ../shared/assets (the shared " \
                  "assets are not part of the repository)"

TEST(MistralEndToEnd, FolderTokenizesAsTheMistralTokenizerAndKeepsItsWindow) {
  test::TempDir dir;
  LL_REQUIRE_MISTRAL_FOLDER(model, dir);
  const Tokenizer tok = Tokenizer::load(model);
  EXPECT_EQ(tok.kind(), std::string("tokenizer.json"));
  EXPECT_EQ(tok.encode_with_special_tokens("Hello world"), (std::vector<int32_t>{1, 22557, 1526}))
      << "tokenizers 0.22: Tokenizer.from_file(mistral tokenizer.json).encode('Hello world').ids";
  const HfConfig cfg = read_hf_config(model);
  EXPECT_EQ(cfg.model.model_type, "mistral");
  EXPECT_EQ(cfg.model.sliding_window, kWindow);
}

TEST(MistralEndToEnd, SftWithTheMistralTemplateUnderS2AndTheWindow) {
  test::TempDir dir;
  LL_REQUIRE_MISTRAL_FOLDER(model, dir);
  nlohmann::json records = nlohmann::json::array();  // LongAlpaca's .json: a list of {instruction, output}
  for (int i = 0; i < 4; ++i)
    records.push_back({{"instruction", "Summarise the paper in one line, please: part " + std::to_string(i)},
                       {"output", "It extends the context of a model cheaply."}});
  write_file_atomic(dir.file("sft.json"), records.dump());
  TrainOptions o;
  o.model_name_or_path = model;
  o.sft_data_path = dir.file("sft.json");
  o.output_dir = dir.file("out");
  o.model_max_length = 64;
  o.per_device_train_batch_size = 1;
  o.lora_r = 4;
  o.learning_rate = 1e-3;
  o.max_steps = 2;
  o.save_steps = 0;
  testing::internal::CaptureStderr();
  const TrainResult r = run_training(o, {});
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.steps, 2) << log;
  EXPECT_TRUE(std::isfinite(r.last_loss) && r.last_loss > 1.0) << log;  // ~ln(32000) untrained
  EXPECT_NE(log.find("chat template mistral"), std::string::npos) << log;
  EXPECT_NE(log.find("attention S2 (leak-free) + sliding window 8 |"), std::string::npos) << log;
}

TEST(MistralEndToEnd, GenerateAndPasskeyDecodePastTheWindow) {
  test::TempDir dir;
  LL_REQUIRE_MISTRAL_FOLDER(model, dir);
  GenerateCommand g;
  g.common.base_model = model;
  g.common.progress = false;
  g.prompt = "Tell me about long contexts.";
  g.temperature = 0;
  g.max_gen_len = 12;
  std::ostringstream out, log;
  const nlohmann::json j = run_generate_command(g, out, log);
  EXPECT_NE(log.str().find("chat template mistral"), std::string::npos) << log.str();
  EXPECT_GT(j["prompt_tokens"].get<int64_t>() + 12, kWindow);
  EXPECT_EQ(j["tokens"].size(), 12u) << "EOS is unlikely from random weights at temperature 0: " << j.dump();

  PasskeyCommand p;
  p.common.base_model = model;
  p.common.progress = false;
  p.max_tokens = 400, p.interval = 300, p.num_tests = 2, p.prefill_chunk = 128;
  const nlohmann::json pk = run_passkey_command(p, out, log);
  const Tokenizer tok = Tokenizer::load(model);
  ASSERT_EQ(pk["points"].size(), 1u);
  for (const auto& t : pk["points"][0]["trials"]) {
    EXPECT_GT(t["prompt_tokens"].get<int64_t>(), kWindow);
    EXPECT_EQ(t["generated_ids"].size(), t["answer_ids"].size());
  }
}

}  // namespace
}  // namespace ll
