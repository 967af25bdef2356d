// Llama-3 and Qwen2.5 end to end with their real tokenizers (../shared/assets/tokenizers/{llama3,qwen2.5}; each test
// skips with the reason when the asset is absent): a tiny random model folder of the family (128256 / 151936-token
// vocabulary, GQA, the family's RoPE) with the tokenizer beside it; tokenize text into a uint32 token file, SFT on
// LongAlpaca-style records in the family's chat template with S2-Attn, passkey and generate. The protocol, not the
// accuracy: the model is random.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/chat_template.h"
#include "data/token_file.h"
#include "data/tokenize_job.h"
#include "data/tokenizer.h"
#include "eval/commands.h"
#include "eval/passkey.h"
#include "eval_test_util.h"
#include "train/data.h"
#include "train/trainer.h"
#include "util/files.h"

namespace ll {
namespace {

struct FamilyAsset {
  const char* tokenizer_dir;  // under tokenizers/
  const char* model_type;
  int64_t vocab;              // the released models' vocab_size (embedding rows)
  const char* chat_template;  // what auto resolves to
};
constexpr FamilyAsset kLlama3{"llama3", "llama", 128256, "llama3"};
constexpr FamilyAsset kQwen25{"qwen2.5", "qwen2", 151936, "chatml"};

// A tiny random folder of the family with the shipped tokenizer files beside its weights; "" when the asset is
// absent.
std::string make_family_folder(const FamilyAsset& f, const test::TempDir& dir) {
  const std::string shipped = test::asset_path(std::string("tokenizers/") + f.tokenizer_dir + "/tokenizer.json");
  if (shipped.empty()) return "";
  const std::string from = shipped.substr(0, shipped.rfind('/'));
  for (const auto& e : std::filesystem::directory_iterator(from))
    std::filesystem::copy_file(e.path(), dir.file(e.path().filename().string()));
  ModelConfig c = test::small_config(f.vocab, 512);
  c.model_type = f.model_type;
  if (c.model_type == "qwen2") {
    c.qkv_bias = true, c.rope_theta = 1e6, c.tie_word_embeddings = true;  // Qwen2.5-0.5B's choices
  } else {
    c.rope_theta = 500000.0, c.max_position_embeddings = 2048;  // Llama-3.1's RoPE, scaled down
    c.rope_llama3 = RopeLlama3{8.0, 1.0, 4.0, 256};
  }
  test::write_random_hf_folder(dir.path(), c, 11, 0.4);
  return dir.path();
}

#define LL_FAMILY_FOLDER(var, family, dir)                                                                     \
  const std::string var = make_family_folder(family, dir);                                                     \
  if (var.empty())                                                                                             \
    GTEST_SKIP() << "tokenizers/" << family.tokenizer_dir << " not found in $LONGLORA_ASSETS or ../shared/assets"

class FamilyEndToEnd : public ::testing::TestWithParam<FamilyAsset> {};

TEST_P(FamilyEndToEnd, GenerateUsesTheFamilysTemplateAndTokenizer) {
  const FamilyAsset f = GetParam();
  test::TempDir dir;
  LL_FAMILY_FOLDER(folder, f, dir);
  GenerateCommand c;
  c.common.base_model = folder;
  c.common.progress = false;
  c.prompt = "Hello world";
  c.temperature = 0;
  c.max_gen_len = 3;
  std::ostringstream out, log;
  const nlohmann::json j = run_generate_command(c, out, log);
  EXPECT_NE(log.str().find(std::string("chat template ") + f.chat_template + ", tokenizer tokenizer.json"),
            std::string::npos)
      << log.str();
  const Tokenizer tok = Tokenizer::load(folder);
  const ChatStyle style = resolve_chat_style(f.chat_template, folder, tok);
  const std::string rendered = chat_text(render_chat(style, {{"user", "Hello world"}}, true));
  const std::string prompt = j["prompt"];  // without the BOS segment, which generate adds by id
  ASSERT_GE(rendered.size(), prompt.size());
  EXPECT_EQ(rendered.substr(rendered.size() - prompt.size()), prompt);
  EXPECT_NE(prompt.find("Hello world"), std::string::npos);
  EXPECT_EQ(j["prompt_tokens"], encode_chat(tok, render_chat(style, {{"user", "Hello world"}}, true)).size());
  EXPECT_GE(j["tokens"].size(), 1u);
  for (const auto& id : j["tokens"]) EXPECT_LT(id.get<int64_t>(), f.vocab);
}

TEST_P(FamilyEndToEnd, PasskeyPromptsAndAnswersInTheFamilysTokens) {
  const FamilyAsset f = GetParam();
  test::TempDir dir;
  LL_FAMILY_FOLDER(folder, f, dir);
  PasskeyCommand c;
  c.common.base_model = folder;
  c.common.progress = false;
  c.max_tokens = 400, c.interval = 300, c.num_tests = 2, c.prefill_chunk = 128;
  std::ostringstream out, log;
  const nlohmann::json j = run_passkey_command(c, out, log);
  const Tokenizer tok = Tokenizer::load(folder);
  ASSERT_EQ(j["points"].size(), 1u);
  for (const auto& t : j["points"][0]["trials"]) {
    const PasskeyPrompt pp = passkey_prompt(j["points"][0]["n_garbage_chars"], t["seed"].get<uint32_t>());
    EXPECT_EQ(t["answer_ids"].get<std::vector<int32_t>>(), tok.encode(pp.answer, false, false));
    EXPECT_EQ(t["generated_ids"].size(), t["answer_ids"].size());
  }
}

TEST_P(FamilyEndToEnd, TokenizeThenSftWithTheFamilysTemplateAndS2) {
  const FamilyAsset f = GetParam();
  test::TempDir dir;
  LL_FAMILY_FOLDER(folder, f, dir);
  // Text to a token file: ids above 65535 need llm.c's uint32 format.
  write_file_atomic(dir.file("docs.jsonl"), nlohmann::json{{"text", "Long context, short model."}}.dump() + "\n");
  TokenizeOptions to;
  to.inputs = {dir.file("docs.jsonl")};
  to.output = dir.file("docs.bin");
  to.tokenizer = folder;
  to.bos = f.model_type == std::string("llama");  // Qwen's tokenizer has no BOS token
  tokenize_corpus(to);
  EXPECT_EQ(read_sidecar(dir.file("docs.bin")).format, "llmc_uint32");

  // LongAlpaca-style records (instruction, optional input, output).
  std::string jsonl;
  for (int i = 0; i < 3; ++i)
    jsonl += nlohmann::json{{"instruction", "Summarise the passage " + std::to_string(i) + "."},
                            {"input", "The quick brown fox jumps over the lazy dog."},
                            {"output", "A fox jumps."}}
                 .dump() +
             "\n";
  write_file_atomic(dir.file("sft.jsonl"), jsonl);
  TrainOptions o;
  o.model_name_or_path = folder;
  o.sft_data_path = dir.file("sft.jsonl");
  test::TempDir out_dir;  // outside the model folder
  o.output_dir = out_dir.file("out");
  o.model_max_length = 64;
  o.use_s2attn = true;  // GQA: 4 query heads on 2 KV heads
  o.lora_r = 4;
  o.learning_rate = 1e-3;
  o.per_device_train_batch_size = 1;
  o.max_steps = 2;
  o.save_steps = 0;
  testing::internal::CaptureStderr();
  const TrainResult r = run_training(o, {});
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.steps, 2) << log;
  EXPECT_NE(log.find(std::string("SFT prompts: chat template ") + f.chat_template), std::string::npos) << log;
  std::ifstream metrics(o.output_dir + "/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line); ++lines)
    EXPECT_TRUE(std::isfinite(nlohmann::json::parse(line).at("loss").get<double>())) << line;
  EXPECT_EQ(lines, 2);
  // The examples are the family's template: its first token, the prompt masked, the end-of-turn token last.
  const Tokenizer tok = Tokenizer::load(folder);
  const ChatStyle style = resolve_chat_style("auto", folder, tok);
  EXPECT_EQ(std::string(chat_template_name(style.kind)), f.chat_template);
  const SftExample ex = make_sft_example(tok, "Summarise.", "", "A fox jumps.", 64, style);
  EXPECT_LT(ex.prompt_tokens, int64_t(ex.ids.size()));
  EXPECT_EQ(ex.ids.front(), tok.token_to_id(f.model_type == std::string("llama") ? "<|begin_of_text|>" : "<|im_start|>"));
  EXPECT_EQ(ex.ids.back(), end_of_turn_id(style, tok));
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyEndToEnd, ::testing::Values(kLlama3, kQwen25),
                         [](const auto& info) { return std::string(info.param.model_type); });

}  // namespace
}  // namespace ll
