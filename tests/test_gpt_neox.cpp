// GPT-NeoX (src/model/arch/gpt_neox.cpp) on the engine: its registry entry and presets, config.json in every form
// transformers writes (and the errors naming the field), the parameter table in Hugging Face order, LoRA targets by
// PEFT's rule (`dense` is the attention's only), LongLoRA's "embed,norm" (embed_out and every LayerNorm weight and
// bias), exact gradients against finite differences for both residual forms, partial and full rotary, with LoRA on
// the fused query_key_value; recomputation bit for bit; the plan is what is allocated; KV-cache decoding.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>

#include "cpu/cpu_backend.h"
#include "core/tensor_host.h"
#include "io/hf_config.h"
#include "model/model.h"
#include "model/param_select.h"
#include "model/registry.h"
#include "model_test_options.h"
#include "neox_test_options.h"
#include "test_util.h"

namespace ll {
namespace {

using Json = nlohmann::json;
using Names = std::vector<std::string>;

using test::error_of;

// ---- registry and presets ------------------------------------------------------------------------------------------

TEST(GptNeoXRegistry, FoundByModelTypeAndClassWithPythiaPresets) {
  const Architecture& a = architecture_for("gpt_neox");
  EXPECT_STREQ(a.model_type(), "gpt_neox");
  EXPECT_EQ(architecture_for_class("GPTNeoXForCausalLM"), &a);
  EXPECT_NE(supported_architectures().find("gpt_neox (GPTNeoXForCausalLM)"), std::string::npos);
  // Pythia's published shapes (config.json of EleutherAI/pythia-*): vocabulary 50304, 2048 positions, a quarter of
  // each head rotating, parallel residual.
  struct Expected {
    const char* name;
    int64_t d, f, heads, layers, rotary;
  };
  for (const Expected e : {Expected{"pythia-70m", 512, 2048, 8, 6, 16}, Expected{"pythia-160m", 768, 3072, 12, 12, 16},
                           Expected{"pythia-410m", 1024, 4096, 16, 24, 16},
                           Expected{"pythia-1.4b", 2048, 8192, 16, 24, 32}}) {
    ModelConfig c;
    ASSERT_TRUE(model_preset(e.name, &c)) << e.name;
    EXPECT_EQ(c.model_type, "gpt_neox") << e.name;
    EXPECT_EQ(c.hidden_size, e.d) << e.name;
    EXPECT_EQ(c.intermediate_size, e.f) << e.name;
    EXPECT_EQ(c.num_attention_heads, e.heads) << e.name;
    EXPECT_EQ(c.num_key_value_heads, e.heads) << e.name;
    EXPECT_EQ(c.num_hidden_layers, e.layers) << e.name;
    EXPECT_EQ(c.rotary_dims, e.rotary) << e.name;
    EXPECT_EQ(c.vocab_size, 50304) << e.name;
    EXPECT_EQ(c.max_position_embeddings, 2048) << e.name;
    EXPECT_TRUE(c.parallel_residual) << e.name;
    EXPECT_NO_THROW(c.validate()) << e.name;
  }
}

TEST(GptNeoXDefinition, RejectsSwitchesItDoesNotImplement) {
  ModelConfig c = test::tiny_neox_config();
  c.hidden_act = "silu";
  EXPECT_NE(error_of([&] { c.validate(); }).find("\"gelu\""), std::string::npos);
  c = test::tiny_neox_config();
  c.num_key_value_heads = 2;
  EXPECT_NE(error_of([&] { c.validate(); }).find("grouped-query"), std::string::npos);
  c = test::tiny_neox_config(true, 3);  // odd rotary dims
  EXPECT_NE(error_of([&] { c.validate(); }).find("rotary dimensions (3)"), std::string::npos);
}

// ---- config.json -----------------------------------------------------------------------------------------------------

// pythia-70m's config.json as published (transformers 4.2x era: rotary_pct, rotary_emb_base).
Json pythia_style_config() {
  return Json::parse(R"({"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
    "hidden_act": "gelu", "hidden_size": 512, "initializer_range": 0.02, "intermediate_size": 2048,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 8,
    "num_hidden_layers": 6, "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": false,
    "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": true, "use_parallel_residual": true,
    "vocab_size": 50304})");
}

TEST(GptNeoXConfig, ReadsPythiasConfig) {
  const HfConfig h = parse_hf_config(pythia_style_config(), "pythia/config.json");
  const ModelConfig& c = h.model;
  EXPECT_EQ(c.model_type, "gpt_neox");
  EXPECT_EQ(c.hidden_size, 512);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.rotary_dims, 16);  // int(64 · 0.25)
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling_factor, 1.0);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_TRUE(c.parallel_residual);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_EQ(h.info.torch_dtype, "float16");
  EXPECT_EQ(h.info.special_token_ids.at("eos_token_id"), 0);
  ModelConfig preset;
  ASSERT_TRUE(model_preset("pythia-70m", &preset));
  EXPECT_EQ(c.intermediate_size, preset.intermediate_size);
  EXPECT_EQ(c.rotary_dims, preset.rotary_dims);
}

