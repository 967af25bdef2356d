// The architecture seam: the registry, the Llama parameter table as the arenas and checkpoints have always laid it
// out, LoRA targets by PEFT's module-name rule, trainables by LongLoRA's substring rule, and a second (toy)
// architecture defined only in this file — biases on every linear, LayerNorm with bias, partial rotary, GELU MLP,
// parallel residual — that the engine runs with no edit: exact gradients, recomputation bit for bit, its plan.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "cpu/cpu_backend.h"
#include "model/config_json.h"
#include "model/model.h"
#include "model/param_select.h"
#include "model/registry.h"
#include "core/tensor_host.h"
#include "model_test_options.h"
#include "neox_test_options.h"
#include "test_util.h"

namespace ll {
namespace {

using test::error_of;

ModelConfig tiny_llama(int layers = 2) {
  ModelConfig c;
  c.hidden_size = 8, c.intermediate_size = 12, c.num_attention_heads = 2, c.num_key_value_heads = 1;
  c.num_hidden_layers = layers, c.vocab_size = 10;
  return c;
}

std::vector<std::string> names(const ParamStore& store) {
  std::vector<std::string> out;
  for (const Param& p : store.all()) out.push_back(p.name);
  return out;
}

// ---- registry ------------------------------------------------------------------------------------------------------

TEST(ArchitectureRegistry, FindsLlamaAndNamesTheSupportedOnes) {
  EXPECT_STREQ(architecture_for("llama").model_type(), "llama");
  EXPECT_EQ(architecture_for_class("LlamaForCausalLM"), &architecture_for("llama"));
  EXPECT_EQ(architecture_for_class("MistralForCausalLM"), &architecture_for("mistral"));
  EXPECT_EQ(architecture_for_class("FalconForCausalLM"), nullptr);
  const std::string msg = error_of([] { architecture_for("falcon"); });
  EXPECT_NE(msg.find("\"falcon\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("llama (LlamaForCausalLM)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mistral (MistralForCausalLM)"), std::string::npos) << msg;
  ModelConfig c = tiny_llama();
  c.model_type = "falcon";
  EXPECT_NE(error_of([&] { c.validate(); }).find("\"falcon\""), std::string::npos);
  EXPECT_NE(error_of([] { register_architecture(architecture_for("llama")); }).find("registered already"),
            std::string::npos);
}

TEST(ArchitectureRegistry, PresetsComeFromTheDefinitions) {
  ModelConfig c;
  ASSERT_TRUE(model_preset("llama2-7b", &c));
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.num_hidden_layers, 32);
  ASSERT_TRUE(model_preset("demo", &c));
  EXPECT_EQ(c.intermediate_size, 176);
  EXPECT_FALSE(model_preset("llama3-8b", &c));
  const std::vector<std::string> all = model_preset_names();
  EXPECT_NE(std::find(all.begin(), all.end(), "llama2-70b"), all.end());
}

// The released models' sizes: a preset's parameter table holds exactly the parameters of the published checkpoint
// (the counts Hugging Face's model pages give), and every preset validates.
TEST(ArchitectureRegistry, PresetsOfReleasedModelsHaveTheirParameterCounts) {
  const std::vector<std::pair<std::string, int64_t>> released = {
      {"llama2-7b", 6738415616},   {"llama3.1-8b", 8030261248}, {"llama3.2-1b", 1235814400},
      {"qwen2.5-7b", 7615616512},  {"qwen2.5-0.5b", 494032768}, {"mistral-7b", 7241732096},
  };
  for (const auto& [name, expected] : released) {
    ModelConfig c;
    ASSERT_TRUE(model_preset(name, &c)) << name;
    int64_t total = 0;
    for (const ParamSpec& p : architecture_for(c.model_type).parameter_table(c)) {
      if (!p.tied_to.empty()) continue;  // a tied output head is the embedding's storage
      int64_t n = 1;
      for (int64_t d : p.shape) n *= d;
      total += n;
    }
    EXPECT_EQ(total, expected) << name;
  }
  for (const std::string& name : model_preset_names()) {
    ModelConfig c;
    ASSERT_TRUE(model_preset(name, &c));
    EXPECT_NO_THROW(c.validate()) << name;
  }
  ModelConfig c;
  ASSERT_TRUE(model_preset("llama3.1-8b", &c));
  EXPECT_EQ(c.rope_llama3.factor, 8.0);
  EXPECT_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(model_preset("qwen2.5-0.5b", &c));
  EXPECT_TRUE(c.qkv_bias && c.tie_word_embeddings);
}

TEST(LlamaDefinition, RejectsSwitchesItDoesNotImplement) {
  ModelConfig c = tiny_llama();
  c.hidden_act = "gelu";
  EXPECT_NE(error_of([&] { c.validate(); }).find("silu"), std::string::npos);
  c = tiny_llama();
  c.parallel_residual = true;
  EXPECT_NE(error_of([&] { c.validate(); }).find("parallel"), std::string::npos);
  c = tiny_llama();
  c.rotary_dims = 2;  // head dim 4
  EXPECT_NE(error_of([&] { c.validate(); }).find("rotary"), std::string::npos);
}

// ---- the Llama table ---------------------------------------------------------------------------------------------

TEST(LlamaTable, ParameterOrderIsTheArenaAndCheckpointOrder) {
  CpuBackend<float> be;
  LoraConfig lora;
  lora.rank = 2;
  lora.targets = parse_lora_targets("v,q", tiny_llama(1));
  ParamStore store(be, tiny_llama(1), lora, TrainableConfig::parse("embed,norm"));
  const std::vector<std::string> expected = {
      "model.embed_tokens.weight",
      "model.layers.0.input_layernorm.weight",
      "model.layers.0.self_attn.q_proj.weight",
      "model.layers.0.self_attn.q_proj.lora_A.weight",
      "model.layers.0.self_attn.q_proj.lora_B.weight",
      "model.layers.0.self_attn.k_proj.weight",
      "model.layers.0.self_attn.v_proj.weight",
      "model.layers.0.self_attn.v_proj.lora_A.weight",
      "model.layers.0.self_attn.v_proj.lora_B.weight",
      "model.layers.0.self_attn.o_proj.weight",
      "model.layers.0.post_attention_layernorm.weight",
      "model.layers.0.mlp.gate_proj.weight",
      "model.layers.0.mlp.up_proj.weight",
      "model.layers.0.mlp.down_proj.weight",
      "model.norm.weight",
      "lm_head.weight",
  };
  EXPECT_EQ(names(store), expected);
  EXPECT_EQ(store.adapted_modules(), (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(store.get("model.layers.0.self_attn.q_proj.lora_A.weight").shape, (std::vector<int64_t>{2, 8}));
  EXPECT_EQ(store.get("model.layers.0.self_attn.v_proj.lora_B.weight").shape, (std::vector<int64_t>{4, 2}));
}

// ---- LoRA targets ------------------------------------------------------------------------------------------------

TEST(LoraTargets, PeftModuleNamesAndLlamaAliasesGiveCanonicalNamesInTableOrder) {
  const ModelConfig c = tiny_llama();
  using V = std::vector<std::string>;
  EXPECT_EQ(parse_lora_targets("q,k,v,o", c), (V{"q_proj", "k_proj", "v_proj", "o_proj"}));
  EXPECT_EQ(parse_lora_targets("down_proj,q", c), (V{"q_proj", "down_proj"}));
  EXPECT_EQ(parse_lora_targets("self_attn.v_proj,mlp.up_proj", c), (V{"v_proj", "up_proj"}));
  EXPECT_EQ(parse_lora_targets("q_proj,q", c), (V{"q_proj"}));
  // A suffix must end at a dot: "proj" is no module's name.
  std::string msg = error_of([&] { parse_lora_targets("q,proj", c, "--lora_target"); });
  EXPECT_NE(msg.find("--lora_target: \"proj\" selects no module"), std::string::npos) << msg;
  EXPECT_NE(msg.find("q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (or q, k, v, o, gate, up, down)"),
            std::string::npos)
      << msg;
  msg = error_of([&] { parse_lora_targets("layers.1.self_attn.q_proj", c); });
  EXPECT_NE(msg.find("only some layers"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { parse_lora_targets("lm_head", c); }).find("\"lm_head\""), std::string::npos);
}

TEST(LoraTargets, NoListGivesTheFamilysLongLoraTargets) {
  using V = std::vector<std::string>;
  EXPECT_EQ(parse_lora_targets("", tiny_llama()), (V{"q_proj", "k_proj", "v_proj", "o_proj"}));
  // LongLoRA's fine-tune.py for gpt-neox; `dense` is the attention's output only (PEFT suffix rule).
  EXPECT_EQ(parse_lora_targets("", test::tiny_neox_config()), (V{"query_key_value", "dense"}));
}

// ---- trainable parameters ------------------------------------------------------------------------------------------

std::vector<std::string> trained(const ModelConfig& c, const std::string& list) {
  CpuBackend<float> be;
  const ParamStore store(be, c, LoraConfig{}, TrainableConfig::parse(list));
  std::vector<std::string> out;
  for (const Param& p : store.all())
    if (p.trainable) out.push_back(p.name);
  return out;
}

TEST(Trainables, LongLorasSubstringRule) {
  const ModelConfig c = tiny_llama(1);
  using V = std::vector<std::string>;
  EXPECT_EQ(trained(c, "embed,norm"), (V{"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                                        "model.layers.0.post_attention_layernorm.weight", "model.norm.weight"}))
      << "embed,norm on Llama: the embedding and every RMSNorm, not lm_head";
  EXPECT_EQ(trained(c, "lm_head"), (V{"lm_head.weight"}));
  EXPECT_EQ(trained(c, "input_layernorm"), (V{"model.layers.0.input_layernorm.weight"}));
  ModelConfig tied = c;
  tied.tie_word_embeddings = true;
  EXPECT_EQ(trained(tied, "lm_head"), (V{"model.embed_tokens.weight"})) << "a tied head trains the shared matrix";
  const std::string msg = error_of([&] { trained(c, "embed,bias"); });
  EXPECT_NE(msg.find("\"bias\" is part of no parameter name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.0.mlp.down_proj.weight"), std::string::npos) << msg;
}

// ---- a second architecture, defined here only ----------------------------------------------------------------------
//
// One layer (parallel residual, one LayerNorm):  h = LN(x);  q,k,v = h·Wᵀ + b (partial rotary on q, k);
//   x_out = x + dense(attention(q, k, v)) + fc_out(gelu(fc_in(h)))      (every linear with a bias)
// Final LayerNorm with bias, untied head.
enum ToySlot : int { kLnW, kLnB, kQ, kQb, kK, kKb, kV, kVb, kDense, kDenseB, kIn, kInB, kOut, kOutB };
enum ToyOuter : int { kEmbed, kFinalW, kFinalB, kHead };
enum ToySaved : int { kH, kMean, kRstd, kQs, kKs, kVs, kAttn, kLse, kUp, kAct, kMlpOut };
enum ToyScratch : int { kDAttn, kDAct, kDQ, kDK, kDV };

class Toy final : public Architecture {
 public:
  const char* model_type() const override { return "seam_toy"; }
  std::vector<std::string> hf_architectures() const override { return {"SeamToyForCausalLM"}; }
  void read_config(const ConfigReader& r, ModelConfig& c) const override { c.hidden_size = r.get_int("hidden_size"); }
  nlohmann::json config_json(const ModelConfig& c) const override { return {{"hidden_size", c.hidden_size}}; }
  void validate(const ModelConfig& c) const override {
    LL_CHECK(c.parallel_residual && c.hidden_act == "gelu", "toy: parallel residual and gelu only");
  }
  std::vector<std::pair<std::string, std::string>> lora_aliases() const override { return {{"q", "attn.q"}}; }
  std::string default_lora_targets() const override { return "attn.q"; }

  std::vector<ParamSpec> parameter_table(const ModelConfig& c) const override {
    const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
    std::vector<ParamSpec> t;
    t.push_back({"toy.embed.weight", ParamRole::Embedding, kOuterGroup, kEmbed, {V, D}});
    for (int l = 0; l < int(c.num_hidden_layers); ++l) {
      const std::string p = "toy.layers." + std::to_string(l) + ".";
      auto linear = [&](const std::string& name, int slot, int64_t out, int64_t in) {
        t.push_back({p + name + ".weight", ParamRole::Linear, l, slot, {out, in}});
        ParamSpec bias{p + name + ".bias", ParamRole::Bias, l, slot + 1, {out}};
        bias.bias_of = slot;
        t.push_back(bias);
      };
      t.push_back({p + "ln.weight", ParamRole::Norm, l, kLnW, {D}});
      t.push_back({p + "ln.bias", ParamRole::NormBias, l, kLnB, {D}});
      linear("attn.q", kQ, c.q_dim(), D);
      linear("attn.k", kK, c.kv_dim(), D);
      linear("attn.v", kV, c.kv_dim(), D);
      linear("attn.dense", kDense, D, c.q_dim());
      linear("mlp.fc_in", kIn, F, D);
      linear("mlp.fc_out", kOut, D, F);
    }
    t.push_back({"toy.final_ln.weight", ParamRole::Norm, kOuterGroup, kFinalW, {D}});
    t.push_back({"toy.final_ln.bias", ParamRole::NormBias, kOuterGroup, kFinalB, {D}});
    t.push_back({"toy.head.weight", ParamRole::OutputHead, kOuterGroup, kHead, {V, D}});
    return t;
  }

  ActivationSchema activation_schema(const ModelConfig& c) const override {
    const int64_t D = c.hidden_size, F = c.intermediate_size;
    ActivationSchema s;
    s.saved = {TensorSpec::matrix("h", D),          TensorSpec::row_stat("mean"),
               TensorSpec::row_stat("rstd"),        TensorSpec::matrix("q", c.q_dim()),
               TensorSpec::matrix("k", c.kv_dim()), TensorSpec::matrix("v", c.kv_dim()),
               TensorSpec::matrix("attn", c.q_dim()), TensorSpec::attention_lse("lse"),
               TensorSpec::matrix("up", F),         TensorSpec::matrix("act", F),
               TensorSpec::matrix("mlp_out", D)};
    s.saved[kAct].only_input_of = kOut;
    s.saved[kMlpOut].read_in_backward = false;  // a forward temporary
    s.scratch = {TensorSpec::matrix("d_attn", c.q_dim()), TensorSpec::matrix("d_act", F),
                 TensorSpec::matrix("dq", c.q_dim()), TensorSpec::matrix("dk", c.kv_dim()),
                 TensorSpec::matrix("dv", c.kv_dim())};
    s.scratch[kDAct].phase = 0;  // done before the attention's gradients begin
    for (int i = kDQ; i <= kDV; ++i) s.scratch[size_t(i)].phase = 1;
    s.final_norm = {TensorSpec::row_stat("mean"), TensorSpec::row_stat("rstd")};
    return s;
  }

  void forward(Block& b) const override {
    const ModelConfig& c = b.config();
    Backend& be = b.backend();
    const int64_t T = b.rows(), H = c.num_attention_heads, Hkv = c.num_key_value_heads, Dh = c.head_dim();
    const Tensor &h = b.saved(kH), &q = b.saved(kQs), &k = b.saved(kKs), &v = b.saved(kVs), &attn = b.saved(kAttn);
    be.layernorm_forward(h, b.saved(kMean), b.saved(kRstd), b.input(), b.param(kLnW).value, b.param(kLnB).value,
                         c.norm_eps);
    b.project(kQ, q, h);
    b.project(kK, k, h);
    b.project(kV, v, h);
    be.rope_forward(q.view({T, H, Dh}), b.positions(), b.rope());
    be.rope_forward(k.view({T, Hkv, Dh}), b.positions(), b.rope());
    b.attention(attn, b.saved(kLse), q, k, v);
    b.project(kDense, b.output(), attn);
    be.add(b.output(), b.output(), b.input());
    b.project(kIn, b.saved(kUp), h);
    be.gelu_forward(b.saved(kAct), b.saved(kUp));
    b.project(kOut, b.saved(kMlpOut), b.saved(kAct));
    be.add(b.output(), b.output(), b.saved(kMlpOut));
  }

  void backward(Block& b) const override {
    const ModelConfig& c = b.config();
    Backend& be = b.backend();
    const int64_t T = b.rows(), H = c.num_attention_heads, Hkv = c.num_key_value_heads, Dh = c.head_dim();
    const Tensor &d_resid = b.d_resid(), &d_h = b.d_hidden(), &d_act = b.scratch(kDAct), &d_attn = b.scratch(kDAttn);
    const Tensor &dq = b.scratch(kDQ), &dk = b.scratch(kDK), &dv = b.scratch(kDV);
    // Both branches read ∂loss/∂x_out before the LayerNorm's gradient is added to it.
    b.project_backward(kDense, d_attn, d_resid, b.saved(kAttn), false);
    b.project_backward(kOut, d_act, d_resid, b.saved(kAct), false);
    be.gelu_backward(d_act, d_act, b.saved(kUp));
    b.project_backward(kIn, d_h, d_act, b.saved(kH), false);
    b.attention_backward(dq, dk, dv, d_attn, b.saved(kQs), b.saved(kKs), b.saved(kVs), b.saved(kAttn), b.saved(kLse));
    be.rope_backward(dq.view({T, H, Dh}), b.positions(), b.rope());
    be.rope_backward(dk.view({T, Hkv, Dh}), b.positions(), b.rope());
    b.project_backward(kQ, d_h, dq, b.saved(kH), true);
    b.project_backward(kK, d_h, dk, b.saved(kH), true);
    b.project_backward(kV, d_h, dv, b.saved(kH), true);
    const Param &w = b.param(kLnW), &bias = b.param(kLnB);
    be.layernorm_backward(d_resid, w.grad, bias.grad, d_h, b.input(), w.value, b.saved(kMean), b.saved(kRstd), true);
  }

  void final_norm_forward(Block& b) const override {
    b.backend().layernorm_forward(b.output(), b.saved(0), b.saved(1), b.input(), b.param(kFinalW).value,
                                  b.param(kFinalB).value, b.config().norm_eps);
  }
  void final_norm_backward(Block& b) const override {
    const Param &w = b.param(kFinalW), &bias = b.param(kFinalB);
    b.backend().layernorm_backward(b.d_resid(), w.grad, bias.grad, b.d_hidden(), b.input(), w.value, b.saved(0),
                                   b.saved(1), false);
  }
};

const Toy& toy() {
  static const Toy arch;
  static const bool registered = (register_architecture(arch), true);
  (void)registered;
  return arch;
}

ModelOptions toy_options() {
  toy();
  ModelOptions o;
  o.config.model_type = "seam_toy";
  o.config.hidden_size = 8, o.config.intermediate_size = 12, o.config.num_attention_heads = 2;
  o.config.num_key_value_heads = 2, o.config.num_hidden_layers = 2, o.config.vocab_size = 11;
  o.config.rotary_dims = 2;  // of head dim 4
  o.config.rope_scaling_factor = 2.0;
  o.config.parallel_residual = true;
  o.config.hidden_act = "gelu";
  o.batch = 2;
  o.seq_len = 8;
  o.attention.use_s2 = true;
  o.trainable.all = true;
  return o;
}

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

void check_toy_gradients(const ModelOptions& o, uint64_t seed, int trainable_tensors) {
  CpuBackend<double> be;
  Model model(be, o);
  model.set_lora_dropout(true, seed);
  randomize(model, seed);
  const Tokens t = tokens(o, seed + 1);
  EXPECT_EQ(test::expect_trainable_gradients(model, t.ids, t.targets), trainable_tensors);
}

TEST(SecondArchitecture, EveryParameterGradientMatchesFiniteDifferences) {
  check_toy_gradients(toy_options(), 3, 1 + 2 * 14 + 3);  // embed, 2 layers of 14, final norm and head
}

TEST(SecondArchitecture, LoraOnBiasedLinearsWithDropoutAndTrainableLayerNorms) {
  ModelOptions o = toy_options();
  o.trainable = TrainableConfig::parse("ln");  // every LayerNorm weight and bias, the final one included
  o.lora.rank = 2;
  o.lora.dropout = 0.25;
  o.lora.targets = parse_lora_targets("q,fc_out", o.config);
  EXPECT_EQ(o.lora.targets, (std::vector<std::string>{"q", "fc_out"}));
  check_toy_gradients(o, 5, 2 * 2 + 2 + 2 * 2 * 2);  // the layers' and the final LayerNorm, 2 adapters per layer
}

TEST(SecondArchitecture, RecomputationIsBitIdenticalAndThePlanIsWhatIsAllocated) {
  CpuBackend<float> be;
  ModelOptions o = toy_options();
  o.trainable = TrainableConfig::parse("ln");
  o.lora.rank = 2;
  o.lora.targets = parse_lora_targets("q,v", o.config);
  const Tokens t = tokens(o, 9);
  std::vector<std::vector<double>> grads[2];
  double loss[2];
  size_t activations[2];
  for (int k : {0, 2}) {
    ModelOptions ok = o;
    ok.checkpoint_layers = k;
    Model m(be, ok);
    randomize(m, 8);
    const MemoryPlan planned = Model::plan_memory(be, ok), built = m.memory_plan();
    EXPECT_EQ(planned.activations, built.activations);
    EXPECT_EQ(planned.total(), built.total());
    activations[k / 2] = built.activations;
    m.params().zero_grads();
    loss[k / 2] = m.forward_backward(t.ids.data(), t.targets.data()).loss_sum;
    for (Param& p : m.params().all())
      if (p.trainable) grads[k / 2].push_back(download_f64(be, p.grad));
  }
  EXPECT_EQ(loss[0], loss[1]);
  EXPECT_EQ(grads[0], grads[1]);
  EXPECT_LT(activations[1], activations[0]);
}

TEST(SecondArchitecture, ForwardTemporariesAndUnreadInputsShareOneBuffer) {
  CpuBackend<float> be;
  ModelOptions o = toy_options();
  o.trainable = TrainableConfig{};
  o.lora.rank = 4;  // [T, r] = 256 bytes: no arena padding in the difference below
  o.config.num_hidden_layers = 3;
  const int64_t T = o.batch * o.seq_len, F = o.config.intermediate_size, r = o.lora.rank;
  o.lora.targets = parse_lora_targets("q", o.config);
  const size_t shared = Model::plan_memory(be, o).activations;  // mlp_out and act: one buffer each for 3 layers
  o.lora.targets = parse_lora_targets("q,fc_out", o.config);  // fc_out's adapter reads act in backward
  const size_t act_kept = Model::plan_memory(be, o).activations;
  EXPECT_EQ(act_kept - shared, size_t(2 * T * F + 3 * T * r) * sizeof(float))
      << "act in two more sets, plus fc_out's x·Aᵀ [T, r] in each of the three";
}

// A definition that marks no MLP intermediates (TensorSpec::mlp_tile) has no MLP hooks: --mlp_tile_rows is refused
// before anything is allocated, naming the option and the model type.
TEST(SecondArchitecture, WithoutMlpHooksTheMlpTilesAreRefusedByName) {
  CpuBackend<float> be;
  ModelOptions o = toy_options();
  o.mlp_tile_rows = 4;
  const std::string e = test::error_of([&] { Model::plan_memory(be, o); });
  EXPECT_NE(e.find("mlp_tile_rows 4: model_type \"seam_toy\" does not run its MLP over row tiles; set mlp_tile_rows "
                   "to 0"),
            std::string::npos)
      << e;
  o.mlp_tile_rows = 0;
  EXPECT_EQ(test::error_of([&] { Model::plan_memory(be, o); }), "");
}

TEST(SecondArchitecture, TheDefaultFolderCheckComparesTheTablesShapes) {
  const ModelOptions o = toy_options();
  std::map<std::string, FolderTensor> folder = {
      {"toy.embed.weight", {{11, 8}, "a.safetensors"}},
      {"toy.layers.0.mlp.fc_in.weight", {{12, 8}, "a.safetensors"}},
      {"toy.layers.1.attn.q.bias", {{8}, "b.safetensors"}},
  };
  EXPECT_NO_THROW(toy().check_folder_shapes(o.config, folder, "c.json"));
  folder["toy.layers.0.mlp.fc_in.weight"].shape = {16, 8};  // a config with intermediate_size 12 for F = 16 weights
  const std::string msg = error_of([&] { toy().check_folder_shapes(o.config, folder, "c.json"); });
  for (const char* phrase : {"c.json", "toy.layers.0.mlp.fc_in.weight", "[16,8]", "a.safetensors", "[12,8]"})
    EXPECT_NE(msg.find(phrase), std::string::npos) << phrase << " not in: " << msg;
}

TEST(SecondArchitecture, InitialisationZeroesBiasesAndSetsNormWeightsToOne) {
  CpuBackend<double> be;
  Model m(be, toy_options());
  m.init_random(1);
  for (Param& p : m.params().all()) {
    const std::vector<double> v = download_f64(be, p.value);
    if (p.role == ParamRole::Bias || p.role == ParamRole::NormBias) {
      EXPECT_EQ(v, std::vector<double>(v.size(), 0.0)) << p.name;
    }
    if (p.role == ParamRole::Norm) {
      EXPECT_EQ(v, std::vector<double>(v.size(), 1.0)) << p.name;
    }
  }
}

}  // namespace
}  // namespace ll
