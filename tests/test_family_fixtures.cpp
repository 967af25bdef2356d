// Llama-3.x and Qwen2 parity with Hugging Face transformers (and peft, and LongLoRA's S2-Attn under GQA):
// scripts/make_family_fixtures.py ran LlamaForCausalLM / Qwen2ForCausalLM in float64 and wrote the config.json, the
// weights, tokens, logits, loss, every gradient of the trainable set and the rotary inverse frequencies. Our float64
// CPU backend must reproduce them within 4e-6, the float32 one within 1e-4. (Not 2e-7 as for NeoX: transformers
// computes RoPE's inv_freq and angles in float32 even in a float64 model, and at 32 positions, GQA and theta up to
// 1e6 that alone moves its logits by 1.8e-7 relative to float64 angles — measured on qwen2_full — and its gradients
// by up to ~2e-6; ours are in double.) Also: llama3 RoPE's frequencies, how
// LongLoRA's factor composes with a llama3 config (the config we write is the one transformers ran), and the errors
// for the RoPE types and Qwen2 options this engine does not implement.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <functional>
#include <set>

#include "core/rope_frequencies.h"
#include "core/tensor_host.h"
#include "hf_test_util.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/describe.h"
#include "model/model.h"
#include "model/param_select.h"
#include "parity_fixture.h"
#include "test_util.h"

