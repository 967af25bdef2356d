// Building the evaluation model: the RoPE factor rules (eval.py's ceil rule, an extended config's own factor, an
// adapter's recorded training factor), the vocabulary rule for LongLoRA's [PAD] row, and adapter/base mismatches.
#include <gtest/gtest.h>

#include <sstream>

#include "eval/eval_model.h"
#include "eval_test_util.h"
#include "util/error.h"

namespace ll {
namespace {

using test::error_of;

double factor(double explicit_factor, int64_t context_flag, int64_t default_context, double base_factor,
              std::optional<LongLoraRecord> record = std::nullopt, size_t* warnings = nullptr) {
  const RopeChoice c = choose_eval_rope_factor(explicit_factor, context_flag, default_context, 4096, base_factor, record);
  if (warnings) *warnings = c.warnings.size();
  return c.factor;
}

TEST(EvalRopeFactor, EvalPyCeilRule) {
  EXPECT_EQ(factor(0, 8192, 0, 1), 2);
  EXPECT_EQ(factor(0, 32768, 0, 1), 8);
  EXPECT_EQ(factor(0, 100000, 0, 1), 25);  // ceil, not 24.41
  EXPECT_EQ(factor(0, 4097, 0, 1), 2);
  EXPECT_EQ(factor(0, 4096, 0, 1), 1);     // not longer: no interpolation
  EXPECT_EQ(factor(0, 1024, 0, 1), 1);
  EXPECT_EQ(factor(0, -1, 16384, 1), 4);   // eval.py: context_size defaults to seq_len
  EXPECT_EQ(factor(0, -1, 0, 1), 1);       // passkey / generate without --context_size
}

TEST(EvalRopeFactor, ExtendedConfigKeepsItsFactor) {
  size_t warnings = 0;
  EXPECT_EQ(factor(0, -1, 8192, 8, std::nullopt, &warnings), 8);  // eval.py would pick 2 from seq_len 8192
  EXPECT_EQ(warnings, 0u);
  EXPECT_EQ(factor(0, 32768, 0, 8, std::nullopt, &warnings), 8);
  EXPECT_EQ(warnings, 0u);
  const RopeChoice c = choose_eval_rope_factor(0, 65536, 0, 4096, 8, std::nullopt);
  EXPECT_EQ(c.factor, 8);  // issue 5's rule; eval.py would override with 16
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("16"), std::string::npos) << c.warnings[0];
  EXPECT_NE(c.warnings[0].find("--rope_scaling_factor"), std::string::npos) << c.warnings[0];
}

TEST(EvalRopeFactor, AdapterRecordAndExplicitFactor) {
  const LongLoraRecord rec{8, 32768, 32001};
  size_t warnings = 0;
  EXPECT_EQ(factor(0, -1, 2048, 1, rec, &warnings), 8);  // the training factor, not seq_len's 1
  EXPECT_EQ(warnings, 0u);
  EXPECT_EQ(factor(0, -1, 2048, 2, rec, &warnings), 8);  // also over a base config's factor
  EXPECT_EQ(factor(0, 32768, 0, 1, rec, &warnings), 8);
  EXPECT_EQ(warnings, 0u);
  EXPECT_EQ(factor(0, 16384, 0, 1, rec, &warnings), 4);  // an explicit --context_size wins, with a warning
  EXPECT_EQ(warnings, 1u);
  EXPECT_EQ(factor(3, 16384, 0, 8, rec), 3);  // --rope_scaling_factor wins over everything
  EXPECT_THROW(factor(0.5, -1, 0, 1), Error);
  EXPECT_THROW(choose_eval_rope_factor(0, 10, 0, 0, 1, std::nullopt), Error);
}

TEST(EvalVocab, PadRowRule) {
  EXPECT_EQ(choose_eval_vocab("auto", 32000, 0, 0, ""), 32000);        // a base model alone is not resized
  EXPECT_EQ(choose_eval_vocab("auto", 32000, 32001, 0, "a"), 32001);   // LongLoRA adapter with [PAD]
  EXPECT_EQ(choose_eval_vocab("auto", 32000, 0, 32001, "a"), 32001);   // recorded in longlora.json only
  EXPECT_EQ(choose_eval_vocab("auto", 32001, 32001, 0, "a"), 32001);   // base already resized
  EXPECT_EQ(choose_eval_vocab("true", 32000, 0, 0, ""), 32001);
  EXPECT_EQ(choose_eval_vocab("false", 32000, 0, 0, ""), 32000);
  std::string msg = error_of([] { choose_eval_vocab("auto", 32000, 32005, 0, "my_adapter"); });
  EXPECT_NE(msg.find("my_adapter"), std::string::npos) << msg;
  EXPECT_NE(msg.find("32005"), std::string::npos) << msg;
  msg = error_of([] { choose_eval_vocab("false", 32000, 32001, 0, "my_adapter"); });
  EXPECT_NE(msg.find("32001"), std::string::npos) << msg;
  EXPECT_THROW(choose_eval_vocab("maybe", 32000, 0, 0, ""), Error);
}

TEST(EvalModelLoad, PadRowIsTheMeanAndMismatchesAreNamed) {
  const std::string tiny = test::fixtures_dir() + "/hf_tiny";
  test::TempDir adapter, other_base, other_adapter;
  test::write_random_adapter(adapter.path(), tiny, 38, 3, std::nullopt);
  EvalModelOptions o;
  o.base_model = tiny;
  o.peft_model = adapter.path();
  o.seq_len = 8;
  std::ostringstream log;
  EvalModel m = load_eval_model(o, log);
  EXPECT_EQ(m.config.vocab_size, 38);
  EXPECT_TRUE(m.padded);
  EXPECT_EQ(m.rope.factor, 2);  // no record, no context: hf_tiny's own rope_scaling
  // lm_head is not in the adapter: its [PAD] row is the mean of the base rows, as training initialised it.
  const std::vector<double> head = download_f64(*m.backend, m.model->params().lm_head().value);
  const int64_t D = m.config.hidden_size;
  for (int64_t d = 0; d < D; ++d) {
    double mean = 0;
    for (int64_t v = 0; v < 37; ++v) mean += head[size_t(v * D + d)];
    EXPECT_NEAR(head[size_t(37 * D + d)], mean / 37, 1e-6) << "column " << d;
  }
  // An adapter made for another base (vocabulary 50 + 1): named in the error.
  ModelConfig c = test::small_config(50, 64);
  c.hidden_size = 32, c.intermediate_size = 64;
  test::write_random_hf_folder(other_base.path(), c, 4);
  test::write_random_adapter(other_adapter.path(), other_base.path(), 51, 5, std::nullopt);
  o.peft_model = other_adapter.path();
  std::string msg = error_of([&] { load_eval_model(o, log); });
  EXPECT_NE(msg.find(other_adapter.path()), std::string::npos) << msg;
  EXPECT_NE(msg.find("51"), std::string::npos) << msg;
  // Same vocabulary (via --add_pad_token false on a 37-row adapter), wrong shapes: the loader names the file.
  test::TempDir narrow_base, narrow_adapter;
  ModelConfig n = test::small_config(37, 64);  // hidden 16 instead of hf_tiny's 32
  test::write_random_hf_folder(narrow_base.path(), n, 6);
  test::write_random_adapter(narrow_adapter.path(), narrow_base.path(), 37, 7, std::nullopt);
  o.peft_model = narrow_adapter.path();
  msg = error_of([&] { load_eval_model(o, log); });
  EXPECT_NE(msg.find(narrow_adapter.path()), std::string::npos) << msg;
  o.peft_model = adapter.path() + "/nope";
  msg = error_of([&] { load_eval_model(o, log); });
  EXPECT_NE(msg.find("--peft_model"), std::string::npos) << msg;
}

}  // namespace
}  // namespace ll
