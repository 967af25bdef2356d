// ProfilingBackend: pure forwarding (bit-identical training step), per-op call counts equal to what the model's
// code makes (src/model/model.cpp, src/model/arch/llama.cpp), synchronisation only while enabled, reset, and the
// table/JSON reports.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "model/param_select.h"
#include "core/profiling_backend.h"
#include "core/tensor_host.h"
#include "test_util.h"
#include "model_test_options.h"

namespace ll {
namespace {

// A CPU backend that counts synchronize() calls and reports device memory, to see both forwarded.
class CountingBackend : public CpuBackend<float> {
 public:
  std::string name() const override { return "counting"; }
  void synchronize() override { ++syncs; }
  bool device_memory(DeviceMemoryState* state) const override {
    state->free_bytes = 7, state->total_bytes = 11, state->in_use_bytes = 3, state->device = "fake device";
    return true;
  }
  int64_t syncs = 0;
};

ModelOptions tiny(bool checkpointing, bool lora) {
  ModelOptions o = test::tiny_model_options();
  o.checkpoint_layers = checkpointing ? o.config.num_hidden_layers : 0;
  o.ce_chunk_rows = 5;  // 16 rows → 4 chunks, the last one partial
  if (lora) {
    o.trainable = TrainableConfig::parse("embed,norm");
    o.lora.rank = 2;
    o.lora.dropout = 0.25;
    o.lora.targets = parse_lora_targets("q,v,down", o.config);
  }
  return o;
}

// The op calls one forward_backward makes, read off src/model/model.cpp and arch/llama.cpp: forward_layers (embedding,
// per layer 2 norms, 7 projections, 2 RoPEs, attention, SwiGLU, 2 residual adds; final norm), the head per logits chunk
// (LM-head product, cross-entropy, LM-head backward), the final norm's backward, per layer the backward (plus the
// recomputed forward of each checkpointed layer but the last), the embedding backward; uploads of ids and targets,
// the losses' download. A LoRA projection with dropout runs dropout once forward and twice plus one add backward.
std::map<std::string, int64_t> expected_calls(const ModelOptions& o, bool embed_trainable) {
  const int64_t n = o.config.num_hidden_layers;
  const int64_t fwd = n + std::max<int64_t>(o.checkpoint_layers - 1, 0);  // layer forwards, recomputed included
  const int64_t T = o.batch * o.seq_len, chunks = (T + o.ce_chunk_rows - 1) / o.ce_chunk_rows;
  const int64_t projections = 7;  // Llama's q, k, v, o, gate, up, down
  const int64_t adapted = o.lora.enabled() ? int64_t(o.lora.targets.size()) : 0;
  const int64_t plain = projections - adapted, drop = o.lora.dropout > 0 ? adapted : 0;
  std::map<std::string, int64_t> m = {
      {"embedding_forward", 1},
      {"rmsnorm_forward", 2 * fwd + 1},
      {"rmsnorm_backward", 2 * n + 1},
      {"linear_forward", plain * fwd + chunks},
      {"linear_backward", plain * n + chunks},
      {"lora_forward", adapted * fwd},
      {"lora_backward", adapted * n},
      {"dropout", drop * fwd + 2 * drop * n},
      {"rope_forward", 2 * fwd},
      {"rope_backward", 2 * n},
      {"attention_forward", fwd},
      {"attention_backward", n},
      {"swiglu_forward", fwd},
      {"swiglu_backward", n},
      {"add", 2 * fwd + drop * n},
      {"cross_entropy", chunks},
      {"embedding_backward", embed_trainable ? 1 : 0},
      {"copy_from_host", 2},
      {"copy_to_host", 1},
  };
  for (auto it = m.begin(); it != m.end();) it = it->second == 0 ? m.erase(it) : std::next(it);
  return m;
}

std::map<std::string, int64_t> recorded_calls(const ProfilingBackend& prof) {
  std::map<std::string, int64_t> m;
  for (const auto& s : prof.stats()) m[s.op] = s.calls;
  return m;
}

void randomize(Model& model, uint64_t seed) {
  Rng rng(seed);
  for (Param& p : model.params().all()) {
    std::vector<double> v(p.numel());
    for (double& x : v) x = p.is_norm() ? 1.0 + 0.2 * rng.normal() : 0.3 * rng.normal();
    upload_f64(model.backend(), p.value, v);
  }
}

std::vector<int32_t> tokens_for(const ModelOptions& o, uint64_t seed, bool targets) {
  Rng rng(seed);
  std::vector<int32_t> t(size_t(o.batch * o.seq_len));
  for (size_t i = 0; i < t.size(); ++i)
    t[i] = targets && i % 5 == 4 ? -100 : int32_t(rng.below(uint64_t(o.config.vocab_size)));
  return t;
}

// The same step on a plain CPU backend and through the wrapper: identical losses and gradients, and the expected
// per-op call counts.
void check_step(const ModelOptions& o) {
  CpuBackend<float> plain_be, inner;
  ProfilingBackend prof(inner);
  Model plain(plain_be, o), wrapped(prof, o);
  randomize(plain, 3);
  randomize(wrapped, 3);
  plain.set_lora_dropout(true, 9);
  wrapped.set_lora_dropout(true, 9);
  const std::vector<int32_t> tokens = tokens_for(o, 4, false), targets = tokens_for(o, 5, true);
  plain.params().zero_grads();
  wrapped.params().zero_grads();
  prof.set_enabled(true);
  const LossResult a = plain.forward_backward(tokens.data(), targets.data());
  const LossResult b = wrapped.forward_backward(tokens.data(), targets.data());
  prof.set_enabled(false);
  EXPECT_EQ(a.loss_sum, b.loss_sum);
  EXPECT_EQ(a.scored, b.scored);
  int compared = 0;
  for (Param& p : plain.params().all()) {
    if (!p.trainable) continue;
    const Param& q = wrapped.params().get(p.name);
    ASSERT_EQ(p.grad.nbytes(), q.grad.nbytes()) << p.name;
    EXPECT_EQ(std::memcmp(p.grad.data, q.grad.data, p.grad.nbytes()), 0) << p.name << " differs through the wrapper";
    EXPECT_GT(test::norm(download_f64(plain_be, p.grad)), 0.0) << p.name;
    ++compared;
  }
  EXPECT_GT(compared, 0);
  EXPECT_EQ(recorded_calls(prof), expected_calls(o, wrapped.params().embed().trainable));
  for (const auto& s : prof.stats()) EXPECT_GE(s.seconds, 0.0) << s.op;
}

TEST(ProfilingBackend, FullFineTuneCheckpointedStepIsBitIdenticalAndCounted) { check_step(tiny(true, false)); }

TEST(ProfilingBackend, LoraDropoutStepIsBitIdenticalAndCounted) { check_step(tiny(false, true)); }

TEST(ProfilingBackend, PartiallyCheckpointedLoraStepIsBitIdenticalAndCounted) {
  ModelOptions o = tiny(false, true);
  o.checkpoint_layers = 1;  // layer 0 recomputed, layer 1 keeps its activations
  check_step(o);
}

TEST(ProfilingBackend, AttentionRunsTwiceInEachRecomputedLayer) {
  // The recompute in backward is visible in the profile: this is what the expected counts above rely on. The last
  // checkpointed layer is not recomputed (its activations are still in the shared set).
  for (const int64_t k : {0, 1, 2}) {
    CpuBackend<float> inner;
    ProfilingBackend prof(inner);
    ModelOptions o = tiny(false, false);
    o.checkpoint_layers = k;
    Model model(prof, o);
    randomize(model, 1);
    const std::vector<int32_t> tokens = tokens_for(o, 2, false), targets = tokens_for(o, 3, true);
    prof.set_enabled(true);
    model.forward_backward(tokens.data(), targets.data());
    EXPECT_EQ(recorded_calls(prof).at("attention_forward"), o.config.num_hidden_layers + (k == 2 ? 1 : 0)) << k;
    EXPECT_EQ(recorded_calls(prof).at("attention_backward"), o.config.num_hidden_layers) << k;
  }
}

TEST(ProfilingBackend, DisabledRecordsNothingAndDoesNotSynchronize) {
  CountingBackend inner;
  ProfilingBackend prof(inner);
  EXPECT_FALSE(prof.enabled());
  const ModelOptions o = tiny(true, false);
  Model model(prof, o);  // allocation and uploads while disabled
  randomize(model, 1);
  const std::vector<int32_t> tokens = tokens_for(o, 2, false), targets = tokens_for(o, 3, true);
  model.forward_backward(tokens.data(), targets.data());
  EXPECT_TRUE(prof.stats().empty());
  EXPECT_EQ(inner.syncs, 0);
  // Enabled: one synchronisation before and one after every op.
  prof.set_enabled(true);
  model.forward(tokens.data(), targets.data());
  int64_t calls = 0;
  for (const auto& s : prof.stats()) calls += s.calls;
  EXPECT_GT(calls, 0);
  EXPECT_EQ(inner.syncs, 2 * calls);
  // An explicit synchronize is forwarded but is not an op.
  prof.synchronize();
  EXPECT_EQ(inner.syncs, 2 * calls + 1);
  EXPECT_EQ(recorded_calls(prof).count("synchronize"), 0u);
}

TEST(ProfilingBackend, ResetClearsAndRecordingResumes) {
  CpuBackend<float> inner;
  ProfilingBackend prof(inner);
  prof.set_enabled(true);
  std::vector<float> x = {1, 2, 3};
  Tensor t = test::view(x, {3});
  EXPECT_EQ(prof.sum_squares(t), 14.0);  // return values are forwarded
  prof.scale(t, 2.0);
  EXPECT_EQ(x[2], 6.0f);
  EXPECT_EQ(recorded_calls(prof), (std::map<std::string, int64_t>{{"scale", 1}, {"sum_squares", 1}}));
  prof.reset();
  EXPECT_TRUE(prof.stats().empty());
  EXPECT_TRUE(prof.to_json().empty());
  prof.zero(t);
  EXPECT_EQ(x[0], 0.0f);
  EXPECT_EQ(recorded_calls(prof), (std::map<std::string, int64_t>{{"zero", 1}}));
}

TEST(ProfilingBackend, ForwardsQueriesAndMemoryCalls) {
  CountingBackend inner;
  ProfilingBackend prof(inner);
  EXPECT_EQ(prof.name(), "counting");
  EXPECT_EQ(prof.device(), Device::CPU);
  EXPECT_EQ(prof.dtypes().act, inner.dtypes().act);
  EXPECT_EQ(prof.dtypes().stat, inner.dtypes().stat);
  DeviceMemoryState st;
  EXPECT_TRUE(prof.device_memory(&st));
  EXPECT_EQ(st.total_bytes, 11u);
  EXPECT_EQ(st.device, "fake device");
  CpuBackend<float> host;
  EXPECT_FALSE(ProfilingBackend(host).device_memory(&st));

  prof.set_enabled(true);
  void* p = prof.allocate(64);
  ASSERT_NE(p, nullptr);
  Tensor t(p, DType::F32, Device::CPU, {4});
  const float src[4] = {1, -2, 3, 4};
  prof.copy_from_host(t, src);
  float back[4] = {};
  prof.copy_to_host(back, t);
  EXPECT_EQ(std::memcmp(src, back, sizeof src), 0);
  prof.release(p);
  EXPECT_EQ(recorded_calls(prof), (std::map<std::string, int64_t>{
                                      {"allocate", 1}, {"copy_from_host", 1}, {"copy_to_host", 1}, {"release", 1}}));
}

TEST(ProfilingBackend, ForwardsTheGptNeoxOpsUnchangedAndBillsThemByName) {
  // LayerNorm, bias, GELU and partial RoPE through the wrapper give the inner backend's bits, one row per op.
  CpuBackend<float> plain, inner;
  ProfilingBackend prof(inner);
  prof.set_enabled(true);
  const int64_t T = 6, D = 16, H = 2, Dh = 8;
  Rng rng(21);
  auto random = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = float(rng.normal());
    return v;
  };
  const std::vector<float> x = random(T * D), w = random(D), b = random(D), g = random(T * D);
  std::vector<int32_t> pos = {0, 5, 9, 2, 7, 1};
  struct Run {
    std::vector<float> out, mean, rstd, dx, dw, db, gelu, dgelu, biased, dbias, roped, droped;
  };
  auto run = [&](Backend& be) {
    Run r{std::vector<float>(T * D), std::vector<float>(T), std::vector<float>(T), std::vector<float>(T * D),
          std::vector<float>(D), std::vector<float>(D), std::vector<float>(T * D), std::vector<float>(T * D), x,
          std::vector<float>(D), x, g};
    std::vector<float> xc = x, wc = w, bc = b, gc = g;
    be.layernorm_forward(test::view(r.out, {T, D}), test::view(r.mean, {T}), test::view(r.rstd, {T}),
                         test::view(xc, {T, D}), test::view(wc, {D}), test::view(bc, {D}), 1e-5);
    be.layernorm_backward(test::view(r.dx, {T, D}), test::view(r.dw, {D}), test::view(r.db, {D}),
                          test::view(gc, {T, D}), test::view(xc, {T, D}), test::view(wc, {D}), test::view(r.mean, {T}),
                          test::view(r.rstd, {T}), false);
    be.gelu_forward(test::view(r.gelu, {T, D}), test::view(xc, {T, D}));
    be.gelu_backward(test::view(r.dgelu, {T, D}), test::view(gc, {T, D}), test::view(xc, {T, D}));
    be.add_bias(test::view(r.biased, {T, D}), test::view(bc, {D}));
    be.bias_backward(test::view(r.dbias, {D}), test::view(gc, {T, D}));
    be.rope_forward(test::view(r.roped, {T, H, Dh}), test::view(pos, {T}), RopeParams{10000.0, 2.0, 4});
    be.rope_backward(test::view(r.droped, {T, H, Dh}), test::view(pos, {T}), RopeParams{10000.0, 2.0, 4});
    return r;
  };
  const Run a = run(plain), c = run(prof);
  EXPECT_EQ(a.out, c.out);
  EXPECT_EQ(a.mean, c.mean);
  EXPECT_EQ(a.rstd, c.rstd);
  EXPECT_EQ(a.dx, c.dx);
  EXPECT_EQ(a.dw, c.dw);
  EXPECT_EQ(a.db, c.db);
  EXPECT_EQ(a.gelu, c.gelu);
  EXPECT_EQ(a.dgelu, c.dgelu);
  EXPECT_EQ(a.biased, c.biased);
  EXPECT_EQ(a.dbias, c.dbias);
  EXPECT_EQ(a.roped, c.roped);
  EXPECT_EQ(a.droped, c.droped);
  EXPECT_NE(a.roped, x) << "rope_forward must have rotated something";
  EXPECT_EQ(recorded_calls(prof), (std::map<std::string, int64_t>{{"add_bias", 1},
                                                                  {"bias_backward", 1},
                                                                  {"gelu_backward", 1},
                                                                  {"gelu_forward", 1},
                                                                  {"layernorm_backward", 1},
                                                                  {"layernorm_forward", 1},
                                                                  {"rope_backward", 1},
                                                                  {"rope_forward", 1}}));
}

TEST(ProfilingBackend, StatsSortedAndTableAndJsonReportThem) {
  CpuBackend<float> inner;
  ProfilingBackend prof(inner);
  const ModelOptions o = tiny(true, false);
  Model model(prof, o);
  randomize(model, 1);
  const std::vector<int32_t> tokens = tokens_for(o, 2, false), targets = tokens_for(o, 3, true);
  prof.set_enabled(true);
  model.forward_backward(tokens.data(), targets.data());
  const auto stats = prof.stats();
  ASSERT_GT(stats.size(), 5u);
  double sum = 0;
  for (size_t i = 0; i < stats.size(); ++i) {
    sum += stats[i].seconds;
    if (i) {
      EXPECT_GE(stats[i - 1].seconds, stats[i].seconds) << "not sorted at " << stats[i].op;
    }
  }
  const std::string table = prof.table();
  for (const char* op : {"attention_forward", "attention_backward", "rmsnorm_forward", "embedding_forward",
                         "cross_entropy", "linear_backward", "sum of ops", "% ops"})
    EXPECT_NE(table.find(op), std::string::npos) << op << " missing from\n" << table;
  // Of the ops' own sum the shares add up to 100%; of a wall time twice as long, the ops are 50% and so is the rest.
  EXPECT_NE(table.find("100.0"), std::string::npos) << table;
  const std::string wall = prof.table(2 * sum);
  EXPECT_NE(wall.find("% wall"), std::string::npos);
  EXPECT_NE(wall.find("outside ops"), std::string::npos);
  EXPECT_NE(wall.find(" 50.0\n"), std::string::npos) << wall;
  const nlohmann::json j = prof.to_json();
  ASSERT_EQ(j.size(), stats.size());
  EXPECT_EQ(j[0].at("op"), stats[0].op);
  EXPECT_EQ(j[0].at("calls"), stats[0].calls);
  EXPECT_DOUBLE_EQ(j[0].at("ms").get<double>(), stats[0].seconds * 1e3);
}

}  // namespace
}  // namespace ll
