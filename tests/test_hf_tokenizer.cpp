// tokenizer.json files: ids identical to the `tokenizers` library on a varied corpus for the four shipped
// tokenizers (tests/fixtures/tokenizers/, made by scripts/make_tokenizer_fixtures.py; the tokenizer files themselves
// are shared assets, skipped when absent), decoding, special-token policy, splitting long texts, bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "data/tokenizer_path.h"
#include "data/utf8.h"
#include "test_data_util.h"
#include "util/error.h"
#include "test_util.h"

using ll::Tokenizer;
using ll::test::TempDir;
using Ids = std::vector<int32_t>;
using Json = nlohmann::json;

namespace {

// The four shipped tokenizers (shared assets) and three small ones made by the fixture script (committed).
const char* const kFamilies[] = {"gpt-neox", "llama3", "qwen2.5", "mistral-7b-v0.1",
                                 "synthetic-bytelevel", "synthetic-metaspace", "synthetic-llama2"};

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
  if (family.rfind("synthetic-", 0) == 0) return ll::test::fixtures_dir() + "/tokenizers/" + family + ".tokenizer.json";
  return ll::test::asset_path("tokenizers/" + family + "/tokenizer.json");
}

#define LL_REQUIRE_TOKENIZER_ASSET(var, family)                                                              \
  const std::string var = tokenizer_asset(family);                                                          \
  if (var.empty())                                                                                          \
  GTEST_SKIP() << "tokenizers/" << family << "/tokenizer.json not found in $LONGLORA_ASSETS or ../shared/assets " \
                  "(shared assets are not part of the project); ids not checked against tokenizers"

using ll::test::error_of;

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

// Random texts over atoms that sit where a cut could go wrong: spaces before letters, newlines, runs of spaces,
// contractions, digits, combining marks, special-token strings, the Metaspace character, emoji, invalid UTF-8.
std::vector<std::string> cut_texts(int count) {
  const char* atoms[] = {" ",      " ",     "  ",   "\n",  "\n\n", "\t",     "a",     "Abc",  " Abc",          "\nAbc",
                         "x",      ".",     "'s",   "'S",   "don't", "12",    "12345", "é",    "e\u0301",       "ж",
                         "🦙",     "\xe2\x96\x81", "<|endoftext|>", "</s>", "<s>", "<|im_end|>", "[MASK]", "hello",
                         "\r\n", "\xff",  "ＡＢ",  "-",    ",;"};
  const size_t n_atoms = sizeof atoms / sizeof atoms[0];
  uint64_t state = 2024;
  std::vector<std::string> texts;
  for (int t = 0; t < count; ++t) {
    std::string s;
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const int n = 1 + int((state >> 33) % 120);
    for (int i = 0; i < n; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      s += atoms[(state >> 33) % n_atoms];
    }
    texts.push_back(s);
  }
  return texts;
}

TEST_P(HfTokenizerFamily, EncodingInPartsGivesTheIdsOfTheWhole) {
  LL_REQUIRE_TOKENIZER_ASSET(path, GetParam());
  for (bool parse_special : {false, true}) {
    ll::TokenizerOptions options;
    options.parse_special_tokens = parse_special;
    const Tokenizer tok = Tokenizer::load(path, options);
    int64_t cuts = 0;
    for (const std::string& text : cut_texts(150))
      for (size_t min_bytes : {size_t(1), size_t(3), size_t(20)}) {
        const std::vector<std::string_view> parts = tok.split_for_encoding(text, min_bytes);
        ASSERT_FALSE(parts.empty());
        std::string joined;
        Ids ids;
        for (size_t i = 0; i < parts.size(); ++i) {
          if (i + 1 < parts.size()) EXPECT_GE(parts[i].size(), min_bytes);
          joined += std::string(parts[i]);
          tok.encode_part(parts[i], i == 0, &ids);
        }
        ASSERT_EQ(joined, text) << "tokenizer.json parts keep every byte";
        ASSERT_EQ(ids, tok.encode(text, false, false)) << "text `" << text << "` min_bytes " << min_bytes
                                                       << " parse_special " << parse_special;
        cuts += int64_t(parts.size()) - 1;
      }
    const std::string family = GetParam();
    if (family.rfind("synthetic-", 0) == 0) {
      EXPECT_FALSE(tok.can_split()) << "no cut rule is known for this pipeline";
      EXPECT_EQ(cuts, 0);
    } else {
      EXPECT_TRUE(tok.can_split());
      EXPECT_GT(cuts, 150) << "the property was exercised";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shipped, HfTokenizerFamily, ::testing::ValuesIn(kFamilies),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// A minimal tokenizer.json: vocabulary a, b, ab, c; one merge; components spliced in by the tests.
std::string tiny_json(const std::string& extra = "", const std::string& merges = R"(["a b"])",
                      const std::string& model_extra = "") {
  return R"({"version": "1.0", )" + extra + R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3},
          "merges": )" + merges + model_extra + "}}";
}

