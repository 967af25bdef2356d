// Tokenizer wrapper: golden ids with the real Llama-2 tokenizer (skipped when the shared asset is absent),
// and always-on behaviour with a small tokenizer trained by spm_train.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/spm_model_info.h"
#include "data/tokenizer.h"
#include "data/tokenizer_path.h"
#include "data/utf8.h"
#include "test_data_util.h"
#include "util/error.h"
#include "util/md5.h"
#include "test_util.h"

using ll::Tokenizer;
using ll::test::TempDir;
using Ids = std::vector<int32_t>;

namespace {

// Random strings over an alphabet full of whitespace runs, newlines, digits, multi-byte characters, a literal
// "▁" and invalid UTF-8: the places where a cut could go wrong.
std::vector<std::string> tricky_texts(int count) {
  const char* atoms[] = {" ",     " ",     " ",    "  ",  "\n", "\t",   "a", "ka", "lo",           "the",
                         "The",   "12",    "7",    "é",   "ж",  "🦙", ".", ",",  "\xe2\x96\x81", "mine",
                         "héllo", "wörld", "\xff", "\xc3"};
  uint64_t state = 99;
  std::vector<std::string> texts;
  for (int t = 0; t < count; ++t) {
    std::string s;
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const int n = 1 + int((state >> 33) % 60);
    for (int i = 0; i < n; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      s += atoms[(state >> 33) % 24];
    }
    texts.push_back(s);
  }
  return texts;
}

// Encoding the parts equals encoding the whole, for cuts as dense as possible and sparser ones.
void expect_split_is_exact(const Tokenizer& tok, const std::vector<std::string>& texts) {
  int64_t cuts = 0;
  for (const std::string& text : texts)
    for (size_t min_bytes : {size_t(1), size_t(2), size_t(7), size_t(40)}) {
      const std::vector<std::string_view> parts = tok.split_for_encoding(text, min_bytes);
      ASSERT_FALSE(parts.empty());
      std::string joined;
      Ids ids;
      for (size_t i = 0; i < parts.size(); ++i) {
        if (i + 1 < parts.size()) {
          EXPECT_GE(parts[i].size(), min_bytes);
        }
        joined += (i ? " " : "") + std::string(parts[i]);
        tok.encode_append(parts[i], &ids);
      }
      ASSERT_EQ(joined, text) << "the cuts must drop exactly one space each";
      ASSERT_EQ(ids, tok.encode(text, false, false)) << "text `" << text << "` min_bytes " << min_bytes;
      cuts += int64_t(parts.size()) - 1;
    }
  EXPECT_GT(cuts, int64_t(texts.size()));  // the property was exercised
}

using ll::test::error_of;

}  // namespace

TEST(TokenizerChecksum, Md5KnownVectors) {
  EXPECT_EQ(ll::md5_hex("", 0), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(ll::md5_hex("abc", 3), "900150983cd24fb0d6963f7d28e17f72");
  const std::string fox = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(ll::md5_hex(fox.data(), fox.size()), "9e107d9d372bb6826bd81d3542a419d6");
  // 56..64-byte tails need a second padding block.
  const std::string digits = "12345678901234567890123456789012345678901234567890123456789012345678901234567890";
  EXPECT_EQ(ll::md5_hex(digits.data(), digits.size()), "57edf4a22be3c955ac49da2e2107b67a");
  const std::string a(64, 'a');
  EXPECT_EQ(ll::md5_hex(a.data(), 55), "ef1772b6dff9a122358552954ad0df65");  // padding fits one block
  EXPECT_EQ(ll::md5_hex(a.data(), 57), "652b906d60af96844ebd21b674f35e93");  // padding needs a second block
  EXPECT_EQ(ll::md5_hex(a.data(), 64), "014842d480b571495a4a0363793f7367");  // exact block
}

TEST(TokenizerLlama2, GoldenIds) {
  LL_REQUIRE_LLAMA2_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  EXPECT_EQ(tok.encode("I believe the meaning of life is", true, false),
            (Ids{1, 306, 4658, 278, 6593, 310, 2834, 338}));
  EXPECT_EQ(tok.encode("Hello world", false, false), (Ids{15043, 3186}));
  EXPECT_EQ(tok.encode(" Hello world", false, false), (Ids{29871, 15043, 3186}));
  EXPECT_EQ(tok.encode("12345", false, false), (Ids{29871, 29896, 29906, 29941, 29946, 29945}));
  EXPECT_EQ(tok.encode("héllo 🦙", false, false), (Ids{298, 3610, 417, 29871, 243, 162, 169, 156}));
  EXPECT_EQ(tok.encode("\n", false, false), (Ids{29871, 13}));
  EXPECT_EQ(tok.encode("Hello world", true, true), (Ids{1, 15043, 3186, 2}));
  EXPECT_EQ(tok.encode("", true, true), (Ids{1, 2}));
}

TEST(TokenizerLlama2, SpecialIdsAndChecksum) {
  LL_REQUIRE_LLAMA2_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), -1);
  EXPECT_EQ(tok.piece(1), "<s>");
  EXPECT_EQ(tok.piece(2), "</s>");
  EXPECT_EQ(tok.piece(3), "<0x00>");
  EXPECT_EQ(tok.piece(29871), "\xe2\x96\x81");  // the lone ▁
  EXPECT_EQ(tok.md5(), "eeec4125e9c7560836b4873b6f8e3025");
}

