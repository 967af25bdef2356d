// The sequence-tiled MLP (ModelOptions::mlp_tile_rows): every layer's MLP runs over row tiles into buffers shared
// by all layers, and backward recomputes each tile's intermediates. Against the untiled model: the same losses and
// gradients (fp64: to 1e-12; fp32: losses to 1e-6, gradients within fp32's own rounding — the matrix products' row
// blocking changes with the tile) for Llama full fine-tuning and LoRA+ on
// every linear, with S2, checkpointing and offload, tiles that do and do not divide T and one larger than T, shorter
// sequences, GPT-NeoX's two residual forms and the KV-cache path; finite differences with tiling on (LoRA dropout
// included: each tile draws its own mask, the same in the recomputation); the plan smaller by exactly the MLP
// intermediates and equal to what is allocated; bad values named.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "core/profiling_backend.h"
#include "core/tensor_host.h"
#include "cpu/cpu_backend.h"
#include "cuda/op_checks.h"
#include "model/model.h"
#include "model/param_select.h"
#include "model_test_options.h"
#include "neox_test_options.h"
#include "test_util.h"
#include "train/memory_check.h"
#include "train/train_flags.h"
#include "util/error.h"
#include "util/flags.h"
#include "util/random.h"

namespace ll {
namespace {

void randomize(Model& model, uint64_t seed) {
  Rng rng(seed);
  for (Param& p : model.params().all()) {
    std::vector<double> v(p.numel());
    const double scale = p.is_norm()                        ? 0.0
                         : p.role == ParamRole::Embedding   ? 1.0
                         : p.shape.size() < 2               ? 0.1  // a bias
                                                            : 1.0 / std::sqrt(double(p.shape[1]));
    for (double& x : v) x = p.is_norm() ? 1.0 + 0.2 * rng.normal() : scale * rng.normal();
    upload_f64(model.backend(), p.value, v);
  }
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};
Batch random_batch(int64_t T, int64_t L, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  Batch b;
  for (int64_t t = 0; t < T; ++t) b.tokens.push_back(int32_t(rng.below(vocab)));
  for (int64_t t = 0; t < T; ++t) b.targets.push_back((t + 1) % L ? b.tokens[size_t(t + 1)] : -100);
  return b;
}

// Loss sums of two steps at the planned length and one 8 tokens shorter (set_seq_len); the trainable gradients
// accumulated over the three.
struct Outcome {
  std::vector<double> losses;
  std::vector<std::vector<double>> grads;
};
Outcome train_three_steps(Backend& backend, const ModelOptions& o) {
  Model model(backend, o);
  randomize(model, 31);
  model.set_lora_dropout(true, 7);
  Outcome out;
  for (uint64_t step = 0; step < 3; ++step) {
    if (step == 2) model.set_seq_len(o.seq_len - 8);
    const int64_t L = model.seq_len();
    const Batch b = random_batch(o.batch * L, L, o.config.vocab_size, 100 + step);
    out.losses.push_back(model.forward_backward(b.tokens.data(), b.targets.data()).loss_sum);
  }
  for (Param& p : model.params().all())
    if (p.trainable) out.grads.push_back(download_f64(backend, p.grad));
  return out;
}

ModelOptions with_tiles(ModelOptions o, int64_t rows) {
  o.mlp_tile_rows = rows;
  return o;
}

// Tiled against untiled on fp64 (everything to 1e-12) and fp32 (see above), for tiles of
// 5 rows (not dividing T), 8 (dividing), and more rows than T.
void expect_tiles_match(const ModelOptions& o) {
  const int64_t T = o.batch * o.seq_len;
  ASSERT_NE(T % 5, 0);
  ASSERT_EQ(T % 8, 0);
  CpuBackend<double> f64;
  CpuBackend<float> f32;
  const Outcome ref64 = train_three_steps(f64, o), ref32 = train_three_steps(f32, o);
  for (const int64_t rows : {int64_t(5), int64_t(8), T + 3}) {
    SCOPED_TRACE("mlp_tile_rows " + std::to_string(rows));
    const Outcome t64 = train_three_steps(f64, with_tiles(o, rows)), t32 = train_three_steps(f32, with_tiles(o, rows));
    ASSERT_EQ(t64.losses.size(), ref64.losses.size());
    for (size_t i = 0; i < ref64.losses.size(); ++i) {
      EXPECT_GT(ref64.losses[i], 0.0);
      EXPECT_LE(std::abs(t64.losses[i] - ref64.losses[i]), 1e-12 * std::abs(ref64.losses[i])) << "step " << i;
      // fp32: the matrix products' blocking follows the rows, so a row's sums may round differently.
      EXPECT_LE(std::abs(t32.losses[i] - ref32.losses[i]), 1e-6 * std::abs(ref32.losses[i])) << "fp32, step " << i;
    }
    ASSERT_EQ(t64.grads.size(), ref64.grads.size());
    ASSERT_GT(ref64.grads.size(), 0u);
    for (size_t i = 0; i < ref64.grads.size(); ++i) {
      ASSERT_GT(test::norm(ref64.grads[i]), 0.0) << "gradient " << i;
      EXPECT_LT(test::rel_error(t64.grads[i], ref64.grads[i]), 1e-12) << "fp64 gradient " << i;
      // fp32: as close to the untiled gradient as fp32 rounding allows — within the untiled fp32 gradient's own
      // distance from the fp64 one (a few 1e-6 on these shapes).
      const double rounding = test::rel_error(ref32.grads[i], ref64.grads[i]);
      EXPECT_LT(test::rel_error(t32.grads[i], ref32.grads[i]), std::max(2 * rounding, 1e-6)) << "fp32 gradient " << i;
    }
  }
}

// Llama: GQA 6/2, hidden 48, intermediate 72, 3 layers, S2, batch 2 × 24 (T = 48), full fine-tuning.
ModelOptions llama_options() {
  ModelOptions o = test::small_model_options(3);
  o.config.rope_scaling_factor = 2.0;
  return o;
}

ModelOptions lora_plus(ModelOptions o, double dropout = 0) {
  o.trainable = TrainableConfig::parse("embed,norm");
  o.lora.rank = 4;
  o.lora.alpha = 8;
  o.lora.dropout = dropout;
  o.lora.targets = parse_lora_targets(o.config.model_type == "gpt_neox" ? "query_key_value,dense,dense_h_to_4h,"
                                                                            "dense_4h_to_h"
                                                                          : "q,k,v,o,gate,up,down",
                                      o.config);
  return o;
}

TEST(MlpTiles, LlamaFullFineTuningMatchesTheUntiledModel) { expect_tiles_match(llama_options()); }

TEST(MlpTiles, LlamaLoraPlusOnEveryLinearMatchesTheUntiledModel) { expect_tiles_match(lora_plus(llama_options())); }

TEST(MlpTiles, CheckpointingAndOffloadMatchTheUntiledModel) {
  ModelOptions o = lora_plus(llama_options());
  o.config.num_hidden_layers = 4;
  o.checkpoint_layers = 3;  // layers 0..2 recomputed, the input of layer 0 offloaded
  o.offload_checkpoints = true;
  expect_tiles_match(o);
  o.checkpoint_layers = 4;
  o.offload_checkpoints = false;
  expect_tiles_match(o);
}

// Backward runs a layer's tiles last to first and reuses the last tile its forward (or recomputation) left in the
// buffers: with one tile and every layer recomputed, tiling adds no product at all; without recomputation only the
// layers below the top one recompute their MLP's up-projections (gate and up: two products each).
TEST(MlpTiles, TheLastTileOfTheLastForwardIsNotRecomputed) {
  const auto products_per_step = [](const ModelOptions& o) {
    CpuBackend<double> inner;
    ProfilingBackend profiler(inner);
    Model model(profiler, o);
    randomize(model, 3);
    const int64_t T = o.batch * o.seq_len;
    const Batch b = random_batch(T, o.seq_len, o.config.vocab_size, 5);
    profiler.reset(), profiler.set_enabled(true);
    model.forward_backward(b.tokens.data(), b.targets.data());
    int64_t calls = 0;
    for (const ProfilingBackend::OpStat& s : profiler.stats())
      if (s.op == "linear_forward" || s.op == "lora_forward") calls += s.calls;
    return calls;
  };
  ModelOptions o = llama_options();
  const int64_t T = o.batch * o.seq_len, layers = o.config.num_hidden_layers;
  o.checkpoint_layers = layers;
  EXPECT_EQ(products_per_step(with_tiles(o, T)), products_per_step(o)) << "one tile, every layer recomputed";
  EXPECT_EQ(products_per_step(with_tiles(o, T + 7)), products_per_step(o)) << "a tile longer than T";
  o.checkpoint_layers = 0;
  EXPECT_EQ(products_per_step(with_tiles(o, T)), products_per_step(o) + 2 * (layers - 1)) << "no recomputation";
  // Two tiles, every layer recomputed: the first tile of each layer is recomputed (gate and up), the last is not.
  o.checkpoint_layers = layers;
  // (The top layer's set is still whole after the forward, so the engine recomputes layers 0..L-2 only.)
  EXPECT_EQ(products_per_step(with_tiles(o, T / 2)), products_per_step(o) + 3 * layers + 3 * (layers - 1) + 2 * layers)
      << "two tiles: a layer's forward and its recomputation each run one more tile (gate, up, down), backward "
         "recomputes the first tile (gate, up)";
}

// Pythia's shape at batch 2 × 12 (T = 24): parallel and sequential residual, biases on every linear, full fine-tuning
// and LoRA on every linear.
TEST(MlpTiles, GptNeoXBothResidualFormsMatchTheUntiledModel) {
  for (const bool parallel : {true, false}) {
    SCOPED_TRACE(parallel ? "parallel residual" : "sequential residual");
    ModelOptions o = test::tiny_neox_options(parallel);
    o.seq_len = 12;
    o.attention.group_ratio = 0.5;  // groups of 6 tokens
    expect_tiles_match(o);
    expect_tiles_match(lora_plus(o));
  }
}

// Central differences of the fp64 loss with tiling on (tiles of 3 rows over T = 16: the last one shorter).
int check_gradients(const ModelOptions& o, uint64_t seed) {
  CpuBackend<double> be;
  Model model(be, o);
  model.set_lora_dropout(true, seed);  // no effect unless o.lora.dropout > 0
  randomize(model, seed);
  const int64_t T = o.batch * o.seq_len;
  const Batch b = random_batch(T, o.seq_len, o.config.vocab_size, seed + 1);
  return test::expect_trainable_gradients(model, b.tokens, b.targets);
}

TEST(MlpTilesGradient, LlamaFullFineTuningMatchesFiniteDifferences) {
  const ModelOptions o = with_tiles(test::tiny_model_options(), 3);
  EXPECT_EQ(check_gradients(o, 21), 1 + 2 * 9 + 2);  // embed, 2 layers × 9 tensors, final norm, lm_head
}

TEST(MlpTilesGradient, LlamaLoraWithDropoutOnTheMlpMatchesFiniteDifferences) {
  ModelOptions o = with_tiles(test::tiny_model_options(), 3);
  o = lora_plus(o, 0.25);
  o.checkpoint_layers = 2;  // the recomputation regenerates each tile's mask
  EXPECT_EQ(check_gradients(o, 22), 1 + 2 * 2 + 1 + 2 * 7 * 2);  // embed, 2 norms × 2 layers + final, 7 × (A, B) × 2
}

TEST(MlpTilesGradient, GptNeoXBothResidualFormsMatchFiniteDifferences) {
  for (const bool parallel : {true, false}) {
    SCOPED_TRACE(parallel ? "parallel residual" : "sequential residual");
    EXPECT_EQ(check_gradients(with_tiles(test::tiny_neox_options(parallel), 3), 23), 1 + 2 * 12 + 2 + 1);
  }
}

// LoRA dropout draws each tile's mask from its own seed: the tiled model is a different (equally valid) draw, so
// its loss differs from the untiled one — and equals it with dropout off (above).
TEST(MlpTiles, EachTileDrawsItsOwnDropoutMask) {
  const ModelOptions o = lora_plus(llama_options(), 0.3);
  CpuBackend<double> be;
  const Outcome untiled = train_three_steps(be, o), tiled = train_three_steps(be, with_tiles(o, 5));
  const Outcome again = train_three_steps(be, with_tiles(o, 5));
  EXPECT_NE(tiled.losses[0], untiled.losses[0]);
  EXPECT_EQ(tiled.losses, again.losses);  // deterministic in the seed
}

// KV-cache inference (prefill in chunks, then single-token decode steps) gives the untiled logits.
TEST(MlpTiles, KvCacheInferenceMatchesTheUntiledModel) {
  ModelOptions o = llama_options();
  o.attention.use_s2 = false;
  o.batch = 1;
  std::vector<std::vector<double>> logits;
  for (const int64_t rows : {int64_t(0), int64_t(7)}) {
    CpuBackend<double> be;
    Model model(be, with_tiles(o, rows));
    randomize(model, 41);
    model.enable_kv_cache(40);
    const Batch b = random_batch(30, 30, o.config.vocab_size, 42);
    std::vector<double> all = model.append_tokens(b.tokens.data(), 29);  // chunks of 24 and 5
    const std::vector<double> next = model.append_tokens(b.tokens.data() + 29, 1);
    all.insert(all.end(), next.begin(), next.end());
    logits.push_back(all);
  }
  ASSERT_GT(test::norm(logits[0]), 0.0);
  EXPECT_LT(test::rel_error(logits[1], logits[0]), 1e-12);
}

// The plan with tiling: the MLP intermediates of every layer set ([T, F] each) become one [N, F] buffer each, and
// the MLP's backward scratch shrinks to N rows (the attention's scratch, which shares its memory, then sets the
// size): smaller by exactly that, and what the model allocates.
TEST(MlpTilesPlan, SmallerByTheMlpIntermediatesAndEqualToTheAllocation) {
  const ModelOptions o = llama_options();  // f32, no LoRA, no checkpointing: 3 layer sets
  const ModelConfig& c = o.config;
  const size_t T = size_t(o.batch * o.seq_len), F = size_t(c.intermediate_size), N = 8, f32 = 4;
  ASSERT_EQ(T * F * f32 % 256, 0u);  // every buffer below is a whole number of the arena's 256-byte alignment
  ASSERT_EQ(N * F * f32 % 256, 0u);
  const size_t sets = size_t(c.num_hidden_layers);
  const size_t saved = 3 * sets * T * F * f32 - 3 * N * F * f32;  // gate, up, act
  const size_t attention_scratch = T * size_t(2 * c.q_dim() + 2 * c.kv_dim()) * f32;  // dq, dk, dv, d_attn
  const size_t scratch = std::max(3 * T * F * f32, attention_scratch) - std::max(3 * N * F * f32, attention_scratch);
  ASSERT_GT(scratch, 0u);
  CpuBackend<float> be;
  const MemoryPlan untiled = Model::plan_memory(be, o), tiled = Model::plan_memory(be, with_tiles(o, int64_t(N)));
  EXPECT_EQ(untiled.activations - tiled.activations, saved + scratch);
  EXPECT_EQ(tiled.frozen_weights + tiled.trainable_weights + tiled.gradients,
            untiled.frozen_weights + untiled.trainable_weights + untiled.gradients);
  for (const ModelOptions& x : {with_tiles(o, int64_t(N)), with_tiles(lora_plus(o, 0.1), 5),
                                with_tiles(o, int64_t(T) + 5), with_tiles(test::tiny_neox_options(true), 3),
                                with_tiles(test::tiny_neox_options(false), 3)}) {
    ModelOptions k = x;
    k.checkpoint_layers = 1;
    for (const ModelOptions& y : {x, k}) {
      const MemoryPlan plan = Model::plan_memory(be, y);
      Model model(be, y);
      EXPECT_EQ(plan.activations, model.memory_plan().activations) << y.config.model_type << " " << y.mlp_tile_rows;
      EXPECT_EQ(plan.total(), model.memory_plan().total());
    }
  }
  // A tile larger than T plans T rows: what tiles of exactly T rows plan.
  EXPECT_EQ(Model::plan_memory(be, with_tiles(o, int64_t(T) + 5)).activations,
            Model::plan_memory(be, with_tiles(o, int64_t(T))).activations);
}

TEST(MlpTilesPlan, NegativeTileRowsAreRefused) {
  CpuBackend<float> be;
  const std::string e = test::error_of([&] { Model::plan_memory(be, with_tiles(llama_options(), -4)); });
  EXPECT_NE(e.find("mlp_tile_rows (rows per MLP tile; 0: off) must be >= 0, got -4"), std::string::npos) << e;
}

// The CPU backend planning with the CUDA backend's dtypes (bf16 activations and weights, f32 statistics and
// gradients): Model::plan_memory allocates nothing, so the device plan can be computed here.
class CudaDTypesPlanner final : public CpuBackend<float> {
 public:
  DTypePolicy dtypes() const override { return cuda_checks::policy(); }
};

// Llama-2-7B LoRA+S2 as bench_cuda's e2e case builds it (LoRA r 8, alpha 16 on q,k,v,o; embeddings and norms
// trained; PI factor for the length; S2 ratio 1/4; batch 1), every layer checkpointed, their inputs offloaded.
ModelOptions llama2_7b_lora_s2(int64_t seq_len, int64_t mlp_tile_rows) {
  ModelOptions m;
  m.config.hidden_size = 4096, m.config.intermediate_size = 11008, m.config.num_attention_heads = 32;
  m.config.num_key_value_heads = 32, m.config.num_hidden_layers = 32, m.config.vocab_size = 32000;
  m.config.max_position_embeddings = 4096;
  m.config.rope_scaling_factor = derive_rope_factor(seq_len, m.config.max_position_embeddings, 1.0);
  m.seq_len = seq_len;
  m.checkpoint_layers = 32;
  m.offload_checkpoints = true;
  m.mlp_tile_rows = mlp_tile_rows;
  m.attention.use_s2 = true;
  m.lora.rank = 8;
  m.lora.alpha = 16;
  m.lora.targets = parse_lora_targets("q_proj,k_proj,v_proj,o_proj", m.config);
  m.trainable = TrainableConfig::parse("embed,norm");
  return m;
}

// Issue 21's number, predicted by the engine's planner (what bench_cuda --max_context and build/train's start-up
// check compute on the GPU): the longest Llama-2-7B LoRA+S2 context whose plan fits a 78.1 GiB budget (an H100's
// free memory less the headroom, as bench_cuda measured it). Without tiles the planner gives the 282,624 tokens the
// H100 ran (docs/gpu-log.md); with --mlp_tile_rows 8192 it predicts more (docs/architecture.md quotes both).
TEST(MlpTilesPlan, PredictsTheLongestLlama2_7bContextOnAnH100) {
  CudaDTypesPlanner planner;
  const size_t budget = size_t(78.1 * double(size_t(1) << 30));
  constexpr int64_t kStep = 4096;
  std::map<int64_t, int64_t> longest;
  for (const int64_t tile : {int64_t(0), int64_t(8192), int64_t(4096)}) {
    longest[tile] = longest_fitting_seq_len(planner, llama2_7b_lora_s2(kStep, tile), 0, 1, budget, kStep);
    const DeviceMemoryNeeds n = plan_rank_memory(planner, llama2_7b_lora_s2(longest[tile], tile), 0, 1);
    std::printf("Llama-2-7B LoRA+S2, offloaded checkpoints, --mlp_tile_rows %lld: longest context %lld tokens "
                "(plan %.2f GiB: activations %.2f GiB; host %.2f GiB)\n",
                (long long)tile, (long long)longest[tile], double(n.total()) / double(size_t(1) << 30),
                double(n.activations) / double(size_t(1) << 30),
                double(Model::plan_memory(planner, llama2_7b_lora_s2(longest[tile], tile)).host_staging) /
                    double(size_t(1) << 30));
  }
  EXPECT_EQ(longest[0], 282624);  // what the H100 measured (one step ran, peak 77.54 GiB)
  EXPECT_GT(longest[8192], longest[0]);
  EXPECT_GE(longest[4096], longest[8192]);
}

// build/train --mlp_tile_rows: a count of tokens; anything else is an error naming the flag.
TEST(MlpTilesFlag, TakesATokenCountAndNamesItselfOnBadValues) {
  auto parse = [](const std::string& value, TrainOptions* o) {
    Flags flags("train", "test");
    add_train_flags(flags, *o);
    std::vector<std::string> args{"train", "--mlp_tile_rows", value};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    flags.parse(int(argv.size()), argv.data());
    flags.check_values();
  };
  TrainOptions o;
  EXPECT_EQ(o.mlp_tile_rows, 0);  // off by default
  parse("8192", &o);
  EXPECT_EQ(o.mlp_tile_rows, 8192);
  for (const std::string bad : {"-1", "2.5", "many", ""}) {
    TrainOptions x;
    const std::string e = test::error_of([&] { parse(bad, &x); });
    EXPECT_NE(e.find("--mlp_tile_rows"), std::string::npos) << "`" << bad << "`: " << e;
  }
}

}  // namespace
}  // namespace ll
