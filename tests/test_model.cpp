// The whole Llama model: gradients of every parameter against finite differences (fp64), activation
// checkpointing bit-identity, chunked cross-entropy, causality, accumulation and configuration rules.
#include <gtest/gtest.h>

#include <cstring>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "model/param_select.h"
#include "core/tensor_host.h"
#include "test_util.h"
#include "model_test_options.h"

namespace ll {
namespace {

using test::rel_error;

ModelOptions tiny_options(bool s2, S2Variant variant = S2Variant::LeakFree) {
  ModelOptions o = test::tiny_model_options();  // 8 tokens: G = 2
  o.attention.use_s2 = s2;
  o.attention.variant = variant;
  return o;
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};

Batch random_batch(const ModelOptions& o, uint64_t seed) {
  Rng rng(seed);
  Batch b;
  const int64_t T = o.batch * o.seq_len;
  for (int64_t t = 0; t < T; ++t) b.tokens.push_back(int32_t(rng.below(o.config.vocab_size)));
  for (int64_t t = 0; t < T; ++t) {
    const bool last = t % o.seq_len == o.seq_len - 1;
    b.targets.push_back(last || rng.uniform() < 0.2 ? -100 : b.tokens[t + 1]);
  }
  return b;
}

// Random weights with enough spread that every path matters (norm weights away from 1, LoRA B ≠ 0).
void randomize(Model& model, uint64_t seed) {
  Rng rng(seed);
  for (Param& p : model.params().all()) {
    std::vector<double> v(p.numel());
    const double scale =
        p.is_norm() ? 0.0 : (p.role == ParamRole::Embedding ? 1.0 : 1.0 / std::sqrt(double(p.shape[1])));
    for (double& x : v) x = p.is_norm() ? 1.0 + 0.2 * rng.normal() : scale * rng.normal();
    upload_f64(model.backend(), p.value, v);
  }
}

std::vector<double> grad_of(Model& m, Param& p) { return download_f64(m.backend(), p.grad); }

void check_every_gradient(const ModelOptions& o, uint64_t seed) {
  CpuBackend<double> backend;
  Model model(backend, o);
  model.set_lora_dropout(true, seed * 77);  // no effect unless o.lora.dropout > 0; same masks in every forward
  randomize(model, seed);
  const Batch batch = random_batch(o, seed + 1);
  model.params().zero_grads();
  const LossResult r = model.forward_backward(batch.tokens.data(), batch.targets.data());
  ASSERT_GT(r.scored, 0);
  int checked = 0;
  for (Param& p : model.params().all()) {
    if (!p.trainable) {
      EXPECT_TRUE(p.grad.empty()) << p.name << " is frozen but has a gradient buffer";
      continue;
    }
    double* w = p.value.ptr<double>();
    std::vector<double> values(w, w + p.numel());
    auto loss = [&] {
      std::copy(values.begin(), values.end(), w);
      return model.forward(batch.tokens.data(), batch.targets.data()).mean();
    };
    test::expect_gradient(loss, values, grad_of(model, p), p.name, 1e-6);
    std::copy(values.begin(), values.end(), w);
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST(ModelGradient, FullFineTuneS2GqaPi2EveryParameter) { check_every_gradient(tiny_options(true), 11); }

TEST(ModelGradient, FullFineTuneS2RollEveryParameter) {
  check_every_gradient(tiny_options(true, S2Variant::Roll), 12);
}

TEST(ModelGradient, FullAttentionTiedEmbeddingsEveryParameter) {
  ModelOptions o = tiny_options(false);
  o.config.tie_word_embeddings = true;
  o.seq_len = 7;  // odd length
  check_every_gradient(o, 13);
}

TEST(ModelGradient, LoraPlusEveryTrainableParameter) {
  ModelOptions o = tiny_options(true);
  o.trainable = TrainableConfig::parse("embed,norm");  // embed, norm
  o.lora.rank = 3;
  o.lora.alpha = 6;
  o.lora.targets = parse_lora_targets("q,k,v,o,gate,up,down", o.config);
  check_every_gradient(o, 14);
}

TEST(ModelGradient, LoraWithDropoutEveryTrainableParameter) {
  ModelOptions o = tiny_options(true);
  o.trainable = TrainableConfig::parse("embed,norm");
  o.lora.rank = 2;
  o.lora.alpha = 4;
  o.lora.dropout = 0.25;
  o.lora.targets = parse_lora_targets("q,v,o,down", o.config);
  check_every_gradient(o, 15);
}

TEST(ModelGradient, LoraDropoutChangesTheOutputOnlyWhenEnabled) {
  CpuBackend<double> backend;
  ModelOptions o = tiny_options(true);
  o.lora.rank = 2;
  o.lora.dropout = 0.5;
  o.lora.targets = parse_lora_targets("q,k,v,o", o.config);
  Model model(backend, o);
  randomize(model, 16);
  const Batch batch = random_batch(o, 17);
  const std::vector<double> off = model.logits(batch.tokens.data());
  model.set_lora_dropout(true, 1);
  const std::vector<double> on1 = model.logits(batch.tokens.data());
  model.set_lora_dropout(true, 2);
  const std::vector<double> on2 = model.logits(batch.tokens.data());
  model.set_lora_dropout(false, 1);
  EXPECT_NE(off, on1);
  EXPECT_NE(on1, on2);
  EXPECT_EQ(model.logits(batch.tokens.data()), off);
}

TEST(ModelGradient, FrozenWeightsGetNoGradientOrMemory) {
  CpuBackend<double> backend;
  ModelOptions o = tiny_options(true);
  o.trainable = TrainableConfig::parse("embed,norm");
  o.lora.rank = 2;
  o.lora.targets = parse_lora_targets("q_proj,k_proj,v_proj,o_proj", o.config);
  Model model(backend, o);
  int64_t trainable = 0;
  for (const Param& p : model.params().all()) {
    const bool expect_trainable = p.role == ParamRole::LoraA || p.role == ParamRole::LoraB ||
                                  p.role == ParamRole::Embedding || p.is_norm();
    EXPECT_EQ(p.trainable, expect_trainable) << p.name;
    EXPECT_EQ(p.grad.empty(), !expect_trainable) << p.name;
    if (p.trainable) trainable += p.numel();
  }
  EXPECT_EQ(model.params().count(true), trainable);
  EXPECT_EQ(model.params().grad_bytes() >= size_t(trainable) * 8, true);
  EXPECT_LT(model.params().grad_bytes(), size_t(model.params().count(false)) * 8);
  EXPECT_NE(model.params().find("model.layers.1.self_attn.o_proj.lora_B.weight"), nullptr);
  EXPECT_EQ(model.params().find("model.layers.1.mlp.up_proj.lora_A.weight"), nullptr);
}

// ---- fp32 behaviour --------------------------------------------------------------------------------------------

ModelOptions small_f32_options(bool checkpointing) {  // checkpointing: every layer recomputed
  ModelOptions o = test::small_model_options();
  o.config.rope_scaling_factor = 4.0;
  o.checkpoint_layers = checkpointing ? o.config.num_hidden_layers : 0;
  o.trainable = TrainableConfig::parse("embed,norm");
  o.lora.rank = 4;
  o.lora.targets = parse_lora_targets("q,k,v,o", o.config);
  return o;
}

TEST(ModelCheckpointing, BitIdenticalGradientsAndLoss) {
  // Recomputing the first k layers (none, some, all) reproduces the same values: the same loss and gradients,
  // bit for bit, with less activation memory as k grows (k = 1 plans as much as k = 0: the one recomputed layer's
  // shared set replaces its own).
  CpuBackend<float> backend;
  ModelOptions po = small_f32_options(false);
  po.config.num_hidden_layers = 4;
  po.lora.dropout = 0.1;  // the recompute must regenerate the same dropout masks
  Model plain(backend, po);
  randomize(plain, 21);
  plain.set_lora_dropout(true, 5);
  const Batch batch = random_batch(plain.options(), 22);
  const LossResult a = plain.forward_backward(batch.tokens.data(), batch.targets.data());
  size_t previous = plain.memory_plan().activations;
  for (const int64_t k : {1, 2, 3, 4}) {
    ModelOptions co = po;
    co.checkpoint_layers = k;
    Model ckpt(backend, co);
    randomize(ckpt, 21);
    ckpt.set_lora_dropout(true, 5);
    const size_t acts = ckpt.memory_plan().activations;
    if (k == 1) EXPECT_EQ(acts, previous);
    else EXPECT_LT(acts, previous) << k;
    previous = acts;
    const LossResult b = ckpt.forward_backward(batch.tokens.data(), batch.targets.data());
    EXPECT_EQ(a.loss_sum, b.loss_sum) << k;
    for (Param& p : plain.params().all()) {
      if (!p.trainable) continue;
      Param& q = ckpt.params().get(p.name);
      ASSERT_EQ(p.grad.nbytes(), q.grad.nbytes());
      EXPECT_EQ(std::memcmp(p.grad.data, q.grad.data, p.grad.nbytes()), 0)
          << p.name << " differs with " << k << " layers recomputed";
      EXPECT_GT(test::norm(grad_of(plain, p)), 0.0) << p.name;
    }
  }
}

TEST(ModelCheckpointing, RejectsALayerCountOutsideTheModel) {
  CpuBackend<float> backend;
  ModelOptions o = small_f32_options(false);
  for (const int64_t k : {int64_t(-1), o.config.num_hidden_layers + 1}) {
    o.checkpoint_layers = k;
    try {
      Model model(backend, o);
      ADD_FAILURE() << "checkpoint_layers " << k << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("checkpoint_layers"), std::string::npos) << e.what();
    }
    EXPECT_THROW(Model::plan_memory(backend, o), Error);
  }
}

TEST(ModelCrossEntropy, ChunkSizeDoesNotChangeTheResult) {
  CpuBackend<float> backend;
  ModelOptions o = small_f32_options(false);
  o.trainable.names.push_back("lm_head");
  o.ce_chunk_rows = 5;  // 48 rows → 10 chunks, the last one partial
  ModelOptions whole = o;
  whole.ce_chunk_rows = 1000;
  Model chunked(backend, o), single(backend, whole);
  randomize(chunked, 31);
  randomize(single, 31);
  const Batch batch = random_batch(o, 32);
  const LossResult a = chunked.forward_backward(batch.tokens.data(), batch.targets.data());
  const LossResult b = single.forward_backward(batch.tokens.data(), batch.targets.data());
  // BLAS blocks differently per chunk size, so logits agree to rounding, not bitwise.
  EXPECT_NEAR(a.loss_sum, b.loss_sum, 1e-5 * std::abs(b.loss_sum));
  EXPECT_EQ(a.scored, b.scored);
  for (const char* name : {"lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"}) {
    EXPECT_LT(rel_error(grad_of(chunked, chunked.params().get(name)), grad_of(single, single.params().get(name))),
              1e-5)
        << name;
  }
}

TEST(ModelCrossEntropy, LossMatchesLogitsAndIgnoresMaskedTargets) {
  CpuBackend<double> backend;
  const ModelOptions o = tiny_options(true);
  Model model(backend, o);
  randomize(model, 41);
  const Batch batch = random_batch(o, 42);
  const std::vector<double> logits = model.logits(batch.tokens.data());
  const int64_t V = o.config.vocab_size;
  double sum = 0;
  int64_t n = 0;
  for (size_t t = 0; t < batch.targets.size(); ++t) {
    if (batch.targets[t] == -100) continue;
    double z = 0;
    for (int64_t j = 0; j < V; ++j) z += std::exp(logits[t * V + j]);
    sum += std::log(z) - logits[t * V + batch.targets[t]];
    ++n;
  }
  const LossResult r = model.forward(batch.tokens.data(), batch.targets.data());
  EXPECT_EQ(r.scored, n);
  EXPECT_NEAR(r.mean(), sum / double(n), 1e-12);
}

TEST(ModelGradient, AccumulatesAcrossCallsAndHonoursLossScale) {
  CpuBackend<double> backend;
  Model model(backend, tiny_options(true));
  randomize(model, 51);
  const Batch batch = random_batch(model.options(), 52);
  model.params().zero_grads();
  const LossResult r = model.forward_backward(batch.tokens.data(), batch.targets.data());
  Param& q = model.params().get("model.layers.0.self_attn.q_proj.weight");
  const std::vector<double> once = grad_of(model, q);
  // Second call with an explicit scale equal to 2/scored: total = 3× the mean-loss gradient.
  model.forward_backward(batch.tokens.data(), batch.targets.data(), 2.0 / double(r.scored));
  const std::vector<double> thrice = grad_of(model, q);
  for (size_t i = 0; i < once.size(); ++i) EXPECT_NEAR(thrice[i], 3 * once[i], 1e-12 + 1e-9 * std::abs(once[i]));
}

TEST(ModelSeqLen, ShorterSequencesMatchAModelPlannedForThem) {
  CpuBackend<double> backend;
  ModelOptions long_opts = tiny_options(true), short_opts = tiny_options(true);
  long_opts.attention.sft_rule = short_opts.attention.sft_rule = true;  // G = L/4 when L % 4 == 0, else 4
  long_opts.attention.sft_ratio_multiple = short_opts.attention.sft_ratio_multiple = 4;
  long_opts.attention.sft_group_size = short_opts.attention.sft_group_size = 4;
  long_opts.seq_len = 16;
  short_opts.seq_len = 6;
  Model planned_long(backend, long_opts), planned_short(backend, short_opts);
  randomize(planned_long, 101);
  for (Param& p : planned_long.params().all())
    upload_f64(backend, planned_short.params().get(p.name).value, download_f64(backend, p.value));
  const Batch batch = random_batch(short_opts, 102);
  planned_long.set_seq_len(6);
  EXPECT_EQ(planned_long.mask().group, 4);
  EXPECT_LT(rel_error(planned_long.logits(batch.tokens.data()), planned_short.logits(batch.tokens.data())), 1e-13);
  planned_long.params().zero_grads();
  planned_short.params().zero_grads();
  const LossResult a = planned_long.forward_backward(batch.tokens.data(), batch.targets.data());
  const LossResult b = planned_short.forward_backward(batch.tokens.data(), batch.targets.data());
  EXPECT_NEAR(a.loss_sum, b.loss_sum, 1e-12);
  Param& q = planned_long.params().get("model.layers.1.self_attn.q_proj.weight");
  EXPECT_LT(rel_error(grad_of(planned_long, q), grad_of(planned_short, planned_short.params().get(q.name))), 1e-12);
  EXPECT_THROW(planned_long.set_seq_len(17), Error);
  planned_long.set_seq_len(16);
  EXPECT_EQ(planned_long.mask().group, 4);
}

// ---- causality --------------------------------------------------------------------------------------------------

std::vector<double> logits_with_token_changed(Model& m, std::vector<int32_t> tokens, size_t position) {
  tokens[position] = (tokens[position] + 1) % int32_t(m.options().config.vocab_size);
  return m.logits(tokens.data());
}

TEST(ModelCausality, LaterTokensNeverChangeEarlierOutputs) {
  for (bool s2 : {false, true}) {
    CpuBackend<float> backend;
    ModelOptions o = small_f32_options(false);
    o.attention.use_s2 = s2;
    o.batch = 1;
    Model model(backend, o);
    randomize(model, 61);
    const Batch batch = random_batch(o, 62);
    const std::vector<double> base = model.logits(batch.tokens.data());
    const int64_t V = o.config.vocab_size;
    for (size_t p : {size_t(5), size_t(12), size_t(23)}) {
      const std::vector<double> changed = logits_with_token_changed(model, batch.tokens, p);
      for (size_t i = 0; i < p * V; ++i)
        ASSERT_EQ(base[i], changed[i]) << "s2=" << s2 << ": token " << p << " changed the output at position " << i / V;
      bool later_changed = false;
      for (size_t i = p * V; i < base.size(); ++i) later_changed |= base[i] != changed[i];
      EXPECT_TRUE(later_changed) << "changing token " << p << " must change its own logits";
    }
  }
}

TEST(ModelCausality, RollVariantLeaksTheLastTokensIntoTheFirst) {
  CpuBackend<float> backend;
  ModelOptions o = small_f32_options(false);
  o.attention.variant = S2Variant::Roll;
  o.batch = 1;
  Model model(backend, o);
  randomize(model, 71);
  const Batch batch = random_batch(o, 72);
  const std::vector<double> base = model.logits(batch.tokens.data());
  const std::vector<double> changed = logits_with_token_changed(model, batch.tokens, o.seq_len - 1);
  EXPECT_NE(base[0], changed[0]) << "roll: position 0 of the shifted heads attends the last G/2 tokens";
}

// ---- configuration -------------------------------------------------------------------------------------------------

TEST(ModelConfig, RopeFactorFollowsLongLoraCeilRule) {
  EXPECT_EQ(derive_rope_factor(8192, 4096, 1.0), 2.0);
  EXPECT_EQ(derive_rope_factor(16384, 4096, 1.0), 4.0);
  EXPECT_EQ(derive_rope_factor(100000, 4096, 1.0), 25.0);  // ceil, not 24.41
  EXPECT_EQ(derive_rope_factor(18432, 4096, 1.0), 5.0);
  EXPECT_EQ(derive_rope_factor(4096, 4096, 1.0), 1.0);     // not longer: unchanged
  EXPECT_EQ(derive_rope_factor(8192, 4096, 2.0), 2.0);     // original = 4096·2 already covers it
  EXPECT_EQ(derive_rope_factor(32768, 4096, 2.0), 4.0);    // ceil(32768 / 8192), replacing the old factor
  EXPECT_THROW(derive_rope_factor(0, 4096, 1.0), Error);
}

TEST(ModelConfig, InvalidArchitecturesNameTheField) {
  ModelConfig c = tiny_options(false).config;
  c.num_key_value_heads = 3;
  try {
    c.validate();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_key_value_heads (3)"), std::string::npos) << e.what();
  }
  c = tiny_options(false).config;
  c.hidden_size = 18;  // 18 / 4 heads
  EXPECT_THROW(c.validate(), Error);
  c = tiny_options(false).config;
  c.vocab_size = 0;
  EXPECT_THROW(c.validate(), Error);
  EXPECT_THROW(parse_lora_targets("q,kk", tiny_options(false).config), Error);
}

TEST(ModelInputs, BadTokenIdsAndTargetsAreClearErrors) {
  CpuBackend<float> backend;
  ModelOptions o = tiny_options(false);
  Model model(backend, o);
  Batch batch = random_batch(o, 81);
  batch.tokens[3] = int32_t(o.config.vocab_size);
  try {
    model.forward(batch.tokens.data(), batch.targets.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("at position 3"), std::string::npos) << e.what();
  }
  batch = random_batch(o, 81);
  batch.targets[2] = -7;
  EXPECT_THROW(model.forward(batch.tokens.data(), batch.targets.data()), Error);
}

TEST(ModelInit, LoraStartsAsTheBaseModelAndFollowsPeftInit) {
  CpuBackend<double> backend;
  ModelOptions base_opts = tiny_options(true);
  ModelOptions lora_opts = base_opts;
  lora_opts.lora.rank = 4;
  lora_opts.lora.targets = parse_lora_targets("q,k,v,o", lora_opts.config);
  Model base(backend, base_opts), lora(backend, lora_opts);
  base.init_random(5);
  lora.init_random(99);
  // Same base weights in both, B = 0 ⇒ identical outputs.
  for (Param& p : base.params().all())
    upload_f64(backend, lora.params().get(p.name).value, download_f64(backend, p.value));
  const Batch batch = random_batch(base_opts, 91);
  EXPECT_EQ(base.logits(batch.tokens.data()), lora.logits(batch.tokens.data()));
  Param& a = lora.params().get("model.layers.0.self_attn.q_proj.lora_A.weight");
  const std::vector<double> av = download_f64(backend, a.value);
  const double bound = 1.0 / std::sqrt(double(a.shape[1]));
  double max_abs = 0;
  for (double x : av) max_abs = std::max(max_abs, std::abs(x));
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.5 * bound);
  for (double x : download_f64(backend, lora.params().get("model.layers.0.self_attn.q_proj.lora_B.weight").value))
    EXPECT_EQ(x, 0.0);
  for (double x : download_f64(backend, lora.params().get("model.norm.weight").value)) EXPECT_EQ(x, 1.0);
}

}  // namespace
}  // namespace ll