namespace ll {
namespace {

using Json = nlohmann::json;

using test::error_of;

SafetensorsFile fixture(const std::string& name) {
  const std::string dir = test::fixtures_dir();
  if (dir.empty()) ADD_FAILURE() << "tests/fixtures is committed; run the tests from the repository root";
  return SafetensorsFile(dir + "/family_" + name + ".safetensors");
}

using test::ids_of;

// The model the fixture describes (test::options_of), with LongLoRA's factor on top: derived by LongLoRA's rule from
// the context it implies, as training does.
ModelOptions options_of(const SafetensorsFile& f) {
  ModelOptions o = test::options_of(f);
  const double pi = Json::parse(f.metadata().at("case")).at("rope_scaling_factor");
  const auto target_context = int64_t(double(o.config.max_position_embeddings) * pi);
  o.config.rope_scaling_factor =
      derive_rope_factor(target_context, o.config.max_position_embeddings, o.config.rope_scaling_factor);
  EXPECT_EQ(o.config.rope_scaling_factor, pi) << "LongLoRA's rule for model_max_length " << target_context;
  return o;
}

void load_fixture_weights(Model& m, Backend& backend, const SafetensorsFile& f) {
  for (Param& p : m.params().all()) upload_f64(backend, p.value, test::file_values(f.entry(p.name)));
}

struct FamilyCase {
  const char* name;
  const char* backend;
  double tolerance;
};

class FamilyTransformersParity : public ::testing::TestWithParam<FamilyCase> {};

TEST_P(FamilyTransformersParity, LogitsLossAndEveryGradient) {
  const FamilyCase c = GetParam();
  const SafetensorsFile file = fixture(c.name);
  const ModelOptions o = options_of(file);
  std::unique_ptr<Backend> backend = create_backend(c.backend);
  Model model(*backend, o);
  EXPECT_EQ(model.mask().kind, !o.attention.use_s2 ? MaskKind::Causal : MaskKind::S2Roll);

  test::expect_model_matches_fixture(model, *backend, file, {"model.", "lm_head."}, c.tolerance);
}

INSTANTIATE_TEST_SUITE_P(
    Transformers, FamilyTransformersParity,
    ::testing::Values(FamilyCase{"llama3_full", "cpu", 1e-4}, FamilyCase{"llama3_pi2_lora", "cpu", 1e-4},
                      FamilyCase{"qwen2_full", "cpu", 1e-4}, FamilyCase{"qwen2_lora", "cpu", 1e-4},
                      FamilyCase{"qwen2_s2_roll", "cpu", 1e-4}, FamilyCase{"llama3_full", "cpu-f64", 4e-6},
                      FamilyCase{"llama3_pi2_lora", "cpu-f64", 4e-6}, FamilyCase{"qwen2_full", "cpu-f64", 4e-6},
                      FamilyCase{"qwen2_lora", "cpu-f64", 4e-6}, FamilyCase{"qwen2_s2_roll", "cpu-f64", 4e-6}),
    [](const auto& info) {
      std::string s = std::string(info.param.name) + "_" + info.param.backend;
      for (char& ch : s)
        if (ch == '-') ch = '_';
      return s;
    });

TEST(FamilyFixtures, CasesReallyExerciseWhatTheyClaim) {
  // llama3_full: tied, GQA, and its frequencies fall in all three bands of the llama3 rule.
  const SafetensorsFile l3 = fixture("llama3_full");
  const ModelOptions o = options_of(l3);
  EXPECT_TRUE(o.config.tie_word_embeddings);
  EXPECT_LT(o.config.num_key_value_heads, o.config.num_attention_heads);
  const std::vector<double> plain = rope_inv_freq(o.config.rope_theta, o.config.head_dim(), RopeLlama3{});
  const std::vector<double> scaled = rope_inv_freq(o.config.rope_theta, o.config.head_dim(), o.config.rope_llama3);
  int unchanged = 0, divided = 0, smoothed = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double ratio = plain[i] / scaled[i];
    if (ratio == 1) ++unchanged;
    else if (std::abs(ratio - o.config.rope_llama3.factor) < 1e-12) ++divided;
    else ++smoothed;
  }
  EXPECT_GT(unchanged, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(smoothed, 0);
  // The llama3 rule changes the logits (plain RoPE would not pass the parity test).
  ModelOptions plain_rope = o;
  plain_rope.config.rope_llama3 = RopeLlama3{};
  std::unique_ptr<Backend> backend = create_backend("cpu-f64");
  Model with(*backend, o), without(*backend, plain_rope);
  load_fixture_weights(with, *backend, l3);
  load_fixture_weights(without, *backend, l3);
  const std::vector<int32_t> tokens = ids_of(l3, "input_ids");
  EXPECT_GT(test::rel_error(without.logits(tokens.data()), test::file_values(l3.entry("logits"))), 1e-4);
  // LongLoRA's factor on top matters too: without it the composed case's logits differ.
  const SafetensorsFile pi = fixture("llama3_pi2_lora");
  ModelOptions no_pi = options_of(pi);
  no_pi.config.rope_scaling_factor = 1;
  Model base_only(*backend, no_pi);
  load_fixture_weights(base_only, *backend, pi);
  EXPECT_GT(test::rel_error(base_only.logits(ids_of(pi, "input_ids").data()), test::file_values(pi.entry("logits"))),
            1e-4);
  // Qwen2: the biases exist and matter; the S2 case's logits depend on the shifted attention.
  const SafetensorsFile q = fixture("qwen2_full");
  const ModelOptions qo = options_of(q);
  EXPECT_TRUE(qo.config.qkv_bias);
  EXPECT_EQ(qo.config.rope_theta, 1e6);
  Model zero_bias(*backend, qo);
  load_fixture_weights(zero_bias, *backend, q);
  int biases = 0;
  for (Param& p : zero_bias.params().all())
    if (p.role == ParamRole::Bias) {
      ++biases;
      upload_f64(*backend, p.value, std::vector<double>(size_t(p.numel()), 0.0));
    }
  EXPECT_EQ(biases, 3 * int(qo.config.num_hidden_layers)) << "q, k and v biases; o_proj has none";
  EXPECT_GT(test::rel_error(zero_bias.logits(ids_of(q, "input_ids").data()), test::file_values(q.entry("logits"))),
            1e-3);
  const SafetensorsFile s2 = fixture("qwen2_s2_roll");
  ModelOptions causal = options_of(s2);
  causal.attention.use_s2 = false;
  Model causal_model(*backend, causal);
  load_fixture_weights(causal_model, *backend, s2);
  EXPECT_GT(
      test::rel_error(causal_model.logits(ids_of(s2, "input_ids").data()), test::file_values(s2.entry("logits"))),
      1e-2);
}

TEST(Llama3Rope, FrequenciesEqualTransformers) {
  // Llama-3.1-8B's config (transformers' _compute_llama3_parameters, float32).
  const SafetensorsFile l3 = fixture("llama3_full");
  const RopeLlama3 llama31{8.0, 1.0, 4.0, 8192};
  EXPECT_LT(test::rel_error(rope_inv_freq(500000.0, 128, llama31), test::file_values(l3.entry("llama31_8b_inv_freq"))),
            1e-6);
  // Every fixture: the frequencies our RoPE op uses (composition included) are the ones transformers ran.
  for (const char* name : {"llama3_full", "llama3_pi2_lora", "qwen2_full"}) {
    const SafetensorsFile f = fixture(name);
    const ModelOptions o = options_of(f);
    const RopeParams p = rope_params(o.config);
    std::vector<double> ours = rope_inv_freq(p.theta, o.config.head_dim(), p.llama3);
    for (double& v : ours) v /= p.factor;
    EXPECT_LT(test::rel_error(ours, test::file_values(f.entry("inv_freq"))), 1e-6) << name;
  }
}

TEST(Llama3Rope, ComposedFactorIsTheConfigTransformersRan) {
  // LongLoRA's factor 2 on a llama3 config of factor 2: the config.json we write (a merge, a saved model) is the one
  // transformers computed the fixture's logits from (llama3 factor 4), and reading it back gives the same RoPE.
  const SafetensorsFile f = fixture("llama3_pi2_lora");
  const ModelConfig c = options_of(f).config;
  const Json written = hf_config_json(c, DType::F32);
  const Json ran = Json::parse(f.metadata().at("ran_config"));
  const Json& ran_rope = ran.contains("rope_parameters") ? ran.at("rope_parameters") : ran.at("rope_scaling");
  const Json& ours = written.at("rope_scaling");
  EXPECT_EQ(ours.at("rope_type"), "llama3");
  for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
    EXPECT_EQ(ours.at(key).get<double>(), ran_rope.at(key).get<double>()) << key;
  EXPECT_EQ(ours.at("factor").get<double>(), 4.0);
  EXPECT_EQ(written.at("max_position_embeddings").get<int64_t>(), 2 * c.max_position_embeddings)
      << "the composed config covers the extended context";
  const ModelConfig back = parse_hf_config(written, "written config").model;
  EXPECT_EQ(back.rope_scaling_factor, 1.0);
  EXPECT_EQ(back.rope_llama3.factor, 4.0);
  const RopeParams a = rope_params(c), b = rope_params(back);
  EXPECT_EQ(a.factor, b.factor);
  EXPECT_TRUE(a.llama3 == b.llama3);
  // Without LongLoRA's factor the writer keeps the base config as it was.
  ModelConfig base = c;
  base.rope_scaling_factor = 1;
  const Json base_written = hf_config_json(base, DType::F32);
  EXPECT_EQ(base_written.at("rope_scaling").at("factor").get<double>(), 2.0);
  EXPECT_EQ(base_written.at("max_position_embeddings").get<int64_t>(), c.max_position_embeddings);
}

// A Llama-3.1-8B-like config.json (sizes shrunk), patched per case.
Json llama31_json() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
    "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 128256,
    "rms_norm_eps": 1e-5, "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": false,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}})");
}