TEST(TokenizerLlama2, DecodeRoundTripAndTextIsNeverSpecial) {
  LL_REQUIRE_LLAMA2_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  for (const std::string text : {"I believe the meaning of life is", "héllo 🦙", "  two leading spaces",
                                 "tabs\tand\nnewlines\n\n", "12345 + 678 = 13023", "中文 and ελληνικά"})
    EXPECT_EQ(tok.decode(tok.encode(text, true, true)), text) << "text: " << text;
  // "</s>" as text is spelled out (unlike HF); EOS must be inserted by id.
  const Ids ids = tok.encode("a</s>b", false, false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 0);
  EXPECT_EQ(tok.decode(ids), "a</s>b");
}

TEST(TokenizerSmall, LoadsWithLlamaLikeSpecialIds) {
  LL_REQUIRE_SMALL_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  EXPECT_EQ(tok.vocab_size(), 400);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), -1);
  EXPECT_EQ(tok.piece(3), "<0x00>");
  EXPECT_EQ(tok.path(), path);
  const std::string bytes = ll::test::read_bytes(path);
  EXPECT_EQ(tok.md5(), ll::md5_hex(bytes.data(), bytes.size()));
}

TEST(TokenizerSmall, EncodeAddsBosEosByIdOnly) {
  LL_REQUIRE_SMALL_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  const Ids plain = tok.encode("kalo mine", false, false);
  ASSERT_FALSE(plain.empty());
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1) + std::count(plain.begin(), plain.end(), 2), 0);
  Ids with = tok.encode("kalo mine", true, true);
  ASSERT_EQ(with.size(), plain.size() + 2);
  EXPECT_EQ(with.front(), 1);
  EXPECT_EQ(with.back(), 2);
  EXPECT_EQ(Ids(with.begin() + 1, with.end() - 1), plain);
  EXPECT_EQ(tok.encode("kalo mine", false, true), Ids(with.begin() + 1, with.end()));
  EXPECT_EQ(tok.encode("kalo mine", true, false), Ids(with.begin(), with.end() - 1));
  Ids appended = {7};
  tok.encode_append("kalo mine", &appended);
  EXPECT_EQ(Ids(appended.begin() + 1, appended.end()), plain);
  const Ids special_text = tok.encode("<s></s>", false, false);
  EXPECT_EQ(
      std::count(special_text.begin(), special_text.end(), 1) + std::count(special_text.begin(), special_text.end(), 2),
      0);
}

TEST(TokenizerSmall, DecodeRoundTripWithByteFallback) {
  LL_REQUIRE_SMALL_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  for (const std::string text :
       {"kalo mine 123", "héllo wörld", "unseen: 🦙 ζ ж", " lead  and   inner spaces", "line\nbreaks\n"}) {
    const Ids ids = tok.encode(text, true, true);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
    EXPECT_EQ(tok.decode(ids), text);
  }
  // Characters never seen in training become byte pieces (ids 3..258), not <unk>.
  const Ids llama = tok.encode("🦙", false, false);
  EXPECT_EQ(std::count(llama.begin(), llama.end(), 0), 0);
  EXPECT_GE(std::count_if(llama.begin(), llama.end(), [](int32_t id) { return id >= 3 && id < 259; }), 4);
}

TEST(TokenizerSmall, ErrorsNameThePathOrId) {
  LL_REQUIRE_SMALL_TOKENIZER(path);
  TempDir dir;
  const std::string missing = dir.file("no_such_tokenizer.model");
  std::string e = error_of([&] { Tokenizer::load(missing); });
  EXPECT_NE(e.find(missing), std::string::npos) << e;
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;
  const std::string junk = dir.file("junk.model");
  ll::test::write_bytes(junk, "this is not a sentencepiece model\n");
  e = error_of([&] { Tokenizer::load(junk); });
  EXPECT_NE(e.find(junk), std::string::npos) << e;
  EXPECT_NE(e.find("not a valid sentencepiece model"), std::string::npos) << e;
  e = error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(e.find(dir.path()), std::string::npos) << e;

  const Tokenizer tok = Tokenizer::load(path);
  e = error_of([&] { tok.decode({5, 400}); });
  EXPECT_NE(e.find("id 400 at position 1"), std::string::npos) << e;
  e = error_of([&] { tok.decode({-1}); });
  EXPECT_NE(e.find("id -1"), std::string::npos) << e;
  e = error_of([&] { tok.piece(400); });
  EXPECT_NE(e.find("id 400"), std::string::npos) << e;
}