TEST(GptNeoXConfig, ReadsTheFormsTransformers4And5Write) {
  // transformers 4.46 adds rope_theta and partial_rotary_factor next to rotary_emb_base and rotary_pct.
  Json j = pythia_style_config();
  j["rotary_pct"] = 0.5, j["partial_rotary_factor"] = 0.5, j["rotary_emb_base"] = 500.0, j["rope_theta"] = 500.0;
  j["rope_scaling"] = {{"factor", 2.0}, {"rope_type", "linear"}, {"type", "linear"}};
  j["use_parallel_residual"] = false;
  ModelConfig c = parse_hf_config(j, "c.json").model;
  EXPECT_EQ(c.rotary_dims, 32);
  EXPECT_EQ(c.rope_theta, 500.0);
  EXPECT_EQ(c.rope_scaling_factor, 2.0);
  EXPECT_FALSE(c.parallel_residual);
  // transformers 5 keeps the rotary fraction and base only inside rope_parameters.
  j = pythia_style_config();
  j.erase("rotary_pct"), j.erase("rotary_emb_base");
  j["rope_parameters"] = {{"factor", 4.0}, {"partial_rotary_factor", 1.0}, {"rope_theta", 2500.0},
                          {"rope_type", "linear"}, {"type", "linear"}};
  c = parse_hf_config(j, "c.json").model;
  EXPECT_EQ(c.rotary_dims, 64);
  EXPECT_EQ(c.rope_theta, 2500.0);
  EXPECT_EQ(c.rope_scaling_factor, 4.0);
  j["rope_parameters"] = {{"partial_rotary_factor", 0.25}, {"rope_theta", 10000.0}, {"rope_type", "default"}};
  c = parse_hf_config(j, "c.json").model;
  EXPECT_EQ(c.rotary_dims, 16);
  EXPECT_EQ(c.rope_scaling_factor, 1.0);
  // Defaults when the rotary fields are absent: transformers' 0.25 and 10000.
  j = pythia_style_config();
  j.erase("rotary_pct"), j.erase("rotary_emb_base"), j.erase("use_parallel_residual"), j.erase("layer_norm_eps");
  c = parse_hf_config(j, "c.json").model;
  EXPECT_EQ(c.rotary_dims, 16);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_TRUE(c.parallel_residual);
  EXPECT_EQ(c.norm_eps, 1e-5);
}