std::string load_error(const std::string& json) {
  TempDir dir;
  ll::test::write_bytes(dir.file("tokenizer.json"), json);
  return error_of([&] { Tokenizer::load(dir.file("tokenizer.json")); });
}

TEST(HfTokenizerFile, TinyModelMergesInBothForms) {
  TempDir dir;
  for (const std::string merges : {std::string(R"(["a b"])"), std::string(R"([["a", "b"]])")}) {
    ll::test::write_bytes(dir.file("tokenizer.json"), tiny_json("", merges));
    const Tokenizer tok = Tokenizer::load(dir.path());  // a folder with tokenizer.json
    EXPECT_EQ(tok.path(), dir.file("tokenizer.json"));
    EXPECT_EQ(tok.encode("abcab", false, false), (Ids{2, 3, 2}));
    EXPECT_EQ(tok.decode({2, 3}), "ab c") << "no decoder: tokens joined by spaces, as tokenizers does";
    EXPECT_EQ(tok.vocab_size(), 4);
    EXPECT_EQ(tok.bos_id(), -1);
    EXPECT_NE(error_of([&] { tok.encode("a", true, false); }).find("has no BOS token"), std::string::npos);
  }
}

TEST(HfTokenizerFile, BadFilesGiveErrorsNamingTheProblem) {
  struct Case {
    std::string json, expect;
  } cases[] = {
      {"", "is empty"},
      {"{\"model\": ", "is not valid JSON"},
      {"[1, 2]", "expected a JSON object at the top"},
      {"{\"normalizer\": null}", "no `model`"},
      {tiny_json(R"("normalizer": {"type": "Lowercase"}, )"), "normalizer: normalizer type `Lowercase` is not supported"},
      {tiny_json(R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "x"},
        "behavior": "Isolated", "invert": false}, {"type": "Digits", "individual_digits": true}]}, )"),
       "pre_tokenizer.pretokenizers[1]: pre_tokenizer type `Digits` is not supported"},
      {tiny_json(R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"},
        {"type": "Metaspace", "replacement": "_"}]}, )"), "ByteLevel must come last"},
      {tiny_json(R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(ab"}, "behavior": "Isolated",
        "invert": false}, )"), "pre_tokenizer.pattern: regex `(ab` does not compile"},
      {tiny_json(R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "x"}, "behavior": "Sideways",
        "invert": false}, )"), "unknown split behavior `Sideways`"},
      {tiny_json(R"("decoder": {"type": "WordPiece", "prefix": "##"}, )"), "decoder: decoder type `WordPiece` is not supported"},
      {tiny_json(R"("post_processor": {"type": "RobertaProcessing"}, )"), "post_processor type `RobertaProcessing` is not supported"},
      {tiny_json("", R"(["a zz"])"), "model.merges[0]: token `zz` is not in the vocabulary"},
      {tiny_json("", R"(["b c"])"), "model.merges[0]: merged token `bc` is not in the vocabulary"},
      {tiny_json("", R"(["abc"])"), "model.merges[0]: `abc` is not two tokens separated by one space"},
      {tiny_json("", R"([["a"]])"), "model.merges[0]: expected \"a b\" or [\"a\", \"b\"]"},
      {tiny_json("", R"(["a b"])", R"(, "unk_token": "<unk>")"), "model.unk_token: `<unk>` is not in the vocabulary"},
      {tiny_json("", R"(["a b"])", R"(, "dropout": 0.1)"), "BPE dropout makes encoding random"},
      {R"({"model": {"type": "WordPiece", "vocab": {}}})", "model type `WordPiece` is not supported"},
      {R"({"model": {"type": "BPE", "vocab": {}, "merges": []}})", "model.vocab: the vocabulary is empty"},
      {R"({"model": {"type": "BPE", "vocab": {"a": -3}, "merges": []}})", "token `a` has id -3"},
      {tiny_json(R"("added_tokens": [{"id": 7, "content": ""}], )"), "added_tokens[0].content: an added token cannot be empty"},
  };
  for (const Case& c : cases) {
    const std::string e = load_error(c.json);
    EXPECT_NE(e.find(c.expect), std::string::npos) << "for `" << c.json << "`\n got: " << e;
    if (!c.json.empty()) EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
  }
}