// --tokenizer may name a model folder: the tokenizer inside it is used (every binary loads through Tokenizer::load).
TEST(TokenizerSmall, ModelFolderResolvesToTheTokenizerInside) {
  LL_REQUIRE_SMALL_TOKENIZER(path);
  TempDir dir;
  std::filesystem::copy_file(path, dir.file("tokenizer.model"));
  EXPECT_EQ(ll::resolve_tokenizer_path(dir.path()), dir.file("tokenizer.model"));
  EXPECT_EQ(ll::resolve_tokenizer_path(path), path);  // a file stays as given
  const Tokenizer tok = Tokenizer::load(dir.path());
  EXPECT_EQ(tok.path(), dir.file("tokenizer.model"));
  EXPECT_EQ(tok.vocab_size(), 400);
}

// A folder with both files uses tokenizer.json, as transformers does.
TEST(TokenizerSmall, ModelFolderPrefersTokenizerJson) {
  LL_REQUIRE_SMALL_TOKENIZER(path);
  TempDir dir;
  std::filesystem::copy_file(path, dir.file("tokenizer.model"));
  std::filesystem::copy_file(ll::test::fixtures_dir() + "/tokenizers/synthetic-llama2.tokenizer.json",
                             dir.file("tokenizer.json"));
  EXPECT_EQ(ll::resolve_tokenizer_path(dir.path()), dir.file("tokenizer.json"));
  EXPECT_EQ(ll::find_tokenizer_in(dir.path()), dir.file("tokenizer.json"));
  const Tokenizer tok = Tokenizer::load(dir.path());
  EXPECT_EQ(tok.kind(), std::string("tokenizer.json"));
  EXPECT_EQ(Tokenizer::load(dir.file("tokenizer.model")).kind(), std::string("sentencepiece"));
  std::filesystem::remove(dir.file("tokenizer.model"));
  std::filesystem::remove(dir.file("tokenizer.json"));
  EXPECT_EQ(ll::find_tokenizer_in(dir.path()), "");
}

// Invalid UTF-8: sentencepiece reads each invalid byte as U+FFFD, the rule the project applies to both kinds (the
// tokenize job repairs text first), so repairing changes no Llama-2 id.
TEST(TokenizerLlama2, InvalidUtf8GivesTheIdsOfPerByteReplacement) {
  LL_REQUIRE_LLAMA2_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  int invalid = 0;
  std::vector<std::string> texts = tricky_texts(300);
  for (const char* extra : {"a\xed\xa0\x80" "b", "\xc0\x80", "\xe0\x80\x80", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80",
                            "\xe2\x82", "x\xf0\x9f\xa6", "\x80\x80 z"})
    texts.push_back(extra);
  for (const std::string& text : texts) {
    std::string repaired;
    invalid += ll::replace_invalid_utf8(text, &repaired) > 0;
    EXPECT_EQ(tok.encode(text, false, false), tok.encode(repaired, false, false)) << text;
  }
  EXPECT_GT(invalid, 50);
}

// Literal control-piece strings: text by default (sentencepiece's own behaviour), their ids when asked, the text
// between them encoded piece by piece.
TEST(TokenizerLlama2, SpecialTokenStringsInTextFollowThePolicy) {
  LL_REQUIRE_LLAMA2_TOKENIZER(path);
  const Tokenizer text_mode = Tokenizer::load(path);
  ll::TokenizerOptions parse;
  parse.parse_special_tokens = true;
  const Tokenizer parse_mode = Tokenizer::load(path, parse);
  const Ids as_text = text_mode.encode("Hi</s>there<s>", false, false);
  EXPECT_EQ(std::count(as_text.begin(), as_text.end(), 2), 0);
  Ids expected = text_mode.encode("Hi", false, false);
  expected.push_back(2);
  const Ids there = text_mode.encode("there", false, false);
  expected.insert(expected.end(), there.begin(), there.end());
  expected.push_back(1);
  EXPECT_EQ(parse_mode.encode("Hi</s>there<s>", false, false), expected);
  EXPECT_FALSE(parse_mode.can_split()) << "pieces get their own dummy prefix: cutting is not exact then";
  EXPECT_EQ(parse_mode.decode(expected, /*keep_special=*/true), "Hi</s>there<s>");
  EXPECT_EQ(parse_mode.decode(expected), "Hi there");
  EXPECT_EQ(text_mode.encode_with_special_tokens("Hi"), text_mode.encode("Hi", true, false));
}