TEST(GptNeoXConfig, ErrorsNameTheField) {
  const auto error_for = [](const std::function<void(Json&)>& edit) {
    Json j = pythia_style_config();
    edit(j);
    return error_of([&] { parse_hf_config(j, "pythia/config.json"); });
  };
  const auto expect_in = [](const std::string& msg, std::initializer_list<const char*> phrases) {
    for (const char* p : phrases) EXPECT_NE(msg.find(p), std::string::npos) << p << " not in: " << msg;
  };
  expect_in(error_for([](Json& j) { j["hidden_act"] = "gelu_new"; }),
            {"pythia/config.json", "`hidden_act`", "\"gelu_new\"", "\"gelu\""});
  expect_in(error_for([](Json& j) { j["attention_bias"] = false; }), {"pythia/config.json", "`attention_bias`"});
  expect_in(error_for([](Json& j) { j["rotary_pct"] = 0.3; }),  // int(64 · 0.3) = 19
            {"`rotary_pct` 0.3", "19 rotary dimensions", "even"});
  expect_in(error_for([](Json& j) { j["rotary_pct"] = 0.0; }), {"`rotary_pct` must be in (0, 1]"});
  expect_in(error_for([](Json& j) { j["partial_rotary_factor"] = 0.5; }),
            {"`rotary_pct` (0.25) and `partial_rotary_factor` (0.5) disagree"});
  expect_in(error_for([](Json& j) {
              j["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 1.0}};
            }),
            {"`rotary_pct` (0.25) and `rope_parameters.partial_rotary_factor` (1) disagree"});
  expect_in(error_for([](Json& j) { j["rope_theta"] = 500.0; }),
            {"`rotary_emb_base` (10000) and `rope_theta` (500) disagree"});
  expect_in(error_for([](Json& j) { j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}}; }),
            {"\"dynamic\" is not supported"});
  expect_in(error_for([](Json& j) { j["num_key_value_heads"] = 2; }), {"`num_key_value_heads` is 2", "grouped"});
  expect_in(error_for([](Json& j) { j.erase("intermediate_size"); }), {"`intermediate_size` is missing"});
  expect_in(error_for([](Json& j) { j["use_parallel_residual"] = "yes"; }), {"`use_parallel_residual`"});
}

TEST(GptNeoXConfig, WrittenConfigReadsBackAndNamesEveryFieldTransformersNeeds) {
  ModelConfig c = test::tiny_neox_config(false, 2);
  c.rope_scaling_factor = 4.0;
  c.rope_theta = 500.0;
  HfConfigInfo info;
  info.special_token_ids = {{"bos_token_id", 0}, {"eos_token_id", 0}};
  const Json j = hf_config_json(c, DType::F32, info);
  EXPECT_EQ(j.at("architectures"), Json::array({"GPTNeoXForCausalLM"}));
  EXPECT_EQ(j.at("model_type"), "gpt_neox");
  EXPECT_EQ(j.at("hidden_act"), "gelu");
  EXPECT_EQ(j.at("rotary_pct"), 0.5);
  EXPECT_EQ(j.at("rotary_emb_base"), 500.0);
  EXPECT_EQ(j.at("rope_scaling"), (Json{{"type", "linear"}, {"factor", 4.0}}));
  EXPECT_EQ(j.at("use_parallel_residual"), false);
  EXPECT_EQ(j.at("attention_bias"), true);
  EXPECT_EQ(j.at("layer_norm_eps"), 1e-5);
  EXPECT_EQ(j.at("torch_dtype"), "float32");
  EXPECT_EQ(j.at("eos_token_id"), 0);
  const ModelConfig back = parse_hf_config(j, "written").model;
  EXPECT_EQ(back.rotary_dims, c.rotary_dims);
  EXPECT_EQ(back.rope_theta, c.rope_theta);
  EXPECT_EQ(back.rope_scaling_factor, c.rope_scaling_factor);
  EXPECT_EQ(back.parallel_residual, c.parallel_residual);
  EXPECT_EQ(back.num_hidden_layers, c.num_hidden_layers);
  c.rope_scaling_factor = 1.0;
  EXPECT_TRUE(hf_config_json(c, DType::BF16).at("rope_scaling").is_null());
}

