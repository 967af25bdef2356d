// Mistral (Llama's block with GQA and a sliding window) against Hugging Face transformers: scripts/make_mistral_fixtures.py
// ran MistralForCausalLM in float64 with sliding_window 5 on sequences of 16 (3 for the S2 case) and wrote its config,
// weights, tokens, logits, loss and every gradient of the trainable set; tests/fixtures/mistral_tiny is the first
// case's model as transformers saves it. Also: config.json's `sliding_window` (read, written, errors naming it), and
// KV-cache decoding with the window.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>

#include "core/tensor_host.h"
#include "cpu/cpu_backend.h"
#include "hf_test_util.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "model/model.h"
#include "model/describe.h"
#include "model/registry.h"
#include "parity_fixture.h"
#include "test_util.h"

namespace ll {
namespace {

using test::ids_of;
using test::options_of;

std::string mistral_tiny_dir() {
  const std::string dir = test::fixtures_dir();
  return dir.empty() ? "" : dir + "/mistral_tiny";
}

struct MistralCase {
  const char* name;
  const char* backend;
  double tolerance;
};

class MistralTransformersParity : public ::testing::TestWithParam<MistralCase> {};

TEST_P(MistralTransformersParity, LogitsLossAndEveryGradient) {
  const MistralCase c = GetParam();
  const std::string dir = test::fixtures_dir();
  ASSERT_FALSE(dir.empty()) << "tests/fixtures/mistral_*.safetensors are committed; run from the repository root";
  const SafetensorsFile file(dir + "/mistral_" + c.name + ".safetensors");
  const ModelOptions o = options_of(file);
  ASSERT_EQ(o.config.model_type, "mistral");
  ASSERT_GT(o.config.sliding_window, 0);
  ASSERT_LT(o.config.sliding_window, o.seq_len) << "the window must be shorter than the sequence to matter";
  ASSERT_LT(o.config.num_key_value_heads, o.config.num_attention_heads) << "GQA";

  std::unique_ptr<Backend> backend = create_backend(c.backend);
  Model model(*backend, o);
  EXPECT_EQ(model.mask().kind, o.attention.use_s2 ? MaskKind::S2 : MaskKind::Causal);
  EXPECT_EQ(model.mask().window, o.config.sliding_window);

  test::expect_model_matches_fixture(model, *backend, file, {"model.", "lm_head."}, c.tolerance);
}

INSTANTIATE_TEST_SUITE_P(
    Transformers, MistralTransformersParity,
    ::testing::Values(MistralCase{"window_full", "cpu", 1e-4}, MistralCase{"window_lora", "cpu", 1e-4},
                      MistralCase{"s2_window", "cpu", 1e-4}, MistralCase{"window_full", "cpu-f64", 2e-7},
                      MistralCase{"window_lora", "cpu-f64", 2e-7}, MistralCase{"s2_window", "cpu-f64", 2e-7}),
    [](const auto& info) {
      std::string s = std::string(info.param.name) + "_" + info.param.backend;
      for (char& ch : s)
        if (ch == '-') ch = '_';
      return s;
    });

// Guards against fixtures that would pass without the window: the same weights without it give other logits.
TEST(MistralTransformersParity, TheWindowChangesTheLogits) {
  const std::string dir = test::fixtures_dir();
  ASSERT_FALSE(dir.empty());
  for (const char* name : {"window_full", "s2_window"}) {
    const SafetensorsFile file(dir + "/mistral_" + std::string(name) + ".safetensors");
    ModelOptions o = options_of(file);
    o.config.sliding_window = 0;
    std::unique_ptr<Backend> backend = create_backend("cpu-f64");
    Model model(*backend, o);
    for (Param& p : model.params().all()) upload_f64(*backend, p.value, test::file_values(file.entry(p.name)));
    const std::vector<int32_t> tokens = ids_of(file, "input_ids");
    EXPECT_GT(test::rel_error(model.logits(tokens.data()), test::file_values(file.entry("logits"))), 1e-2) << name;
  }
}

std::vector<double> row(const std::vector<double>& logits, int64_t r, int64_t vocab) {
  return {logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab};
}

TEST(MistralFolder, TransformersSavedFolderGivesItsLogitsAndDecodesWithTheWindow) {
  ASSERT_FALSE(mistral_tiny_dir().empty()) << "tests/fixtures/mistral_tiny is committed; run from the repository root";
  const SafetensorsFile ref(test::fixtures_dir() + "/mistral_window_full.safetensors");
  const std::vector<int32_t> ids = ids_of(ref, "input_ids");
  const HfConfig cfg = read_hf_config(mistral_tiny_dir());
  EXPECT_EQ(cfg.model.model_type, "mistral");
  EXPECT_EQ(cfg.model.sliding_window, 5);
  EXPECT_EQ(cfg.model.num_key_value_heads, 2);
  const std::string info = describe_model(cfg.model);
  EXPECT_NE(info.find("model_type: mistral (MistralForCausalLM)\n"), std::string::npos) << info;
  EXPECT_NE(info.find("sliding_window: 5 (a query sees itself and the 4 keys before it)\n"), std::string::npos) << info;
  std::unique_ptr<Backend> backend = create_backend("cpu-f64");
  ModelOptions o;
  o.config = cfg.model;
  o.batch = ref.entry("input_ids").shape[0], o.seq_len = ref.entry("input_ids").shape[1];
  Model model(*backend, o);
  load_hf_weights(mistral_tiny_dir(), model.params(), *backend);
  const std::vector<double> full = model.logits(ids.data());
  EXPECT_LT(test::rel_error(full, test::file_values(ref.entry("logits"))), 2e-7);

  // KV-cache decoding of the first sequence: a 7-token prefill, then one token at a time (queries at absolute
  // positions past the window), each step's logits equal the full forward's row.
  const int64_t L = o.seq_len, V = o.config.vocab_size;
  ModelOptions one = o;
  one.batch = 1;
  Model decoder(*backend, one);
  load_hf_weights(mistral_tiny_dir(), decoder.params(), *backend);
  decoder.enable_kv_cache(L);
  EXPECT_LT(test::rel_error(decoder.append_tokens(ids.data(), 7), row(full, 6, V)), 1e-12);
  for (int64_t i = 7; i < L; ++i)
    EXPECT_LT(test::rel_error(decoder.append_tokens(ids.data() + i, 1), row(full, i, V)), 1e-12) << "position " << i;
}

TEST(MistralConfig, PresetsAreMistralsShapes) {
  ModelConfig c;
  ASSERT_TRUE(model_preset("mistral-7b", &c));
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_NO_THROW(c.validate());
  // Mistral-7B-v0.1's published parameter count.
  EXPECT_NE(describe_model(c).find("parameters: 7241732096 "), std::string::npos) << describe_model(c);
  ASSERT_TRUE(model_preset("mistral-demo", &c));
  EXPECT_EQ(c.sliding_window, 16);
  EXPECT_LT(c.sliding_window, c.max_position_embeddings) << "the demo's window must mask";
}

// ---- config.json ---------------------------------------------------------------------------------------------------
nlohmann::json tiny_mistral_json() {
  return nlohmann::json::parse(R"({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
    "hidden_size": 16, "intermediate_size": 24, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "vocab_size": 11, "rms_norm_eps": 1e-5, "max_position_embeddings": 32,
    "rope_theta": 10000.0, "sliding_window": 8})");
}

std::string error_of(const nlohmann::json& j) {
  try {
    parse_hf_config(j, "mistral/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MistralConfig, SlidingWindowIsReadNullIsNoneAbsentIsTransformersDefault) {
  EXPECT_EQ(parse_hf_config(tiny_mistral_json(), "c").model.sliding_window, 8);
  nlohmann::json j = tiny_mistral_json();
  j["sliding_window"] = nullptr;
  EXPECT_EQ(parse_hf_config(j, "c").model.sliding_window, 0);
  j.erase("sliding_window");
  EXPECT_EQ(parse_hf_config(j, "c").model.sliding_window, 4096) << "MistralConfig's default";
  j.erase("model_type");  // the class alone selects the definition
  EXPECT_EQ(parse_hf_config(j, "c").model.model_type, "mistral");
}

TEST(MistralConfig, BadSlidingWindowsAreErrorsNamingTheFieldAndFile) {
  for (const nlohmann::json& bad : {nlohmann::json(0), nlohmann::json(-3), nlohmann::json("4096"),
                                    nlohmann::json(2.5)}) {
    nlohmann::json j = tiny_mistral_json();
    j["sliding_window"] = bad;
    const std::string e = error_of(j);
    EXPECT_NE(e.find("sliding_window"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("mistral/config.json"), std::string::npos) << bad << ": " << e;
  }
  // A Llama has no window: set programmatically, it is refused by name.
  ModelConfig llama = test::tiny_llama();
  llama.sliding_window = 8;
  try {
    llama.validate();
    ADD_FAILURE() << "a Llama with a sliding window was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sliding_window"), std::string::npos) << e.what();
  }
  // Nor has Qwen2 (Llama's layer with q/k/v biases); a Mistral has no biases.
  ModelConfig qwen2 = llama;
  qwen2.model_type = "qwen2";
  qwen2.qkv_bias = true;
  EXPECT_THROW(qwen2.validate(), Error);
  qwen2.sliding_window = 0;
  EXPECT_NO_THROW(qwen2.validate());
  ModelConfig mistral = llama;
  mistral.model_type = "mistral";
  EXPECT_NO_THROW(mistral.validate());
  mistral.qkv_bias = true;
  try {
    mistral.validate();
    ADD_FAILURE() << "a Mistral with q/k/v biases was accepted";
  } catch (const Error& e) {  // the message names the family it checked
    EXPECT_NE(std::string(e.what()).find("model_type \"mistral\" has no q/k/v biases"), std::string::npos) << e.what();
  }
}

TEST(MistralConfig, WrittenConfigIsMistralsAndReadsBackTheSame) {
  for (int64_t window : {int64_t(8), int64_t(0)}) {
    nlohmann::json j = tiny_mistral_json();
    j["sliding_window"] = window > 0 ? nlohmann::json(window) : nlohmann::json();
    const ModelConfig c = parse_hf_config(j, "c").model;
    const nlohmann::json out = hf_config_json(c, DType::F32);
    EXPECT_EQ(out.at("model_type"), "mistral");
    EXPECT_EQ(out.at("architectures"), nlohmann::json::array({"MistralForCausalLM"}));
    ASSERT_TRUE(out.contains("sliding_window")) << "null must be written: absent means 4096 to transformers";
    EXPECT_EQ(out.at("sliding_window"), j.at("sliding_window"));
    EXPECT_FALSE(out.contains("pretraining_tp"));
    EXPECT_EQ(parse_hf_config(out, "written").model.sliding_window, window);
  }
}

}  // namespace
}  // namespace ll