TEST(HfTokenizerFile, TokenizerConfigGivesTheSpecialTokens) {
  TempDir dir;
  ll::test::write_bytes(dir.file("tokenizer.json"), tiny_json(R"("added_tokens": [{"id": 4, "content": "<s>",
      "special": true}, {"id": 5, "content": "</s>", "special": true}], )"));
  ll::test::write_bytes(dir.file("tokenizer_config.json"),
                        R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "pad_token": "c", "unk_token": null})");
  const Tokenizer tok = Tokenizer::load(dir.path());
  EXPECT_EQ(tok.bos_id(), 4);
  EXPECT_EQ(tok.eos_id(), 5);
  EXPECT_EQ(tok.pad_id(), 3);
  EXPECT_EQ(tok.unk_id(), -1);
  EXPECT_EQ(tok.encode("ab", true, true), (Ids{4, 2, 5}));
  EXPECT_EQ(tok.decode({4, 2, 5}), "ab");
  EXPECT_EQ(tok.decode({4, 2, 5}, /*keep_special=*/true), "<s> ab </s>");
  ll::test::write_bytes(dir.file("tokenizer_config.json"), R"({"eos_token": "<nope>"})");
  const std::string e = error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(e.find("tokenizer_config.json: eos_token `<nope>` is not a token"), std::string::npos) << e;
  ll::test::write_bytes(dir.file("tokenizer_config.json"), "{oops");
  EXPECT_NE(error_of([&] { Tokenizer::load(dir.path()); }).find("tokenizer_config.json: not valid JSON"),
            std::string::npos);
}

// Literal special-token strings: text by default, their ids with parse_special_tokens (the tokenizers default).
TEST(HfTokenizerFile, SpecialTokenStringsInTextFollowThePolicy) {
  const std::string path = tokenizer_asset("synthetic-llama2");
  const Tokenizer text_mode = Tokenizer::load(path);
  ll::TokenizerOptions parse;
  parse.parse_special_tokens = true;
  const Tokenizer parse_mode = Tokenizer::load(path, parse);
  const int32_t eos = text_mode.token_to_id("</s>");
  ASSERT_EQ(eos, 2);
  const Ids as_text = text_mode.encode("a</s>b", false, false);
  const Ids parsed = parse_mode.encode("a</s>b", false, false);
  EXPECT_EQ(std::count(as_text.begin(), as_text.end(), eos), 0);
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), eos), 1);
  EXPECT_EQ(text_mode.decode(as_text), "a</s>b");
  EXPECT_TRUE(text_mode.is_special(eos));
  EXPECT_FALSE(text_mode.is_special(text_mode.token_to_id("<0x41>")));
}

// Invalid UTF-8: each invalid byte is read as U+FFFD, so the ids equal those of the repaired text.
TEST(HfTokenizerFile, InvalidUtf8IsReadAsReplacementCharacters) {
  const Tokenizer tok = Tokenizer::load(tokenizer_asset("synthetic-bytelevel"));
  const std::string bad = "ok \xff\xfe \xc3( \xe2\x82 \xed\xa0\x80 end \xc3";
  std::string repaired;
  EXPECT_EQ(ll::replace_invalid_utf8(bad, &repaired), 9u);
  EXPECT_EQ(repaired, "ok \uFFFD\uFFFD \uFFFD( \uFFFD\uFFFD \uFFFD\uFFFD\uFFFD end \uFFFD");
  EXPECT_EQ(tok.encode(bad, false, false), tok.encode(repaired, false, false));
}

TEST(Utf8, DecodingValidityAndBothRepairRules) {
  char32_t cp = 0;
  EXPECT_EQ(ll::utf8_decode("\xf0\x9f\xa6\x99", 0, &cp), 4u);
  EXPECT_EQ(cp, char32_t(0x1F999));
  for (const char* bad : {"\xc0\x80", "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\xe2\x82"})
    EXPECT_FALSE(ll::is_valid_utf8(bad)) << bad;
  EXPECT_TRUE(ll::is_valid_utf8("plain ascii \xc3\xa9 \xe2\x82\xac"));
  // Rust's from_utf8_lossy: one U+FFFD per maximal subpart ("\xe2\x82" is one, "\xed\xa0\x80" three).
  EXPECT_EQ(ll::utf8_lossy("a\xe2\x82" "b\xed\xa0\x80" "c\xff"), "a\uFFFD" "b\uFFFD\uFFFD\uFFFD" "c\uFFFD");
  std::string out;
  EXPECT_EQ(ll::replace_invalid_utf8("a\xe2\x82" "b", &out), 2u);
  EXPECT_EQ(out, "a\uFFFD\uFFFD" "b");
  EXPECT_EQ(ll::replace_invalid_utf8("fine", &out), 0u);
  EXPECT_EQ(out, "fine");
}

}  // namespace