TEST(GptNeoXConfig, RotaryPctIsWrittenSoThatTransformersGetsTheSameRotaryDimensions) {
  // transformers computes int(head_dim · rotary_pct); 1/49·49 is 0.9999… in floating point, so R / Dh alone would
  // lose a dimension for some sizes. Every even R of every head size up to 256 must come back.
  for (int64_t dh = 2; dh <= 256; dh += 2)
    for (int64_t r = 2; r <= dh; r += 2) {
      ModelConfig c = test::tiny_neox_config(true, r);
      c.hidden_size = dh * c.num_attention_heads;
      const double pct = hf_config_json(c, DType::F32).at("rotary_pct").get<double>();
      ASSERT_EQ(int64_t(double(dh) * pct), r) << "head dim " << dh << ", rotary dims " << r << ", pct " << pct;
      ASSERT_LE(pct, 1.0);
    }
}

// ---- parameter table, LoRA targets, trainables ----------------------------------------------------------------------

Names names(const ParamStore& store) {
  Names out;
  for (const Param& p : store.all()) out.push_back(p.name);
  return out;
}

TEST(GptNeoXTable, HuggingFaceOrderWithOneAdapterOnTheFusedProjection) {
  CpuBackend<float> be;
  const ModelConfig c = test::tiny_neox_config(true, 2, 1);
  LoraConfig lora;
  lora.rank = 2;
  lora.targets = parse_lora_targets("query_key_value,dense", c);
  const ParamStore store(be, c, lora, TrainableConfig::parse("embed,norm"));
  const Names expected = {
      "gpt_neox.embed_in.weight",
      "gpt_neox.layers.0.input_layernorm.weight",
      "gpt_neox.layers.0.input_layernorm.bias",
      "gpt_neox.layers.0.post_attention_layernorm.weight",
      "gpt_neox.layers.0.post_attention_layernorm.bias",
      "gpt_neox.layers.0.attention.query_key_value.weight",
      "gpt_neox.layers.0.attention.query_key_value.lora_A.weight",
      "gpt_neox.layers.0.attention.query_key_value.lora_B.weight",
      "gpt_neox.layers.0.attention.query_key_value.bias",
      "gpt_neox.layers.0.attention.dense.weight",
      "gpt_neox.layers.0.attention.dense.lora_A.weight",
      "gpt_neox.layers.0.attention.dense.lora_B.weight",
      "gpt_neox.layers.0.attention.dense.bias",
      "gpt_neox.layers.0.mlp.dense_h_to_4h.weight",
      "gpt_neox.layers.0.mlp.dense_h_to_4h.bias",
      "gpt_neox.layers.0.mlp.dense_4h_to_h.weight",
      "gpt_neox.layers.0.mlp.dense_4h_to_h.bias",
      "gpt_neox.final_layer_norm.weight",
      "gpt_neox.final_layer_norm.bias",
      "embed_out.weight",
  };
  EXPECT_EQ(names(store), expected);
  const ParamStore& s = store;
  auto shape = [&](const std::string& name) {
    for (const Param& p : s.all())
      if (p.name == name) return p.shape;
    return std::vector<int64_t>{};
  };
  EXPECT_EQ(shape("gpt_neox.layers.0.attention.query_key_value.weight"), (std::vector<int64_t>{48, 16}));
  EXPECT_EQ(shape("gpt_neox.layers.0.attention.query_key_value.bias"), (std::vector<int64_t>{48}));
  EXPECT_EQ(shape("gpt_neox.layers.0.attention.query_key_value.lora_B.weight"), (std::vector<int64_t>{48, 2}));
  EXPECT_EQ(shape("gpt_neox.layers.0.mlp.dense_h_to_4h.weight"), (std::vector<int64_t>{24, 16}));
  EXPECT_EQ(store.adapted_modules(), (Names{"query_key_value", "dense"}));
}