TEST(Llama3Rope, ReadsMetasConfigs) {
  const ModelConfig c = parse_hf_config(llama31_json(), "config.json").model;
  EXPECT_EQ(c.rope_scaling_factor, 1.0);
  EXPECT_TRUE(c.rope_llama3 == (RopeLlama3{8.0, 1.0, 4.0, 8192}));
  EXPECT_EQ(c.vocab_size, 128256);
  // transformers 5's rope_parameters form (rope_theta inside), alone or beside an agreeing rope_scaling.
  Json v5 = llama31_json();
  v5["rope_parameters"] = v5["rope_scaling"];
  v5["rope_parameters"]["rope_theta"] = 500000.0;
  v5.erase("rope_theta");
  EXPECT_TRUE(parse_hf_config(v5, "config.json").model.rope_llama3 == c.rope_llama3);
  v5.erase("rope_scaling");
  const ModelConfig c5 = parse_hf_config(v5, "config.json").model;
  EXPECT_TRUE(c5.rope_llama3 == c.rope_llama3);
  EXPECT_EQ(c5.rope_theta, 500000.0);
}

// build/info (describe_model) shows the RoPE the engine rotates with: with LongLoRA's factor 2 on Meta's llama3
// factor 8, the one composed llama3 rule of factor 16 (rope_params), not the raw config factor beside a linear 2.
TEST(Llama3Rope, InfoShowsTheComposedRuleTheEngineUses) {
  ModelConfig c = parse_hf_config(llama31_json(), "config.json").model;
  EXPECT_NE(describe_model(c).find(", llama3 factor 8, low_freq_factor 1, high_freq_factor 4, "
                                   "original_max_position_embeddings 8192\n"),
            std::string::npos) << describe_model(c);
  c.rope_scaling_factor = 2;
  const std::string info = describe_model(c);
  EXPECT_NE(info.find(", llama3 factor 16, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings "
                      "8192 (config.json's factor 8 × linear factor 2)\n"),
            std::string::npos) << info;
  EXPECT_EQ(info.find("linear scaling"), std::string::npos) << info;
  c.rope_llama3 = RopeLlama3{};
  EXPECT_NE(describe_model(c).find(", linear scaling (position interpolation) factor 2\n"), std::string::npos)
      << describe_model(c);
}

