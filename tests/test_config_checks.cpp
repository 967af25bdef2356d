// Absurd or mistyped sizes are errors naming the field and its value, found before anything is allocated: they used
// to end in std::bad_alloc or "out of host memory allocating 281474976785664 bytes", naming nothing
// (vocab_size 2^40, num_hidden_layers 2^31, adapter r 2^31).
#include <gtest/gtest.h>

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "eval/eval_model.h"
#include "eval_test_util.h"
#include "io/config_checks.h"
#include "io/hf_config.h"
#include "io/merge.h"
#include "io/peft.h"
#include "model/param_select.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {
namespace {

using test::TempDir;

using test::error_of;

void expect_phrases(const std::string& message, std::initializer_list<std::string> phrases) {
  for (const std::string& p : phrases)
    EXPECT_NE(message.find(p), std::string::npos) << "lacks '" << p << "': " << message;
}

// hf_tiny (2 layers, hidden 32, heads 4/2, intermediate 64, vocab 37) with one config.json field changed.
std::string tiny_with(const TempDir& dir, const char* field, int64_t value) {
  test::copy_hf_tiny(dir.path(), false);
  nlohmann::json j = nlohmann::json::parse(read_text_file(dir.file("config.json")));
  j[field] = value;
  write_file_atomic(dir.file("config.json"), j.dump(2));
  return dir.path();
}

TEST(ConfigChecks, FolderConfigMustMatchItsTensors) {
  {
    TempDir d;
    expect_phrases(error_of([&] { read_hf_config(tiny_with(d, "vocab_size", int64_t(1) << 40)); }),
                   {d.file("config.json"), "`vocab_size` 1099511627776", "model.embed_tokens.weight", "[37,32]"});
  }
  {
    TempDir d;
    expect_phrases(error_of([&] { read_hf_config(tiny_with(d, "num_hidden_layers", int64_t(1) << 31)); }),
                   {"`num_hidden_layers` 2147483648", "2 layer(s)"});
  }
  {
    TempDir d;
    expect_phrases(error_of([&] { read_hf_config(tiny_with(d, "intermediate_size", 4096)); }),
                   {"`intermediate_size` 4096", "mlp.gate_proj.weight", "[64,32]"});
  }
  {
    TempDir d;
    expect_phrases(error_of([&] { read_hf_config(tiny_with(d, "num_key_value_heads", 4)); }),
                   {"`num_key_value_heads` 4", "k_proj.weight", "[16,32]"});
  }
  {
    TempDir d;  // hidden_size 64 with head_dim dropped: embed_tokens is [37,32]
    test::copy_hf_tiny(d.path(), false);
    nlohmann::json j = nlohmann::json::parse(read_text_file(d.file("config.json")));
    j["hidden_size"] = 64;
    j.erase("head_dim");
    write_file_atomic(d.file("config.json"), j.dump(2));
    expect_phrases(error_of([&] { read_hf_config(d.path()); }), {"`hidden_size` 64", "[37,32]"});
  }
  TempDir ok;
  test::copy_hf_tiny(ok.path(), false);
  EXPECT_EQ(read_hf_config(ok.path()).model.vocab_size, 37);
}

// A config.json without weights (random initialisation from --model_config) is bounded by what the engine can hold.
TEST(ConfigChecks, ConfigSizesAreBoundedWithoutWeights) {
  TempDir d;
  test::copy_hf_tiny(d.path(), false);
  nlohmann::json j = nlohmann::json::parse(read_text_file(d.file("config.json")));
  const std::string where = d.file("config.json");
  nlohmann::json big_vocab = j;
  big_vocab["vocab_size"] = int64_t(1) << 40;
  expect_phrases(error_of([&] { parse_hf_config(big_vocab, where); }),
                 {where, "`vocab_size` is 1099511627776", "32-bit"});
  nlohmann::json many_layers = j;
  many_layers["num_hidden_layers"] = int64_t(1) << 31;
  expect_phrases(error_of([&] { parse_hf_config(many_layers, where); }),
                 {where, "num_hidden_layers 2147483648", "parameters"});
  nlohmann::json wide = j;
  wide["vocab_size"] = 1000000000, wide["hidden_size"] = 65536, wide["head_dim"] = 16384;
  expect_phrases(error_of([&] { parse_hf_config(wide, where); }), {"vocab_size 1000000000 × hidden_size 65536"});
  EXPECT_NO_THROW(parse_hf_config(j, where));
}

TEST(ConfigChecks, WeightsMustFitTheMemoryTheyWillLiveIn) {
  ModelConfig c = test::small_config(1000000000);  // within every limit but ~30 TiB of weights
  c.hidden_size = 8192, c.num_attention_heads = 64, c.num_key_value_heads = 8;
  const std::unique_ptr<Backend> cpu = create_backend("cpu");
  expect_phrases(error_of([&] { check_weights_fit_memory(c, {}, *cpu, "my/config.json"); }),
                 {"my/config.json", "vocab_size 1000000000 × hidden_size 8192", "TiB", "host memory available"});
  EXPECT_NO_THROW(check_weights_fit_memory(test::small_config(100), {}, *cpu, "small"));
  LoraConfig huge_rank;
  huge_rank.rank = int64_t(1) << 31;
  huge_rank.targets = parse_lora_targets("q,v", test::small_config(100));
  expect_phrases(error_of([&] { check_weights_fit_memory(test::small_config(100), huge_rank, *cpu, "w"); }),
                 {"LoRA r 2147483648"});
}

TEST(ConfigChecks, AdapterRankMustMatchItsTensors) {
  TempDir base, adapter;
  test::copy_hf_tiny(base.path(), false);
  test::write_random_adapter(adapter.path(), base.path(), 37, 5, std::nullopt);  // r 4
  nlohmann::json j = nlohmann::json::parse(read_text_file(adapter.file("adapter_config.json")));
  j["r"] = int64_t(1) << 31;
  write_file_atomic(adapter.file("adapter_config.json"), j.dump(2));
  expect_phrases(error_of([&] { read_adapter_config(adapter.path(), read_hf_config(base.path()).model); }),
                 {adapter.file("adapter_config.json"), "`r` is 2147483648", "lora_A.weight", "[4,32]"});
  // What eval and merge run into: the same error, before any model is built.
  EvalModelOptions eo;
  eo.base_model = base.path(), eo.peft_model = adapter.path(), eo.seq_len = 8;
  std::ostringstream log;
  expect_phrases(error_of([&] { load_eval_model(eo, log); }), {"`r` is 2147483648"});
  MergeOptions mo;
  mo.base_model = base.path(), mo.peft_model = adapter.path(), mo.save_path = base.file("merged");
  expect_phrases(error_of([&] { merge_adapter_folder(mo, log); }), {"`r` is 2147483648"});
}

TEST(ConfigChecks, EvalNamesTheFieldInsteadOfRunningOutOfMemory) {
  TempDir d;
  EvalModelOptions eo;
  eo.base_model = tiny_with(d, "vocab_size", int64_t(1) << 40);
  eo.seq_len = 8;
  std::ostringstream log;
  expect_phrases(error_of([&] { load_eval_model(eo, log); }), {"`vocab_size` 1099511627776"});
}

}  // namespace
}  // namespace ll

namespace ll {
namespace {

// The binaries print exception_message(e): std::bad_alloc's own what() is just "std::bad_alloc".
TEST(TopLevelErrors, BadAllocSaysMemoryRanOut) {
  const std::string m = exception_message(std::bad_alloc());
  EXPECT_NE(m.find("out of memory"), std::string::npos) << m;
  EXPECT_EQ(exception_message(Error("plain")), "plain");
}

}  // namespace
}  // namespace ll