TEST(GptNeoXTable, LoraTargetsFollowPeftsSuffixRule) {
  const ModelConfig c = test::tiny_neox_config();
  EXPECT_EQ(parse_lora_targets("query_key_value,dense", c), (Names{"query_key_value", "dense"}));
  EXPECT_EQ(parse_lora_targets("dense", c), (Names{"dense"})) << "`dense` is the attention's output only";
  EXPECT_EQ(parse_lora_targets("attention.dense,mlp.dense_4h_to_h", c), (Names{"dense", "dense_4h_to_h"}));
  EXPECT_EQ(parse_lora_targets("dense_h_to_4h,query_key_value", c), (Names{"query_key_value", "dense_h_to_4h"}));
  const std::string msg = error_of([&] { parse_lora_targets("q_proj,v_proj", c, "--lora_target"); });
  EXPECT_NE(msg.find("--lora_target: \"q_proj\" selects no module"), std::string::npos) << msg;
  EXPECT_NE(msg.find("query_key_value, dense, dense_h_to_4h, dense_4h_to_h"), std::string::npos) << msg;
}

Names trained(const ModelConfig& c, const std::string& list) {
  CpuBackend<float> be;
  const ParamStore store(be, c, LoraConfig{}, TrainableConfig::parse(list));
  Names out;
  for (const Param& p : store.all())
    if (p.trainable) out.push_back(p.name);
  return out;
}

TEST(GptNeoXTable, LongLorasEmbedNormTrainsBothEmbeddingsAndEveryLayerNormWeightAndBias) {
  const ModelConfig c = test::tiny_neox_config(true, 2, 1);
  EXPECT_EQ(trained(c, "embed,norm"),
            (Names{"gpt_neox.embed_in.weight", "gpt_neox.layers.0.input_layernorm.weight",
                   "gpt_neox.layers.0.input_layernorm.bias", "gpt_neox.layers.0.post_attention_layernorm.weight",
                   "gpt_neox.layers.0.post_attention_layernorm.bias", "gpt_neox.final_layer_norm.weight",
                   "gpt_neox.final_layer_norm.bias", "embed_out.weight"}))
      << "unlike Llama's lm_head, NeoX's output head embed_out contains \"embed\"";
  EXPECT_EQ(trained(c, "final_layer_norm"),
            (Names{"gpt_neox.final_layer_norm.weight", "gpt_neox.final_layer_norm.bias"}));
  const std::string msg = error_of([&] { trained(c, "lm_head"); });
  EXPECT_NE(msg.find("\"lm_head\" is part of no parameter name"), std::string::npos) << msg;
}

TEST(GptNeoXTable, OldCheckpointBuffersAreIgnoredAndATiedHeadIsTheEmbedding) {
  const Architecture& a = architecture_for("gpt_neox");
  for (const char* buffer : {"gpt_neox.layers.3.attention.bias", "gpt_neox.layers.0.attention.masked_bias",
                             "gpt_neox.layers.1.attention.rotary_emb.inv_freq", "gpt_neox.rotary_emb.inv_freq"})
    EXPECT_TRUE(a.ignored_tensor(buffer)) << buffer;
  for (const char* weight : {"gpt_neox.layers.0.attention.query_key_value.bias", "gpt_neox.layers.0.attention.dense.bias",
                             "embed_out.weight"})
    EXPECT_FALSE(a.ignored_tensor(weight)) << weight;
  ModelConfig c = test::tiny_neox_config();
  c.tie_word_embeddings = true;
  CpuBackend<float> be;
  ParamStore store(be, c, LoraConfig{}, TrainableConfig{});
  EXPECT_EQ(&store.lm_head(), &store.embed());
  EXPECT_EQ(store.find("embed_out.weight"), nullptr);
}

// ---- the engine running it: gradients, recomputation, plan, KV cache -------------------------------------------------

void randomize(Model& m, uint64_t seed) {
  Rng rng(seed);
  for (Param& p : m.params().all()) {
    std::vector<double> v(size_t(p.numel()));
    for (double& x : v) x = p.is_norm() ? 1.0 + 0.2 * rng.normal() : 0.4 * rng.normal();
    upload_f64(m.backend(), p.value, v);
  }
}

struct Tokens {
  std::vector<int32_t> ids, targets;
};
Tokens tokens(const ModelOptions& o, uint64_t seed) {
  Rng rng(seed);
  Tokens t;
  const int64_t T = o.batch * o.seq_len;
  for (int64_t i = 0; i < T; ++i) t.ids.push_back(int32_t(rng.below(uint64_t(o.config.vocab_size))));
  for (int64_t i = 0; i < T; ++i) t.targets.push_back((i + 1) % o.seq_len ? t.ids[size_t(i + 1)] : -100);
  return t;
}

