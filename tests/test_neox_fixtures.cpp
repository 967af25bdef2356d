// GPT-NeoX parity with Hugging Face transformers (and peft, and LongLoRA's NeoX S2 code): scripts/make_neox_fixtures.py
// ran GPTNeoXForCausalLM in float64 and wrote its config.json, weights, tokens, logits, loss and every gradient of
// the trainable set. Our float64 CPU backend must reproduce them within 2e-7 (they are float64 results rounded to
// float32), the float32 one within 1e-4.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <set>

#include "cpu/cpu_backend.h"
#include "hf_test_util.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/param_select.h"
#include "parity_fixture.h"
#include "core/tensor_host.h"
#include "test_util.h"

namespace ll {
namespace {

using test::ids_of;
using test::options_of;

struct NeoxCase {
  const char* name;
  const char* backend;
  double tolerance;
};

class NeoxTransformersParity : public ::testing::TestWithParam<NeoxCase> {};

TEST_P(NeoxTransformersParity, LogitsLossAndEveryGradient) {
  const NeoxCase c = GetParam();
  const std::string dir = test::fixtures_dir();
  ASSERT_FALSE(dir.empty()) << "tests/fixtures/neox_*.safetensors are committed; run the tests from the repository root";
  const SafetensorsFile file(dir + "/neox_" + c.name + ".safetensors");
  const ModelOptions o = options_of(file);
  ASSERT_EQ(o.config.model_type, "gpt_neox");

  std::unique_ptr<Backend> backend = create_backend(c.backend);
  Model model(*backend, o);
  EXPECT_EQ(model.mask().kind, !o.attention.use_s2 ? MaskKind::Causal : MaskKind::S2Roll);

  test::expect_model_matches_fixture(model, *backend, file, {"gpt_neox.", "embed_out."}, c.tolerance);
}

INSTANTIATE_TEST_SUITE_P(
    Transformers, NeoxTransformersParity,
    ::testing::Values(NeoxCase{"par_q_pi2_full", "cpu", 1e-4}, NeoxCase{"seq_full", "cpu", 1e-4},
                      NeoxCase{"par_q_pi2_lora", "cpu", 1e-4}, NeoxCase{"seq_lora", "cpu", 1e-4},
                      NeoxCase{"s2_roll", "cpu", 1e-4}, NeoxCase{"par_q_pi2_full", "cpu-f64", 2e-7},
                      NeoxCase{"seq_full", "cpu-f64", 2e-7}, NeoxCase{"par_q_pi2_lora", "cpu-f64", 2e-7},
                      NeoxCase{"seq_lora", "cpu-f64", 2e-7}, NeoxCase{"s2_roll", "cpu-f64", 2e-7}),
    [](const auto& info) {
      std::string s = std::string(info.param.name) + "_" + info.param.backend;
      for (char& ch : s)
        if (ch == '-') ch = '_';
      return s;
    });

// bfloat16: the weights are bfloat16 (as a bf16 Pythia folder holds them); our float32 CPU backend loads them exactly
// and must give transformers' float64 logits of the same weights within 1e-4. transformers' own bfloat16 run rounds
// every activation (6.3e-3 from its float64 run when the fixture was made): ours must be within 2e-2 of it.
TEST(NeoxTransformersParity, Bfloat16WeightsGiveTransformersLogits) {
  const std::string dir = test::fixtures_dir();
  ASSERT_FALSE(dir.empty());
  const SafetensorsFile file(dir + "/neox_bf16.safetensors");
  const ModelOptions o = options_of(file);
  std::unique_ptr<Backend> backend = create_backend("cpu");
  Model model(*backend, o);
  for (Param& p : model.params().all()) {
    ASSERT_EQ(file.entry(p.name).dtype, DType::BF16) << p.name;
    upload_f64(*backend, p.value, test::file_values(file.entry(p.name)));
  }
  const std::vector<int32_t> tokens = ids_of(file, "input_ids");
  const std::vector<double> ours = model.logits(tokens.data());
  EXPECT_LT(test::rel_error(ours, test::file_values(file.entry("logits_f64"))), 1e-4);
  const double vs_bf16 = test::rel_error(ours, test::file_values(file.entry("logits")));
  EXPECT_LT(vs_bf16, 2e-2);
  EXPECT_GT(vs_bf16, 1e-4) << "transformers' bfloat16 run should differ from exact arithmetic (is it bfloat16?)";
}

TEST(NeoxTransformersParity, CasesReallyDiffer) {
  // Guards against fixtures that would pass trivially: the residual forms and the LoRA / S2 cases disagree.
  const std::string dir = test::fixtures_dir();
  ASSERT_FALSE(dir.empty());
  const SafetensorsFile s2(dir + "/neox_s2_roll.safetensors");
  const ModelOptions o = options_of(s2);
  ModelOptions causal = o;
  causal.attention.use_s2 = false;
  std::unique_ptr<Backend> backend = create_backend("cpu-f64");
  Model with_s2(*backend, o), without(*backend, causal);
  for (Model* m : {&with_s2, &without})
    for (Param& p : m->params().all()) upload_f64(*backend, p.value, test::file_values(s2.entry(p.name)));
  const std::vector<int32_t> tokens = ids_of(s2, "input_ids");
  EXPECT_GT(test::rel_error(without.logits(tokens.data()), test::file_values(s2.entry("logits"))), 1e-2)
      << "the S2 fixture's logits must depend on the shifted attention";
  EXPECT_EQ(options_of(SafetensorsFile(dir + "/neox_seq_full.safetensors")).config.parallel_residual, false);
  EXPECT_EQ(options_of(SafetensorsFile(dir + "/neox_par_q_pi2_full.safetensors")).config.rotary_dims, 2);
  EXPECT_EQ(options_of(SafetensorsFile(dir + "/neox_seq_full.safetensors")).config.rotary_dims, 8);
}

}  // namespace
}  // namespace ll
