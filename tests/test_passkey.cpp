// Passkey prompts: LongLoRA's construction (passkey_retrivial.py) reproduced exactly — lengths, prefix position and
// key from numpy's seeds, the text, and with the real Llama-2 tokenizer the token counts and answer ids.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "eval/passkey.h"
#include "test_data_util.h"
#include "test_util.h"
#include "util/error.h"
#include "util/sha256.h"

namespace ll {
namespace {

nlohmann::json fixture() {
  const std::string dir = test::fixtures_dir();
  EXPECT_FALSE(dir.empty()) << "tests/fixtures not found";
  std::ifstream in(dir + "/passkey_reference.json");
  EXPECT_TRUE(in.good()) << "missing tests/fixtures/passkey_reference.json (scripts/make_passkey_fixtures.py)";
  return nlohmann::json::parse(in);
}

TEST(Passkey, LengthSweepMatchesPython) {
  const nlohmann::json fx = fixture();
  ASSERT_FALSE(fx["n_garbage"].empty());
  for (const auto& c : fx["n_garbage"])
    EXPECT_EQ(passkey_garbage_lengths(c["max_tokens"], c["interval"]), c["values"].get<std::vector<int64_t>>())
        << "max_tokens " << c["max_tokens"] << " interval " << c["interval"];
  EXPECT_THROW(passkey_garbage_lengths(100, 1000), Error);  // no length at all
  EXPECT_THROW(passkey_garbage_lengths(1000, 0), Error);
}

TEST(Passkey, PromptTextMatchesTheReference) {
  const nlohmann::json fx = fixture();
  int checked = 0, full = 0;
  for (const auto& c : fx["prompts"]) {
    const PasskeyPrompt p = passkey_prompt(c["n_garbage"], c["seed"].get<uint32_t>());
    const std::string what = "seed " + c["seed"].dump() + " n_garbage " + c["n_garbage"].dump();
    EXPECT_EQ(p.n_prefix, c["n_prefix"].get<int64_t>()) << what;
    EXPECT_EQ(p.pass_key, c["pass_key"].get<int64_t>()) << what;
    EXPECT_EQ(p.answer, std::to_string(c["pass_key"].get<int64_t>())) << what;
    EXPECT_DOUBLE_EQ(p.depth, double(p.n_prefix) / double(p.n_garbage)) << what;
    EXPECT_EQ(int64_t(p.text.size()), c["chars"].get<int64_t>()) << what;
    EXPECT_EQ(sha256_hex(p.text.data(), p.text.size()), c["sha256"].get<std::string>()) << what;
    if (c.contains("prompt")) {
      EXPECT_EQ(p.text, c["prompt"].get<std::string>()) << what;
      ++full;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 40);
  EXPECT_EQ(full, 1);
}

TEST(Passkey, PromptRefusesLengthsTheReferenceCannotBuild) {
  EXPECT_THROW(passkey_prompt(0, 0), Error);       // numpy's randint(0, 0) raises
  EXPECT_THROW(passkey_prompt(450000, 0), Error);  // longer than the 449999-character filler (assert in Python)
  EXPECT_NO_THROW(passkey_prompt(449999, 0));
}

TEST(Passkey, TokenCountsMatchTheLlama2Tokenizer) {
  LL_REQUIRE_LLAMA2_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  const nlohmann::json fx = fixture();
  for (const auto& c : fx["prompts"]) {
    const PasskeyPrompt p = passkey_prompt(c["n_garbage"], c["seed"].get<uint32_t>());
    const std::string what = "seed " + c["seed"].dump() + " n_garbage " + c["n_garbage"].dump();
    const std::vector<int32_t> ids = tok.encode(p.text, true, false);
    EXPECT_EQ(int64_t(ids.size()), c["prompt_tokens"].get<int64_t>()) << what;
    EXPECT_EQ(tok.encode(p.answer, false, false), c["answer_ids"].get<std::vector<int32_t>>()) << what;
    if (c.contains("prompt_ids")) {
      EXPECT_EQ(ids, c["prompt_ids"].get<std::vector<int32_t>>()) << what;
    }
  }
  // formats.md §A6: a 5-digit key is the "▁" piece (29871) and one piece per digit.
  EXPECT_EQ(tok.encode("43568", false, false), (std::vector<int32_t>{29871, 29946, 29941, 29945, 29953, 29947}));
}

}  // namespace
}  // namespace ll