TEST(Llama3Rope, ErrorsNameTheFieldAndWhatIsSupported) {
  struct Case {
    const char* patch;
    std::vector<const char*> expected;
  } cases[] = {
      {R"({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})",
       {"`rope_scaling` type \"yarn\" is not supported", "\"default\"", "\"linear\"", "\"llama3\""}},
      {R"({"rope_scaling": {"type": "dynamic", "rope_type": null}})", {"\"dynamic\" is not supported", "\"llama3\""}},
      {R"({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}})", {"\"longrope\" is not supported"}},
      {R"({"rope_scaling": {"low_freq_factor": null}})", {"`rope_scaling.low_freq_factor` is missing"}},
      {R"({"rope_scaling": {"original_max_position_embeddings": null}})",
       {"`rope_scaling.original_max_position_embeddings` is missing"}},
      {R"({"rope_scaling": {"factor": null}})", {"`rope_scaling.factor` is missing"}},
      {R"({"rope_scaling": {"low_freq_factor": 4.0, "high_freq_factor": 1.0}})", {"low_freq_factor", "high_freq_factor"}},
      {R"({"rope_scaling": {"factor": 0.5}})", {"`factor` must be >= 1"}},
      {R"({"rope_scaling": {"original_max_position_embeddings": 8192.5}})",
       {"`original_max_position_embeddings` must be an integer"}},
      {R"({"rope_parameters": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192}})",
       {"`rope_scaling` (llama3 factor 8", "`rope_parameters` (llama3 factor 4", "disagree"}},
  };
  for (const Case& c : cases) {
    Json j = llama31_json();
    j.merge_patch(Json::parse(c.patch));
    const std::string msg = error_of([&] { parse_hf_config(j, "my/config.json"); });
    for (const char* e : c.expected) EXPECT_NE(msg.find(e), std::string::npos) << c.patch << "\n  gave: " << msg;
    EXPECT_NE(msg.find("my/config.json"), std::string::npos) << msg;
  }
  // GPT-NeoX has no llama3 form in this engine (its writer would drop it).
  ModelConfig neox = parse_hf_config(Json::parse(fixture("qwen2_full").metadata().at("config")), "x").model;
  neox.model_type = "gpt_neox";
  neox.hidden_act = "gelu";
  neox.qkv_bias = false;
  neox.num_key_value_heads = neox.num_attention_heads;
  neox.rope_llama3 = RopeLlama3{8.0, 1.0, 4.0, 8192};
  EXPECT_NE(error_of([&] { neox.validate(); }).find("rope_type \"llama3\" is for Llama-3 models"), std::string::npos);
}