// Every trainable tensor's gradient against central differences of the fp64 loss; returns how many were checked.
int check_gradients(const ModelOptions& o, uint64_t seed) {
  CpuBackend<double> be;
  Model model(be, o);
  model.set_lora_dropout(true, seed);
  randomize(model, seed);
  const Tokens t = tokens(o, seed + 1);
  return test::expect_trainable_gradients(model, t.ids, t.targets);
}

struct GradientCase {
  bool parallel;
  int64_t rotary_dims;  // of head dim 4
  bool roll;
  bool lora;  // LoRA on query_key_value and dense (with dropout) + "embed,norm"; else full fine-tuning
};

class GptNeoXGradients : public ::testing::TestWithParam<GradientCase> {};

TEST_P(GptNeoXGradients, EveryTrainableParameterMatchesFiniteDifferences) {
  const GradientCase g = GetParam();
  ModelOptions o = test::tiny_neox_options(g.parallel, g.rotary_dims);
  o.attention.variant = g.roll ? S2Variant::Roll : S2Variant::LeakFree;
  if (!g.lora) {
    // embed_in, 2 layers × 12 tensors, final LayerNorm weight and bias, embed_out
    EXPECT_EQ(check_gradients(o, 11), 1 + 2 * 12 + 2 + 1);
    return;
  }
  o.trainable = TrainableConfig::parse("embed,norm");
  o.lora.rank = 2;
  o.lora.dropout = 0.25;
  o.lora.targets = parse_lora_targets("query_key_value,dense", o.config);
  // embed_in + embed_out, 4 LayerNorm tensors per layer + the final 2, 2 adapters × (A, B) per layer
  EXPECT_EQ(check_gradients(o, 13), 2 + 2 * 4 + 2 + 2 * 4);
}

INSTANTIATE_TEST_SUITE_P(ResidualRotaryAndTraining, GptNeoXGradients,
                         ::testing::Values(GradientCase{true, 2, false, false}, GradientCase{false, 4, true, false},
                                           GradientCase{true, 4, true, true}, GradientCase{false, 2, false, true}),
                         [](const auto& info) {
                           const GradientCase& g = info.param;
                           return std::string(g.parallel ? "Parallel" : "Sequential") + "Rotary" +
                                  std::to_string(g.rotary_dims) + "of4" + (g.roll ? "Roll" : "") +
                                  (g.lora ? "Lora" : "Full");
                         });

class GptNeoXResidual : public ::testing::TestWithParam<bool> {};

TEST_P(GptNeoXResidual, RecomputationIsBitIdenticalAndThePlanIsWhatIsAllocated) {
  CpuBackend<float> be;
  ModelOptions o = test::tiny_neox_options(GetParam());
  o.config.num_hidden_layers = 3;
  o.trainable = TrainableConfig::parse("embed,norm");
  o.lora.rank = 2;
  o.lora.dropout = 0.1;
  o.lora.targets = parse_lora_targets("query_key_value,dense", o.config);
  const Tokens t = tokens(o, 9);
  std::vector<std::vector<double>> grads[4];
  double loss[4];
  size_t activations[4];
  for (int k = 0; k <= 3; ++k) {
    ModelOptions ok = o;
    ok.checkpoint_layers = k;
    Model m(be, ok);
    randomize(m, 8);
    m.set_lora_dropout(true, 77);
    const MemoryPlan planned = Model::plan_memory(be, ok), built = m.memory_plan();
    EXPECT_EQ(planned.activations, built.activations) << k;
    EXPECT_EQ(planned.total(), built.total()) << k;
    activations[k] = built.activations;
    m.params().zero_grads();
    loss[k] = m.forward_backward(t.ids.data(), t.targets.data()).loss_sum;
    for (Param& p : m.params().all())
      if (p.trainable) grads[k].push_back(download_f64(be, p.grad));
  }
  for (int k = 1; k <= 3; ++k) {
    EXPECT_EQ(loss[k], loss[0]) << k << " layers checkpointed";
    EXPECT_EQ(grads[k], grads[0]) << k << " layers checkpointed";
  }
  EXPECT_EQ(activations[1], activations[0]);
  EXPECT_LT(activations[2], activations[1]);
  EXPECT_LT(activations[3], activations[2]);
}