TEST(TokenizerSmall, FolderWithoutTokenizerSaysWhatWasLookedFor) {
  TempDir dir;
  const std::string e = error_of([&] { ll::resolve_tokenizer_path(dir.path()); });
  EXPECT_NE(e.find(dir.file("tokenizer.model")), std::string::npos) << e;
  EXPECT_NE(e.find("is a folder"), std::string::npos) << e;
  const std::string missing = dir.file("nowhere");
  EXPECT_NE(error_of([&] { ll::resolve_tokenizer_path(missing); }).find(missing + "` does not exist"),
            std::string::npos);
}

TEST(TokenizerSmall, MoveKeepsTheModel) {
  LL_REQUIRE_SMALL_TOKENIZER(path);
  Tokenizer a = Tokenizer::load(path);
  const Ids ids = a.encode("kalo", true, false);
  Tokenizer b = std::move(a);
  EXPECT_EQ(b.encode("kalo", true, false), ids);
  EXPECT_EQ(b.path(), path);
}

TEST(TokenizerLlama2, SplitEncodingEqualsWholeEncoding) {
  LL_REQUIRE_LLAMA2_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  ASSERT_TRUE(tok.can_split());
  expect_split_is_exact(tok, tricky_texts(400));
  expect_split_is_exact(tok, {"  In the beginning God created the heaven and the earth.\n  2 And the earth was "
                              "without form, and void;   and darkness was upon the face of the deep. ",
                              "x y", "x  y", " x", "x ", "x\n y"});
  const std::optional<ll::SpmModelInfo> info = ll::read_spm_model_info(ll::test::read_bytes(path));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->model_type, 2);
  EXPECT_EQ(info->normalizer_name, "identity");
  EXPECT_FALSE(info->has_charsmap);
  EXPECT_TRUE(info->add_dummy_prefix);
  EXPECT_FALSE(info->remove_extra_whitespaces);
  EXPECT_TRUE(info->escape_whitespaces);
  EXPECT_FALSE(info->treat_whitespace_as_suffix);
}

TEST(TokenizerSmall, SplitEncodingEqualsWholeEncoding) {
  LL_REQUIRE_SMALL_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  ASSERT_TRUE(tok.can_split());
  expect_split_is_exact(tok, tricky_texts(400));
  // Where a cut may go: before a space that follows another character, leaving a non-empty rest.
  EXPECT_EQ(tok.split_for_encoding("ab cd  ef ", 1), (std::vector<std::string_view>{"ab", "cd", " ef "}));
  // A literal "▁" is a space to sentencepiece, so no cut right after it.
  EXPECT_EQ(tok.split_for_encoding("ab\xe2\x96\x81 cd", 1), (std::vector<std::string_view>{"ab\xe2\x96\x81 cd"}));
  EXPECT_EQ(tok.split_for_encoding("ab cd  ef ", 4), (std::vector<std::string_view>{"ab cd", " ef "}));
  EXPECT_EQ(tok.split_for_encoding("   ", 1), (std::vector<std::string_view>{"   "}));
  EXPECT_EQ(tok.split_for_encoding("", 1), (std::vector<std::string_view>{""}));
}

TEST(TokenizerSmall, NormalizingModelIsNeverSplit) {
  // NFKC rewrites characters and whitespace runs are collapsed, so a cut could change ids: encode whole.
  LL_REQUIRE_TRAINED_TOKENIZER(path, ll::test::small_nfkc_tokenizer());
  const Tokenizer tok = Tokenizer::load(path);
  EXPECT_FALSE(tok.can_split());
  EXPECT_EQ(tok.split_for_encoding("ab cd ef gh", 1), (std::vector<std::string_view>{"ab cd ef gh"}));
  const std::optional<ll::SpmModelInfo> info = ll::read_spm_model_info(ll::test::read_bytes(path));
  ASSERT_TRUE(info.has_value());
  EXPECT_TRUE(info->has_charsmap);
  EXPECT_TRUE(info->remove_extra_whitespaces);
  // And why it matters: with whitespace removal, cutting "a  b" would not give the whole text's ids.
  EXPECT_NE(tok.encode("ab  cd", false, false), tok.encode("ab ", false, false));
}

TEST(TokenizerSmall, ModelInfoRejectsMalformedProtobuf) {
  EXPECT_FALSE(ll::read_spm_model_info(std::string("\x0a\xff\xff", 3)).has_value());  // length past the end
  EXPECT_FALSE(ll::read_spm_model_info(std::string("\x0b", 1)).has_value());          // group wire type
  EXPECT_TRUE(ll::read_spm_model_info("").has_value());  // empty message: every field at its default
}
