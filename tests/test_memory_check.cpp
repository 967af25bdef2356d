// The start-up memory plan: Model::plan_memory (nothing allocated) equals what a constructed model allocates;
// the per-rank plan under ZeRO-0/2/3 matches what the optimizer and the ZeRO-3 storage really hold (one rank, CPU);
// a device that is too small stops the run with "needs X GiB" and settings that would fit.
#include <gtest/gtest.h>

#include "cpu/cpu_backend.h"
#include "mpi/comm.h"
#include "mpi/zero.h"
#include "mpi/zero3.h"
#include "model/arena.h"
#include "model/model.h"
#include "model/param_select.h"
#include "model_test_options.h"
#include "neox_test_options.h"
#include "train/memory_check.h"
#include "util/error.h"

namespace ll {
namespace {

// checkpointing: every layer recomputed (tests of partial recomputation set checkpoint_layers themselves).
ModelOptions options(bool lora, bool checkpointing, double dropout = 0, bool tied = false) {
  ModelOptions o = test::small_model_options();
  o.config.tie_word_embeddings = tied;
  o.checkpoint_layers = checkpointing ? o.config.num_hidden_layers : 0;
  if (lora) {
    o.trainable = TrainableConfig::parse("embed,norm");
    o.lora.rank = 4;
    o.lora.dropout = dropout;
    o.lora.targets = parse_lora_targets("q,k,v,o,down", o.config);
  }
  return o;
}

TEST(MemoryPlan, PlannedWithoutAllocatingEqualsWhatTheModelAllocates) {
  CpuBackend<float> cpu;
  for (const ModelOptions& o : {options(true, false), options(true, true), options(true, false, 0.1),
                                options(false, false), options(false, true, 0, true)}) {
    const MemoryPlan planned = Model::plan_memory(cpu, o);
    Model model(cpu, o);
    const MemoryPlan real = model.memory_plan();
    EXPECT_EQ(planned.frozen_weights, real.frozen_weights);
    EXPECT_EQ(planned.trainable_weights, real.trainable_weights);
    EXPECT_EQ(planned.gradients, real.gradients);
    EXPECT_EQ(planned.activations, real.activations);
    EXPECT_GT(planned.activations, 0u);
  }
}

TEST(MemoryPlan, PartialRecomputationPlansOneSharedSetPlusOnePerKeptLayer) {
  CpuBackend<float> cpu;
  for (const ModelOptions& base : {options(true, false), options(true, false, 0.1), options(false, false, 0, true)}) {
    std::vector<size_t> by_k;
    for (int64_t k = 0; k <= base.config.num_hidden_layers; ++k) {
      ModelOptions o = base;
      o.checkpoint_layers = k;
      const MemoryPlan planned = Model::plan_memory(cpu, o);
      Model model(cpu, o);
      EXPECT_EQ(planned.activations, model.memory_plan().activations) << "k=" << k;
      EXPECT_EQ(planned.total(), model.memory_plan().total()) << "k=" << k;
      by_k.push_back(planned.activations);
    }
    // k = 1: the shared set replaces layer 0's own, no saving; every further recomputed layer gives up its set.
    EXPECT_EQ(by_k[1], by_k[0]);
    for (size_t k = 2; k < by_k.size(); ++k) EXPECT_LT(by_k[k], by_k[k - 1]) << "k=" << k;
    // Sets are equal in size; between k = 1 and k = N−1 the arena shrinks by exactly one set per layer (at k = N
    // the SwiGLU buffer shared across sets, if any, becomes the one set's own).
    const size_t per_set = by_k[1] - by_k[2];
    EXPECT_EQ(by_k[2] - by_k[3], per_set);
    EXPECT_EQ(activations_by_checkpoint_layers(cpu, base), by_k);
  }
}

TEST(ArenaSharing, PhasesOverlapAndTheArenaContinuesAfterTheLargest) {
  CpuBackend<float> cpu;
  Arena a(cpu, "test");
  const Arena::Handle before = a.reserve(DType::F32, {10});  // 40 bytes, padded to 256
  a.begin_shared();
  const Arena::Handle p1 = a.reserve(DType::F32, {100}), p2 = a.reserve(DType::F32, {100});  // 400 + 400
  a.next_phase();
  const Arena::Handle q1 = a.reserve(DType::F32, {64});  // 256
  a.end_shared();
  const Arena::Handle after = a.reserve(DType::F32, {1});
  EXPECT_THROW(a.next_phase(), Error);
  a.commit();
  auto at = [&](Arena::Handle h) { return static_cast<char*>(a.tensor(h).data); };
  EXPECT_EQ(at(p1) - at(before), 256);
  EXPECT_EQ(at(q1), at(p1));                      // the second phase starts where the first did
  EXPECT_EQ(at(p2) - at(p1), 512);                // 400 bytes, 256-aligned
  EXPECT_EQ(at(after) - at(p1), 512 + 512);       // after the larger phase
  EXPECT_EQ(a.bytes(), size_t(256 + 1024 + 256));
}

TEST(MemoryPlan, BackwardGradientsOfMlpAndAttentionShareMemory) {
  CpuBackend<float> cpu;
  ModelOptions o = options(true, true);
  const size_t shared = Model::plan_memory(cpu, o).activations;
  // Without sharing the attention gradients (dq, dk, dv, d_attn) would add their own bytes.
  const int64_t T = o.batch * o.seq_len;
  const size_t attention_grads = size_t(T) * size_t(2 * o.config.q_dim() + 2 * o.config.kv_dim()) * sizeof(float);
  o.config.intermediate_size = 8;  // MLP gradients now smaller than the attention ones: the arena grows by the difference
  const size_t small_mlp = Model::plan_memory(cpu, o).activations;
  const size_t mlp_grads_72 = size_t(T) * 3 * 72 * sizeof(float), mlp_grads_8 = size_t(T) * 3 * 8 * sizeof(float);
  const size_t mlp_acts_diff = size_t(T) * 3 * (72 - 8) * sizeof(float);  // gate, up, act of the one checkpointed set
  ASSERT_GT(mlp_grads_72, attention_grads);
  ASSERT_LT(mlp_grads_8, attention_grads);
  EXPECT_NEAR(double(shared) - double(small_mlp), double(mlp_acts_diff) + double(mlp_grads_72) - double(attention_grads),
              8 * 256.0);
}

TEST(MemoryPlan, FrozenDownProjectionLayersShareTheirSwiGluOutput) {
  CpuBackend<float> cpu;
  ModelOptions o = options(true, false);  // LoRA on q,k,v,o,down; no checkpointing: one activation set per layer
  const size_t with_down = Model::plan_memory(cpu, o).activations;
  o.lora.targets = parse_lora_targets("q,k,v,o", o.config);
  const size_t without_down = Model::plan_memory(cpu, o).activations;
  const int64_t T = o.batch * o.seq_len, layers = o.config.num_hidden_layers;
  const size_t act_bytes = size_t(T * o.config.intermediate_size) * sizeof(float);
  const size_t xa_bytes = size_t(T * o.lora.rank) * sizeof(float);  // the down adapter's saved x·Aᵀ per layer
  // Every layer but one gives up its SwiGLU output buffer (and the down adapter's x·Aᵀ goes too).
  EXPECT_NEAR(double(with_down) - double(without_down), double((layers - 1) * act_bytes + layers * xa_bytes),
              double(layers) * 2 * 256);
  // Full fine-tuning: down_proj's weight gradient needs every layer's own input, so nothing is shared (and no
  // adapter buffers exist): more than the LoRA plan by (layers − 1) SwiGLU outputs minus the adapters' buffers.
  ModelOptions full = o;
  full.lora = LoraConfig{};
  full.trainable = TrainableConfig::parse("", true);
  const size_t lora_buffers = size_t(layers * 4 + 1) * xa_bytes;  // x·Aᵀ of q,k,v,o per layer, and d_xa
  EXPECT_NEAR(double(Model::plan_memory(cpu, full).activations),
              double(without_down) + double((layers - 1) * act_bytes) - double(lora_buffers), double(layers) * 8 * 256);
}

TEST(MemoryPlan, RejectsBadOptionsBeforeAllocating) {
  CpuBackend<float> cpu;
  ModelOptions o = options(true, false);
  o.seq_len = 26;  // not divisible by the S2 group count
  EXPECT_THROW(Model::plan_memory(cpu, o), Error);
  o = options(true, false);
  o.batch = 0;
  EXPECT_THROW(Model::plan_memory(cpu, o), Error);
}

TEST(MemoryPlan, RankPlanMatchesTheOptimizerAndZero3StorageOnOneRank) {
  CpuBackend<float> cpu;
  std::unique_ptr<Comm> local = make_local_comm();
  const AdamWConfig adam{0.9, 0.999, 1e-8, 0.0};
  for (bool lora : {true, false}) {
    const ModelOptions o = options(lora, true);
    {  // stage 0: replicated weights, full optimizer state (f32 weights: moments only, no masters)
      Model model(cpu, o);
      DistributedOptimizer opt(cpu, model.params(), *local, adam, 0);
      const DeviceMemoryNeeds n = plan_rank_memory(cpu, o, 0, 1);
      EXPECT_EQ(n.frozen_weights + n.trainable_weights + n.gradients + n.activations, model.memory_plan().total());
      EXPECT_NEAR(double(n.optimizer), double(opt.state_bytes()), 0.01 * double(opt.state_bytes()) + 4096);
    }
    {  // stage 3 on one rank: shards hold everything, plus the gather slots
      ModelOptions z = o;
      z.external_param_storage = true;
      Model model(cpu, z);
      Zero3Storage storage(cpu, model.params(), *local);
      const DeviceMemoryNeeds n = plan_rank_memory(cpu, o, 3, 1);
      const double planned = double(n.frozen_weights + n.trainable_weights + n.gradients + n.gather_slots);
      const double real = double(storage.shard_bytes() + storage.staging_bytes());
      EXPECT_NEAR(planned, real, 0.1 * real) << "lora=" << lora;
      EXPECT_EQ(n.activations, model.memory_plan().activations);
    }
  }
}

TEST(MemoryPlan, ShardedStagesDivideWhatTheyShard) {
  CpuBackend<float> cpu;
  const ModelOptions o = options(false, true);
  const DeviceMemoryNeeds z0 = plan_rank_memory(cpu, o, 0, 8), z2 = plan_rank_memory(cpu, o, 2, 8),
                          z3 = plan_rank_memory(cpu, o, 3, 8);
  EXPECT_EQ(z2.frozen_weights + z2.trainable_weights + z2.gradients, z0.frozen_weights + z0.trainable_weights + z0.gradients);
  EXPECT_NEAR(double(z2.optimizer), double(z0.optimizer) / 8, 8.0);
  EXPECT_LT(z3.frozen_weights + z3.trainable_weights, z0.frozen_weights + z0.trainable_weights);
  EXPECT_EQ(z3.optimizer, z2.optimizer);
  EXPECT_EQ(z3.activations, z0.activations);
  EXPECT_THROW(plan_rank_memory(cpu, o, 1, 8), Error);
  EXPECT_THROW(plan_rank_memory(cpu, o, 2, 0), Error);
}

TEST(MemoryPlan, LongestFittingLengthIsTheLastThatFits) {
  CpuBackend<float> cpu;
  const ModelOptions o = options(true, true);
  auto need = [&](int64_t L) {
    ModelOptions x = o;
    x.seq_len = L;
    return plan_rank_memory(cpu, x, 0, 1).total();
  };
  const size_t available = need(40 * 64) + need(64) / 2;  // between the plans of 40 and 41 steps of 64
  ASSERT_LT(available, need(41 * 64));
  EXPECT_EQ(longest_fitting_seq_len(cpu, o, 0, 1, available, 64, 1 << 16), 40 * 64);
  EXPECT_EQ(longest_fitting_seq_len(cpu, o, 0, 1, need(64) - 1, 64, 1 << 16), 0);
  EXPECT_EQ(longest_fitting_seq_len(cpu, o, 0, 1, size_t(1) << 50, 64, 1 << 12), 1 << 12);  // capped at the limit
  EXPECT_THROW(longest_fitting_seq_len(cpu, o, 0, 1, available, 0, 64), Error);
}

// The CPU backend with a pretend device of `free` bytes.
class SmallDevice final : public CpuBackend<float> {
 public:
  explicit SmallDevice(size_t free) : free_(free) {}
  bool device_memory(DeviceMemoryState* s) const override {
    s->free_bytes = free_;
    s->total_bytes = free_ + (size_t(1) << 30);
    s->in_use_bytes = size_t(32) << 20;
    s->device = "test card";
    return true;
  }

