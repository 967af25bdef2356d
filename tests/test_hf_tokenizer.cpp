// tokenizer.json files: ids identical to the `tokenizers` library on a varied corpus for the four shipped
// tokenizers (tests/fixtures/tokenizers/, made by scripts/make_tokenizer_fixtures.py; the tokenizer files themselves
// are shared assets, skipped when absent), decoding, special-token policy, splitting long texts, bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "data/tokenizer_path.h"
#include "data/utf8.h"
#include "test_data_util.h"
#include "util/error.h"

using ll::Tokenizer;
using ll::test::TempDir;
using Ids = std::vector<int32_t>;
using Json = nlohmann::json;

namespace {

const char* const kFamilies[] = {"gpt-neox", "llama3", "qwen2.5", "mistral-7b-v0.1"};

Json read_fixture(const std::string& name) {
  const std::string path = ll::test::fixtures_dir() + "/tokenizers/" + name;
  const std::string text = ll::test::read_bytes(path);
  EXPECT_FALSE(text.empty()) << "fixture " << path << " is missing";
  return Json::parse(text);
}

// The corpus entries as the bytes to encode (text, or raw bytes with invalid UTF-8).
std::vector<std::string> corpus() {
  std::vector<std::string> out;
  const Json fx = read_fixture("corpus.json");
  for (const Json& c : fx["cases"]) {
    if (c.contains("bytes_hex")) {
      const std::string hex = c["bytes_hex"];
      std::string bytes;
      for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
      out.push_back(bytes);
    } else {
      out.push_back(c["text"]);
    }
  }
  return out;
}

std::string tokenizer_asset(const std::string& family) {
  return ll::test::asset_path("tokenizers/" + family + "/tokenizer.json");
}

#define LL_REQUIRE_TOKENIZER_ASSET(var, family)                                                              \
  const std::string var = tokenizer_asset(family);                                                          \
  if (var.empty())                                                                                          \
  GTEST_SKIP() << "tokenizers/" << family << "/tokenizer.json not found in $LONGLORA_ASSETS or ../shared/assets " \
                  "(shared assets are not part of the project); ids not checked against tokenizers"

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ll::Error& e) {
    return e.what();
  }
  return "(no error)";
}

class HfTokenizerFamily : public ::testing::TestWithParam<const char*> {};

TEST_P(HfTokenizerFamily, IdsAndDecodingMatchTheTokenizersLibrary) {
  LL_REQUIRE_TOKENIZER_ASSET(path, GetParam());
  const Json fx = read_fixture(std::string(GetParam()) + ".json");
  const Tokenizer text_mode = Tokenizer::load(path);
  ll::TokenizerOptions parse;
  parse.parse_special_tokens = true;
  const Tokenizer parse_mode = Tokenizer::load(path, parse);
  EXPECT_EQ(text_mode.kind(), std::string("tokenizer.json"));
  EXPECT_EQ(text_mode.vocab_size(), fx["vocab_size_with_added"].get<int32_t>());
  const std::vector<std::string> texts = corpus();
  ASSERT_EQ(texts.size(), fx["cases"].size()) << "fixture and corpus disagree: rerun scripts/make_tokenizer_fixtures.py";
  const Ids prefix = fx["post_prefix"], suffix = fx["post_suffix"];
  size_t parsed_differs = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const Json& c = fx["cases"][i];
    const std::string& text = texts[i];
    SCOPED_TRACE("corpus entry " + std::to_string(i) + ": `" + text.substr(0, 60) + "`");
    const Ids ids = c["ids"];
    const Ids parsed = c.contains("ids_parse_special") ? c["ids_parse_special"].get<Ids>() : ids;
    parsed_differs += parsed != ids;
    EXPECT_EQ(text_mode.encode(text, false, false), ids);
    EXPECT_EQ(parse_mode.encode(text, false, false), parsed);
    Ids with_special = prefix;
    with_special.insert(with_special.end(), parsed.begin(), parsed.end());
    with_special.insert(with_special.end(), suffix.begin(), suffix.end());
    EXPECT_EQ(parse_mode.encode_with_special_tokens(text), with_special);
    const std::string decoded = c["decoded"];
    EXPECT_EQ(parse_mode.decode(parsed), decoded);
    EXPECT_EQ(parse_mode.decode(parsed, /*keep_special=*/true), c.value("decoded_with_special", decoded));
    EXPECT_EQ(text_mode.decode(ids), c.value("decoded_text_mode", decoded));
  }
  EXPECT_GT(parsed_differs, 0u) << "the corpus holds special-token strings: the two modes must differ somewhere";
}

INSTANTIATE_TEST_SUITE_P(Shipped, HfTokenizerFamily, ::testing::ValuesIn(kFamilies),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

}  // namespace