TEST_P(GptNeoXResidual, ForwardTemporariesAndUnreadInputsShareOneBuffer) {
  // The fused projection's output (split at once) and, with the parallel residual, the MLP's output are forward
  // temporaries: one buffer for all layers. The GELU output is read again only for dense_4h_to_h's adapter.
  CpuBackend<float> be;
  ModelOptions o = test::tiny_neox_options(GetParam());
  o.trainable = TrainableConfig{};
  o.lora.rank = 4;  // [T, r] = 256 bytes: no arena padding in the difference below
  o.config.num_hidden_layers = 3;
  const int64_t T = o.batch * o.seq_len, F = o.config.intermediate_size, r = o.lora.rank;
  o.lora.targets = parse_lora_targets("query_key_value,dense", o.config);
  const size_t shared = Model::plan_memory(be, o).activations;
  o.lora.targets = parse_lora_targets("query_key_value,dense,dense_4h_to_h", o.config);
  const size_t act_kept = Model::plan_memory(be, o).activations;
  EXPECT_EQ(act_kept - shared, size_t(2 * T * F + 3 * T * r) * sizeof(float))
      << "act in two more sets, plus dense_4h_to_h's x·Aᵀ [T, r] in each of the three";
}

TEST_P(GptNeoXResidual, KvCacheDecodingGivesTheFullForwardsLogits) {
  CpuBackend<double> be;
  ModelOptions o = test::tiny_neox_options(GetParam());
  o.attention.use_s2 = false;
  o.batch = 1;
  o.seq_len = 12;
  o.trainable = TrainableConfig{};
  Model m(be, o);
  randomize(m, 21);
  const Tokens t = tokens(o, 22);
  const std::vector<double> full = m.logits(t.ids.data());
  ModelOptions oc = o;
  oc.seq_len = 5;  // prefill in chunks of 5, then single tokens
  Model cached(be, oc);
  for (size_t i = 0; i < m.params().all().size(); ++i)
    be.copy(cached.params().all()[i].value, m.params().all()[i].value);
  cached.enable_kv_cache(12);
  const int64_t V = o.config.vocab_size;
  std::vector<double> last = cached.append_tokens(t.ids.data(), 7);
  EXPECT_LT(test::rel_error(last, std::vector<double>(full.begin() + 6 * V, full.begin() + 7 * V)), 1e-12);
  for (int64_t i = 7; i < 12; ++i) {
    last = cached.append_tokens(&t.ids[size_t(i)], 1);
    EXPECT_LT(test::rel_error(last, std::vector<double>(full.begin() + i * V, full.begin() + (i + 1) * V)), 1e-12)
        << "position " << i;
  }
}

TEST(GptNeoXResidualForms, ReallyDiffer) {
  // Guard for the tests above: the two residual forms and the rotary fractions are different functions.
  CpuBackend<double> be;
  const auto logits_of = [&](const ModelOptions& o) {
    Model m(be, o);
    randomize(m, 31);
    const Tokens t = tokens(o, 32);
    return m.logits(t.ids.data());
  };
  const std::vector<double> parallel = logits_of(test::tiny_neox_options(true, 2));
  EXPECT_GT(test::rel_error(logits_of(test::tiny_neox_options(false, 2)), parallel), 1e-2);
  EXPECT_GT(test::rel_error(logits_of(test::tiny_neox_options(true, 4)), parallel), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(ParallelAndSequential, GptNeoXResidual, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Parallel" : "Sequential"; });

}  // namespace
}  // namespace ll
