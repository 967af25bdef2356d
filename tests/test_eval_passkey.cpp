// `build/eval passkey` end to end on a tiny random model with the Llama-2 vocabulary: the sweep, the prompts the
// model saw (token counts of LongLoRA's prompts), scoring by exact token match, the JSON, and prefix reuse giving the
// same answers as fresh prefills.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "data/tokenizer.h"
#include "eval/commands.h"
#include "eval/passkey.h"
#include "eval_test_util.h"

namespace ll {
namespace {

TEST(EvalPasskey, SweepScoresAndReportsLikeTheReference) {
  LL_REQUIRE_LLAMA2_TOKENIZER(tokenizer);
  test::TempDir dir;
  test::write_random_hf_folder(dir.path(), test::small_config(32000, 64), 8, 0.4);
  PasskeyCommand c;
  c.common.base_model = dir.path();
  c.common.device = "cpu-f64";  // exact enough that prefix reuse cannot flip a greedy choice
  c.common.progress = false;
  c.common.json = dir.file("passkey.json");
  c.tokenizer = tokenizer;
  c.max_tokens = 700, c.interval = 300, c.num_tests = 3, c.prefill_chunk = 128;
  std::ostringstream out, log;
  const nlohmann::json j = run_passkey_command(c, out, log);
  std::printf("%s", out.str().c_str());
  const Tokenizer tok = Tokenizer::load(tokenizer);
  ASSERT_EQ(j["points"].size(), 2u);  // 700 // 300 lengths: n_garbage 1024, 2048
  EXPECT_EQ(j["points"][0]["n_garbage_chars"], 1024);
  EXPECT_EQ(j["points"][1]["n_garbage_chars"], 2048);
  for (const auto& p : j["points"]) {
    int64_t total = 0, correct = 0;
    ASSERT_EQ(p["trials"].size(), 3u);
    for (const auto& t : p["trials"]) {
      const PasskeyPrompt pp = passkey_prompt(p["n_garbage_chars"], t["seed"].get<uint32_t>());
      EXPECT_EQ(t["key"], pp.pass_key);
      EXPECT_DOUBLE_EQ(t["depth"].get<double>(), pp.depth);
      EXPECT_EQ(t["prompt_tokens"], tok.encode(pp.text, true, false).size());
      const auto answer = t["answer_ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(answer, tok.encode(pp.answer, false, false));
      const auto generated = t["generated_ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(generated.size(), answer.size()) << "exactly len(answer) tokens are generated";
      EXPECT_EQ(t["correct"].get<bool>(), generated == answer);
      total += t["prompt_tokens"].get<int64_t>(), correct += t["correct"].get<bool>();
    }
    EXPECT_DOUBLE_EQ(p["mean_prompt_tokens"].get<double>(), double(total) / 3);
    EXPECT_EQ(p["reference_tokens"], total / 3);
    EXPECT_DOUBLE_EQ(p["accuracy"].get<double>(), double(correct) / 3);
    EXPECT_EQ(j["accuracy_by_tokens"][std::to_string(total / 3)], p["accuracy"]);
  }
  EXPECT_EQ(nlohmann::json::parse(read_text_file(c.common.json))["points"], j["points"]);
  EXPECT_NE(out.str().find("n_garbage"), std::string::npos);

  c.reuse_prefix = false;
  c.common.json.clear();
  const nlohmann::json fresh = run_passkey_command(c, out, log);
  for (size_t i = 0; i < 2; ++i)
    for (size_t k = 0; k < 3; ++k)
      EXPECT_EQ(fresh["points"][i]["trials"][k]["generated_ids"], j["points"][i]["trials"][k]["generated_ids"]);

  c.interval = 100;  // n_garbage = int(375 // 1024 * 1024) = 0: the reference's randint(0, 0) would raise
  c.max_tokens = 100;
  EXPECT_THROW(run_passkey_command(c, out, log), Error);
}

// A Pythia-like folder (GPT-NeoX's tokenizer.json, no tokenizer.model): passkey finds the tokenizer through the
// folder rule and the prompts are tokenizer(prompt) — no BOS for GPT-NeoX, whose post-processor adds none (its
// bos_token <|endoftext|> exists but transformers does not add it).
TEST(EvalPasskey, TokenizerJsonModelFolder) {
  const std::string shipped = test::asset_path("tokenizers/gpt-neox/tokenizer.json");
  if (shipped.empty()) GTEST_SKIP() << "tokenizers/gpt-neox not found in $LONGLORA_ASSETS or ../shared/assets";
  test::TempDir dir;
  std::filesystem::copy_file(shipped, dir.file("tokenizer.json"));
  test::write_random_hf_folder(dir.path(), test::small_config(50304, 64), 8, 0.4);
  PasskeyCommand c;
  c.common.base_model = dir.path();
  c.common.progress = false;
  c.max_tokens = 400, c.interval = 300, c.num_tests = 2, c.prefill_chunk = 128;
  std::ostringstream out, log;
  const nlohmann::json j = run_passkey_command(c, out, log);
  const Tokenizer tok = Tokenizer::load(dir.path());
  ASSERT_EQ(tok.kind(), std::string("tokenizer.json"));
  EXPECT_EQ(tok.encode_with_special_tokens("Hello world"), (std::vector<int32_t>{12092, 1533}));
  ASSERT_EQ(j["points"].size(), 1u);
  for (const auto& t : j["points"][0]["trials"]) {
    const PasskeyPrompt pp = passkey_prompt(j["points"][0]["n_garbage_chars"], t["seed"].get<uint32_t>());
    EXPECT_EQ(t["prompt_tokens"], tok.encode(pp.text, false, false).size());
    EXPECT_EQ(t["answer_ids"].get<std::vector<int32_t>>(), tok.encode(pp.answer, false, false));
    EXPECT_EQ(t["generated_ids"].size(), t["answer_ids"].size());
  }
}

}  // namespace
}  // namespace ll