TEST(Qwen2Config, ReadsWritesAndRefusesSlidingWindows) {
  const Json ran = Json::parse(fixture("qwen2_full").metadata().at("config"));
  const HfConfig h = parse_hf_config(ran, "config.json");
  EXPECT_EQ(h.model.model_type, "qwen2");
  EXPECT_TRUE(h.model.qkv_bias);
  EXPECT_TRUE(h.model.tie_word_embeddings);
  // What we write names the class transformers loads, no Llama-only keys, and reads back the same.
  const Json written = hf_config_json(h.model, DType::BF16);
  EXPECT_EQ(written.at("architectures"), Json::array({"Qwen2ForCausalLM"}));
  EXPECT_EQ(written.at("model_type"), "qwen2");
  EXPECT_EQ(written.at("use_sliding_window"), false);
  EXPECT_FALSE(written.contains("attention_bias"));
  const ModelConfig back = parse_hf_config(written, "written").model;
  EXPECT_TRUE(back.qkv_bias);
  EXPECT_EQ(back.rope_theta, h.model.rope_theta);
  EXPECT_EQ(back.num_key_value_heads, h.model.num_key_value_heads);

  Json sliding = ran;
  sliding["use_sliding_window"] = true;
  const std::string msg = error_of([&] { parse_hf_config(sliding, "q/config.json"); });
  EXPECT_NE(msg.find("q/config.json: `use_sliding_window` is true"), std::string::npos) << msg;
  Json types = ran;
  types["layer_types"] = {"full_attention", "sliding_attention"};
  EXPECT_NE(error_of([&] { parse_hf_config(types, "q/config.json"); }).find("\"sliding_attention\""),
            std::string::npos);
  // A Llama config cannot carry Qwen2's biases (its writer has no field for them).
  ModelConfig llama = h.model;
  llama.model_type = "llama";
  EXPECT_NE(error_of([&] { llama.validate(); }).find("model_type \"llama\" has no q/k/v biases"), std::string::npos);
}

TEST(Llama3Vocabulary, ChunkedLossOver128kTokensEqualsTheFullSoftmax) {
  // Llama-3's 128256-token vocabulary, tied (3.2 small): the default cross-entropy chunk holds fewer rows than the
  // step, and the chunked loss equals the log-softmax of the logits computed whole.
  ModelOptions o;
  o.config = parse_hf_config(llama31_json(), "config.json").model;
  o.config.hidden_size = 16, o.config.intermediate_size = 24, o.config.num_hidden_layers = 1;
  o.config.tie_word_embeddings = true;
  o.batch = 1, o.seq_len = 80;
  std::unique_ptr<Backend> backend = create_backend("cpu");
  Model model(*backend, o);
  ASSERT_LT(model.options().ce_chunk_rows, o.seq_len) << "the test must span several chunks";
  test::fill_params(model.params(), *backend, 7, 0.5);
  std::vector<int32_t> tokens(size_t(o.seq_len)), targets(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = int32_t((i * 7919) % 128256);
    targets[i] = int32_t((i * 104729 + 128000) % 128256);  // ids above 128000 too (Llama-3's special tokens)
  }
  const std::vector<double> logits = model.logits(tokens.data());
  double expected = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const double* row = logits.data() + t * 128256;
    double mx = row[0], sum = 0;
    for (int64_t v = 0; v < 128256; ++v) mx = std::max(mx, row[v]);
    for (int64_t v = 0; v < 128256; ++v) sum += std::exp(row[v] - mx);
    expected += mx + std::log(sum) - row[targets[t]];
  }
  expected /= double(tokens.size());
  model.params().zero_grads();
  EXPECT_NEAR(model.forward_backward(tokens.data(), targets.data()).mean(), expected, 1e-4 * expected);
}

}  // namespace
}  // namespace ll