 private:
  size_t free_;
};

TEST(MemoryCheck, HostBackendsAreNotChecked) {
  CpuBackend<float> cpu;
  const DeviceMemoryNeeds n = check_device_memory(cpu, options(true, false), 0, 1);
  EXPECT_EQ(n.workspace, 0u);
  EXPECT_GT(n.total(), 0u);
}

TEST(MemoryCheck, FittingRunPassesAndCountsTheBackendsWorkspace) {
  SmallDevice big(size_t(8) << 30);
  const DeviceMemoryNeeds n = check_device_memory(big, options(true, false), 0, 1);
  EXPECT_EQ(n.workspace, size_t(32) << 20);
}

// One rank's plan (without workspace) with the first k of o's layers recomputed.
size_t plan_with(Backend& be, ModelOptions o, int64_t k, int zero_stage = 0, int ranks = 1) {
  o.checkpoint_layers = k;
  return plan_rank_memory(be, o, zero_stage, ranks).total();
}

// A pretend device whose plan budget (free memory less the 512 MiB headroom) is exactly `budget` bytes.
SmallDevice device_with_budget(size_t budget) { return SmallDevice(budget + kDeviceMemoryHeadroom); }

// The memory check's error for a run that does not fit on `dev` (a test failure when it fits).
std::string memory_check_error(Backend& dev, const ModelOptions& run) {
  try {
    check_device_memory(dev, run, 0, 1);
  } catch (const Error& e) {
    return std::string(e.what());
  }
  ADD_FAILURE() << "expected the memory check to stop the run";
  return std::string();
}

TEST(MemoryCheck, AutoCheckpointingRecomputesTheFewestLayersThatFit) {
  ModelOptions o = options(true, true);
  o.seq_len = 4096;
  o.config.num_hidden_layers = 8;
  o.checkpoint_layers = 3;  // ignored by the decision
  const int64_t N = o.config.num_hidden_layers;
  CpuBackend<float> cpu;
  std::string why;
  EXPECT_EQ(checkpoint_layers_needed(cpu, o, 0, 1, &why), N);  // host backends recompute every layer
  EXPECT_EQ(why, "host backend");
  std::vector<size_t> need;
  for (int64_t k = 0; k <= N; ++k) need.push_back(plan_with(cpu, o, k));
  ASSERT_GT(need[0], need[N] + (size_t(8) << 20));  // activations dominate
  // The reference: the first k (a linear scan) whose plan fits.
  auto fewest = [&](size_t budget) {
    for (int64_t k = 0; k <= N; ++k)
      if (need[size_t(k)] <= budget) return k;
    return N;
  };
  for (int64_t k = 0; k <= N; ++k) {
    ASSERT_EQ(fewest(need[size_t(k)]), k == 1 ? 0 : k);  // k = 1 saves nothing over k = 0
    for (const size_t budget : {need[size_t(k)], need[size_t(k)] - 1}) {
      SmallDevice dev = device_with_budget(budget);
      const int64_t expected = fewest(budget);
      EXPECT_EQ(checkpoint_layers_needed(dev, o, 0, 1, &why), expected) << "budget for k=" << k << ": " << why;
      EXPECT_NE(why.find("test card"), std::string::npos) << why;
      EXPECT_NE(why.find("plan without: " + format_gib(need[0])), std::string::npos) << why;
      if (expected > 0) {
        EXPECT_NE(why.find(str_cat("with ", expected, ": ")), std::string::npos) << why;
      }
    }
  }
  // Everything fits without recomputation: 0, and the reason names no recomputed plan.
  SmallDevice roomy = device_with_budget(need[0] + (size_t(100) << 20));
  EXPECT_EQ(checkpoint_layers_needed(roomy, o, 0, 1, &why), 0);
  EXPECT_EQ(why.find("with "), std::string::npos) << why;
  // Nothing fits, not even every layer recomputed: all layers (the memory check then stops the run).
  SmallDevice tiny = device_with_budget(need[size_t(N)] - 1);
  EXPECT_EQ(checkpoint_layers_needed(tiny, o, 0, 1, &why), N);
  EXPECT_NE(why.find("does not fit either"), std::string::npos) << why;
  EXPECT_THROW(check_device_memory(tiny, [&] { ModelOptions x = o; x.checkpoint_layers = N; return x; }(), 0, 1),
               Error);
  // ZeRO-2 over 8 ranks divides the optimizer state: the decision uses the rank's share (fewer layers or equal).
  SmallDevice mid = device_with_budget(need[4]);
  EXPECT_EQ(checkpoint_layers_needed(mid, o, 0, 1, &why), 4);
  EXPECT_LE(checkpoint_layers_needed(mid, o, 2, 8, &why), 4);
  EXPECT_LE(plan_with(cpu, o, 4, 2, 8), plan_with(cpu, o, 4, 0, 1));
}

TEST(MemoryCheck, TooSmallDeviceNamesTheNeedAndWhatWouldFit) {
  ModelOptions o = options(true, false);
  o.seq_len = 4096;  // activations dominate (tens of MiB without checkpointing)
  o.config.num_hidden_layers = 8;
  CpuBackend<float> cpu;
  const MemoryPlan plan = Model::plan_memory(cpu, o);
  ModelOptions ckpt = o;
  ckpt.checkpoint_layers = 8;
  const size_t with_ckpt = Model::plan_memory(cpu, ckpt).activations;
  ASSERT_LT(with_ckpt, plan.activations / 2);
  {  // room for every layer's recomputation only (and some more): suggests all of them
    SmallDevice small = device_with_budget(plan_with(cpu, o, 8) + (plan_with(cpu, o, 7) - plan_with(cpu, o, 8)) / 2);
    ASSERT_EQ(checkpoint_layers_needed(small, o, 0, 1, nullptr), 8);
    const std::string msg = memory_check_error(small, o);
    EXPECT_NE(msg.find("does not fit in device memory: needs"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test card"), std::string::npos) << msg;
    EXPECT_NE(msg.find("would fit: --gradient_checkpointing true (all 8 layers checkpointed, activations " +
                       format_gib(with_ckpt) + ")"),
              std::string::npos)
        << msg;
  }
  {  // room for 5 recomputed layers: the advice names the fewest, as auto would pick
    SmallDevice five = device_with_budget(plan_with(cpu, o, 5));
    ASSERT_EQ(checkpoint_layers_needed(five, o, 0, 1, nullptr), 5);
    ModelOptions k5 = o;
    k5.checkpoint_layers = 5;
    const std::string msg = memory_check_error(five, o);
    EXPECT_NE(msg.find("would fit: --gradient_checkpointing 5 (5 of 8 layers checkpointed, activations " +
                       format_gib(Model::plan_memory(cpu, k5).activations) + ")"),
              std::string::npos)
        << msg;
    // Already recomputing 2 layers: the advice is still 5.
    ModelOptions k2 = o;
    k2.checkpoint_layers = 2;
    EXPECT_NE(memory_check_error(five, k2).find("--gradient_checkpointing 5 (5 of 8"), std::string::npos);
    EXPECT_NO_THROW(check_device_memory(five, k5, 0, 1));  // and the advice is right
  }
  {  // nothing fits: no recomputation advice, a shorter length with every layer recomputed instead
    SmallDevice tiny = device_with_budget(plan_with(cpu, o, 8) - with_ckpt / 2);
    const std::string msg = memory_check_error(tiny, o);
    EXPECT_EQ(msg.find("layers checkpointed"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--gradient_checkpointing true with --model_max_length"), std::string::npos) << msg;
    // Already recomputing every layer: nothing about checkpointing.
    EXPECT_EQ(memory_check_error(tiny, ckpt).find("--gradient_checkpointing"), std::string::npos);
  }
}

// The plan of o with its first k layers checkpointed and their inputs offloaded to host memory.
MemoryPlan offloaded_plan(Backend& be, ModelOptions o, int64_t k) {
  o.checkpoint_layers = k;
  o.offload_checkpoints = true;
  return Model::plan_memory(be, o);
}

TEST(MemoryCheck, OffloadIsAdvisedWhenOnlyItFitsAndAutoPlansTheOffloadedLayout) {
  ModelOptions o = options(true, false);
  o.seq_len = 4096;
  o.config.num_hidden_layers = 8;
  CpuBackend<float> cpu;
  ModelOptions with_offload = o;
  with_offload.offload_checkpoints = true;
  const size_t off8 = plan_with(cpu, with_offload, 8);
  ASSERT_LT(off8, plan_with(cpu, o, 8));  // the offload saves device memory beyond recomputing everything
  SmallDevice dev = device_with_budget(off8);  // fits only with every layer checkpointed and offloaded
  const MemoryPlan p8 = offloaded_plan(cpu, o, 8);
  for (const int64_t k : {0, 3, 8}) {
    ModelOptions run = o;
    run.checkpoint_layers = k;
    const std::string msg = memory_check_error(dev, run);
    EXPECT_NE(msg.find("would fit: --gradient_checkpointing true --offload_checkpoints true (8 of 8 layers "
                       "checkpointed, their inputs in host memory: activations " + format_gib(p8.activations) +
                       " on the device, " + format_gib(p8.host_staging) + " of host memory)"),
              std::string::npos)
        << "k=" << k << ": " << msg;
  }
  ModelOptions run = o;
  run.checkpoint_layers = 8;
  run.offload_checkpoints = true;
  EXPECT_NO_THROW(check_device_memory(dev, run, 0, 1));  // and the advice is right
  // A run that already offloads is not told to offload.
  SmallDevice smaller = device_with_budget(off8 - 1);
  EXPECT_EQ(memory_check_error(smaller, run).find("--offload_checkpoints"), std::string::npos);
  // When recomputation alone fits, that is the advice (no offload needed).
  SmallDevice five = device_with_budget(plan_with(cpu, o, 5));
  EXPECT_EQ(memory_check_error(five, o).find("--offload_checkpoints"), std::string::npos);

  // Auto with the offload on plans the offloaded layout: the fewest k whose offloaded plan fits.
  for (int64_t k = 3; k <= 8; ++k) {
    const size_t need_off = plan_with(cpu, with_offload, k);
    SmallDevice d = device_with_budget(need_off);
    int64_t fewest = 8;
    for (int64_t j = 0; j <= 8; ++j) {
      if (plan_with(cpu, with_offload, j) <= need_off) {
        fewest = j;
        break;
      }
    }
    EXPECT_EQ(checkpoint_layers_needed(d, with_offload, 0, 1, nullptr), fewest) << k;
    EXPECT_LE(fewest, k);
    if (k >= 4) {  // without the offload, k layers do not fit that budget
      EXPECT_GT(plan_with(cpu, o, k), need_off) << k;
    }
  }
}

// When neither recomputation nor the offload fits, the advice adds the MLP over row tiles (with every layer
// checkpointed and offloaded) when that fits; a run that tiles already, or that the offload alone fits, is not told.
TEST(MemoryCheck, MlpTilesAreAdvisedWhenNeitherRecomputationNorOffloadFits) {
  ModelOptions o = options(true, false);
  o.config.num_hidden_layers = 4;
  o.config.intermediate_size = 512;  // the MLP dominates the activations, as at Llama-2-7B's longest contexts
  o.seq_len = kAdvisedMlpTileRows;   // batch 2: two tiles per micro-batch
  CpuBackend<float> cpu;
  ModelOptions tiled = o;
  tiled.checkpoint_layers = 4;
  tiled.offload_checkpoints = true;
  tiled.mlp_tile_rows = kAdvisedMlpTileRows;
  const MemoryPlan p = Model::plan_memory(cpu, tiled);
  const size_t need = plan_rank_memory(cpu, tiled, 0, 1).total();
  ModelOptions offloaded = tiled;
  offloaded.mlp_tile_rows = 0;
  const size_t need_offloaded = plan_rank_memory(cpu, offloaded, 0, 1).total();
  ASSERT_LT(need, need_offloaded);  // tiling saves beyond recomputing and offloading everything
  SmallDevice dev = device_with_budget(need);
  const std::string msg = memory_check_error(dev, o);
  EXPECT_NE(msg.find("would fit: --gradient_checkpointing true --offload_checkpoints true --mlp_tile_rows 8192 (every "
                     "layer checkpointed, their inputs in host memory, the MLP over tiles of 8192 tokens: "
                     "activations " + format_gib(p.activations) + " on the device, " + format_gib(p.host_staging) +
                     " of host memory)"),
            std::string::npos)
      << msg;
  EXPECT_NO_THROW(check_device_memory(dev, tiled, 0, 1));  // and the advice is right
  SmallDevice smaller = device_with_budget(need - 1);
  EXPECT_EQ(memory_check_error(smaller, tiled).find("--mlp_tile_rows"), std::string::npos);
  SmallDevice offload_fits = device_with_budget(need_offloaded);
  const std::string offload_msg = memory_check_error(offload_fits, o);
  EXPECT_NE(offload_msg.find("--offload_checkpoints true"), std::string::npos) << offload_msg;
  EXPECT_EQ(offload_msg.find("--mlp_tile_rows"), std::string::npos) << offload_msg;
}

// ---- GPT-NeoX: the same plan and decision over the second architecture's schema ------------------------------------

// Tiny NeoX, 4 layers: LongLoRA's set-up (LoRA on query_key_value,dense + embed,norm) or full fine-tuning.
ModelOptions neox_options(bool lora, bool parallel) {
  ModelOptions o = test::tiny_neox_options(parallel);
  o.config.num_hidden_layers = 4;
  o.seq_len = 16;
  if (lora) {
    o.trainable = TrainableConfig::parse("embed,norm");
    o.lora.rank = 4;
    o.lora.targets = parse_lora_targets("query_key_value,dense", o.config);
  }
  return o;
}

TEST(MemoryPlan, GptNeoxPlanEqualsAllocationForEveryCheckpointCount) {
  CpuBackend<float> cpu;
  for (const bool parallel : {true, false})
    for (const bool lora : {true, false}) {
      const ModelOptions base = neox_options(lora, parallel);
      std::vector<size_t> by_k;
      for (int64_t k = 0; k <= base.config.num_hidden_layers; ++k) {
        ModelOptions o = base;
        o.checkpoint_layers = k;
        const MemoryPlan planned = Model::plan_memory(cpu, o);
        Model model(cpu, o);
        EXPECT_EQ(planned.frozen_weights, model.memory_plan().frozen_weights);
        EXPECT_EQ(planned.trainable_weights, model.memory_plan().trainable_weights);
        EXPECT_EQ(planned.gradients, model.memory_plan().gradients);
        EXPECT_EQ(planned.activations, model.memory_plan().activations) << "k=" << k;
        by_k.push_back(planned.activations);
      }
      for (size_t k = 2; k < by_k.size(); ++k) EXPECT_LT(by_k[k], by_k[k - 1]) << "k=" << k;
      EXPECT_EQ(activations_by_checkpoint_layers(cpu, base), by_k);
    }
}

TEST(MemoryCheck, GptNeoxAutoCheckpointingRecomputesTheFewestLayersThatFit) {
  ModelOptions o = neox_options(true, true);
  o.seq_len = 2048;
  o.config.max_position_embeddings = 2048;
  o.attention.use_s2 = true;
  const int64_t N = o.config.num_hidden_layers;
  CpuBackend<float> cpu;
  std::vector<size_t> need;
  for (int64_t k = 0; k <= N; ++k) need.push_back(plan_with(cpu, o, k));
  ASSERT_GT(need[0], need[size_t(N)]);
  std::string why;
  for (int64_t k = 2; k <= N; ++k) {
    SmallDevice exact = device_with_budget(need[size_t(k)]);
    EXPECT_EQ(checkpoint_layers_needed(exact, o, 0, 1, &why), k) << why;
    SmallDevice short_by_one = device_with_budget(need[size_t(k)] - 1);
    EXPECT_EQ(checkpoint_layers_needed(short_by_one, o, 0, 1, &why), k == N ? N : k + 1) << why;
  }
  SmallDevice roomy = device_with_budget(need[0]);
  EXPECT_EQ(checkpoint_layers_needed(roomy, o, 0, 1, &why), 0) << why;
  // ZeRO-3 over 4 ranks holds a quarter of the weights: it never needs more recomputation.
  EXPECT_LT(plan_with(cpu, o, 0, 3, 4), plan_with(cpu, o, 0, 0, 1));
}

}  // namespace
}  // namespace ll
