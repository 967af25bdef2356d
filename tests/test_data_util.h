// Shared by the tokenizer / token-file / tokenization-job tests: temp dirs, the shared assets folder, and a
// small BPE tokenizer trained with Debian's spm_train once per test-binary run.
#pragma once
#include "test_util.h"
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

namespace ll::test {

// A fresh directory under the gtest temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    std::string templ = ::testing::TempDir() + "ll_data_XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The real Llama-2 tokenizer, or GTEST_SKIP with the reason.
#define LL_REQUIRE_LLAMA2_TOKENIZER(var)                                                                  \
  const std::string var = ::ll::test::asset_path("llama2-tokenizer.model");                               \
  if (var.empty())                                                                                        \
  GTEST_SKIP() << "llama2-tokenizer.model not found in $LONGLORA_ASSETS or ../shared/assets (the shared " \
                  "assets folder is not part of the project); golden Llama-2 ids not checked"

struct SmallTokenizer {
  std::string path, skip_reason, error;
};

// Trains a 400-piece BPE model (byte fallback alone needs 259) on generated text with spm_train; `skip_reason`
// is set when spm_train is not installed, `error` when training failed.
inline SmallTokenizer train_small_tokenizer(const TempDir& dir, const std::string& name, const std::string& flags) {
  SmallTokenizer t;
  if (std::system("command -v spm_train >/dev/null 2>&1") != 0) {
    t.skip_reason = "spm_train not found (Debian package `sentencepiece`); cannot train the small test tokenizer";
    return t;
  }
  // Deterministic pseudo-words from syllables, with digits, punctuation and some non-ASCII text.
  const char* syllables[] = {"ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "de", "va", "zu", "ri", "the", "and"};
  uint64_t state = 12345;
  auto next = [&](uint64_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (state >> 33) % n;
  };
  std::string corpus;
  for (int line = 0; line < 600; ++line) {
    const int words = 4 + int(next(12));
    for (int w = 0; w < words; ++w) {
      if (w) corpus += next(13) == 0 ? "  " : " ";
      const int parts = 1 + int(next(3));
      for (int p = 0; p < parts; ++p) corpus += syllables[next(14)];
      if (next(9) == 0) corpus += std::to_string(next(1000));
      if (next(11) == 0) corpus += ',';
    }
    corpus += line % 7 == 0 ? " héllo wörld.\n" : ".\n";
  }
  const std::string input = dir.file(name + ".txt"), prefix = dir.file(name), log = dir.file(name + ".log");
  write_bytes(input, corpus);
  const std::string cmd = "spm_train --input=" + input + " --model_prefix=" + prefix +
                          " --vocab_size=400 --model_type=bpe --byte_fallback=true --character_coverage=1.0"
                          " --num_threads=1 " +
                          flags + " > " + log + " 2>&1";
  if (std::system(cmd.c_str()) != 0 || !std::filesystem::is_regular_file(prefix + ".model")) {
    t.error = "spm_train failed: " + cmd + "\n" + read_bytes(log);
    return t;
  }
  t.path = prefix + ".model";
  return t;
}

// A tokenizer.json with ChatML's turn tokens: the committed synthetic byte-level file (tests/fixtures/tokenizers,
// [CLS] first by its post-processor) with <|im_start|> and <|im_end|> added as special tokens (the next
// two ids), written to `folder`/tokenizer.json. Returns that path.
inline std::string write_chatml_tokenizer_json(const std::string& folder) {
  nlohmann::json t = nlohmann::json::parse(read_bytes(fixtures_dir() + "/tokenizers/synthetic-bytelevel.tokenizer.json"));
  int64_t next = 0;
  for (const auto& [piece, id] : t["model"]["vocab"].items()) next = std::max<int64_t>(next, id.get<int64_t>() + 1);
  for (const auto& a : t["added_tokens"]) next = std::max<int64_t>(next, a["id"].get<int64_t>() + 1);
  for (const char* content : {"<|im_start|>", "<|im_end|>"})
    t["added_tokens"].push_back({{"id", next++}, {"content", content}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", true}});
  const std::string path = folder + "/tokenizer.json";
  write_bytes(path, t.dump());
  return path;
}

// Llama-like: identity normalizer, whitespace kept, split digits, whitespace-only pieces, unk/bos/eos 0/1/2,
// no pad. Trained once per test-binary run.
inline const SmallTokenizer& small_tokenizer() {
  static TempDir dir;
  static const SmallTokenizer t =
      train_small_tokenizer(dir, "small",
                            "--normalization_rule_name=identity --remove_extra_whitespaces=false --split_digits=true"
                            " --allow_whitespace_only_pieces=true");
  return t;
}

// spm_train's defaults (NFKC, extra whitespace removed): a model whose long texts must be encoded whole.
inline const SmallTokenizer& small_nfkc_tokenizer() {
  static TempDir dir;
  static const SmallTokenizer t = train_small_tokenizer(dir, "small_nfkc", "");
  return t;
}

// A trained tokenizer's path in `var`, or GTEST_SKIP / failure with the reason.
#define LL_REQUIRE_TRAINED_TOKENIZER(var, which)                               \
  const ::ll::test::SmallTokenizer& var##_info = which;                        \
  if (!var##_info.skip_reason.empty()) GTEST_SKIP() << var##_info.skip_reason; \
  ASSERT_TRUE(var##_info.error.empty()) << var##_info.error;                   \
  const std::string var = var##_info.path
#define LL_REQUIRE_SMALL_TOKENIZER(var) LL_REQUIRE_TRAINED_TOKENIZER(var, ::ll::test::small_tokenizer())

}  // namespace ll::test
