// The start-up memory plan: LlamaModel::plan_memory (nothing allocated) equals what a constructed model allocates;
// the per-rank plan under ZeRO-0/2/3 matches what the optimizer and the ZeRO-3 storage really hold (one rank, CPU);
// a device that is too small stops the run with "needs X GiB" and settings that would fit.
#include <gtest/gtest.h>

#include "cpu/cpu_backend.h"
#include "mpi/comm.h"
#include "mpi/zero.h"
#include "mpi/zero3.h"
#include "model/arena.h"
#include "model/llama.h"
#include "train/memory_check.h"
#include "util/error.h"

namespace ll {
namespace {

ModelOptions options(bool lora, bool checkpointing, double dropout = 0, bool tied = false) {
  ModelOptions o;
  o.config.hidden_size = 48;
  o.config.intermediate_size = 72;
  o.config.num_attention_heads = 6;
  o.config.num_key_value_heads = 2;
  o.config.num_hidden_layers = 3;
  o.config.vocab_size = 61;
  o.config.tie_word_embeddings = tied;
  o.attention.use_s2 = true;
  o.batch = 2;
  o.seq_len = 24;
  o.checkpointing = checkpointing;
  if (lora) {
    o.trainable = TrainableConfig{false, true, true, false};
    o.lora.rank = 4;
    o.lora.dropout = dropout;
    o.lora.targets = LoraConfig::parse_targets("q,k,v,o,down");
  } else {
    o.trainable.all = true;
  }
  return o;
}

TEST(MemoryPlan, PlannedWithoutAllocatingEqualsWhatTheModelAllocates) {
  CpuBackend<float> cpu;
  for (const ModelOptions& o : {options(true, false), options(true, true), options(true, false, 0.1),
                                options(false, false), options(false, true, 0, true)}) {
    const MemoryPlan planned = LlamaModel::plan_memory(cpu, o);
    LlamaModel model(cpu, o);
    const MemoryPlan real = model.memory_plan();
    EXPECT_EQ(planned.frozen_weights, real.frozen_weights);
    EXPECT_EQ(planned.trainable_weights, real.trainable_weights);
    EXPECT_EQ(planned.gradients, real.gradients);
    EXPECT_EQ(planned.activations, real.activations);
    EXPECT_GT(planned.activations, 0u);
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
  const size_t shared = LlamaModel::plan_memory(cpu, o).activations;
  // Without sharing the attention gradients (dq, dk, dv, d_attn) would add their own bytes.
  const int64_t T = o.batch * o.seq_len;
  const size_t attention_grads = size_t(T) * size_t(2 * o.config.q_dim() + 2 * o.config.kv_dim()) * sizeof(float);
  o.config.intermediate_size = 8;  // MLP gradients now smaller than the attention ones: the arena grows by the difference
  const size_t small_mlp = LlamaModel::plan_memory(cpu, o).activations;
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
  const size_t with_down = LlamaModel::plan_memory(cpu, o).activations;
  o.lora.targets = LoraConfig::parse_targets("q,k,v,o");
  const size_t without_down = LlamaModel::plan_memory(cpu, o).activations;
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
  full.trainable = TrainableConfig{true, false, false, false};
  const size_t lora_buffers = size_t(layers * 4 + 1) * xa_bytes;  // x·Aᵀ of q,k,v,o per layer, and d_xa
  EXPECT_NEAR(double(LlamaModel::plan_memory(cpu, full).activations),
              double(without_down) + double((layers - 1) * act_bytes) - double(lora_buffers), double(layers) * 8 * 256);
}

TEST(MemoryPlan, RejectsBadOptionsBeforeAllocating) {
  CpuBackend<float> cpu;
  ModelOptions o = options(true, false);
  o.seq_len = 26;  // not divisible by the S2 group count
  EXPECT_THROW(LlamaModel::plan_memory(cpu, o), Error);
  o = options(true, false);
  o.batch = 0;
  EXPECT_THROW(LlamaModel::plan_memory(cpu, o), Error);
}

TEST(MemoryPlan, RankPlanMatchesTheOptimizerAndZero3StorageOnOneRank) {
  CpuBackend<float> cpu;
  std::unique_ptr<Comm> local = make_local_comm();
  const AdamWConfig adam{0.9, 0.999, 1e-8, 0.0};
  for (bool lora : {true, false}) {
    const ModelOptions o = options(lora, true);
    {  // stage 0: replicated weights, full optimizer state (f32 weights: moments only, no masters)
      LlamaModel model(cpu, o);
      DistributedOptimizer opt(cpu, model.params(), *local, adam, 0);
      const DeviceMemoryNeeds n = plan_rank_memory(cpu, o, 0, 1);
      EXPECT_EQ(n.frozen_weights + n.trainable_weights + n.gradients + n.activations, model.memory_plan().total());
      EXPECT_NEAR(double(n.optimizer), double(opt.state_bytes()), 0.01 * double(opt.state_bytes()) + 4096);
    }
    {  // stage 3 on one rank: shards hold everything, plus the gather slots
      ModelOptions z = o;
      z.external_param_storage = true;
      LlamaModel model(cpu, z);
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

TEST(MemoryCheck, AutoCheckpointingTurnsRecomputationOffOnlyWhenTheRunFitsWithoutIt) {
  ModelOptions o = options(true, true);
  o.seq_len = 4096;
  o.config.num_hidden_layers = 8;
  CpuBackend<float> cpu;
  std::string why;
  EXPECT_TRUE(checkpointing_needed(cpu, o, 0, 1, &why));  // host backends keep recomputation
  EXPECT_EQ(why, "host backend");
  ModelOptions without = o;
  without.checkpointing = false;
  const size_t need = plan_rank_memory(cpu, without, 0, 1).total() + (size_t(32) << 20);  // + the workspace
  SmallDevice roomy(need + (size_t(600) << 20));  // beyond the 512 MiB headroom
  EXPECT_FALSE(checkpointing_needed(roomy, o, 0, 1, &why)) << why;
  EXPECT_NE(why.find("test card"), std::string::npos) << why;
  SmallDevice tight(need);  // fits only with the headroom ignored: recompute
  EXPECT_TRUE(checkpointing_needed(tight, o, 0, 1, &why)) << why;
  // ZeRO-2 over 8 ranks divides the optimizer state: the decision uses the rank's share.
  EXPECT_LE(plan_rank_memory(cpu, without, 2, 8).total(), plan_rank_memory(cpu, without, 0, 1).total());
}

TEST(MemoryCheck, TooSmallDeviceNamesTheNeedAndWhatWouldFit) {
  ModelOptions o = options(true, false);
  o.seq_len = 4096;  // activations dominate (tens of MiB without checkpointing)
  o.config.num_hidden_layers = 8;
  CpuBackend<float> cpu;
  const MemoryPlan plan = LlamaModel::plan_memory(cpu, o);
  ModelOptions ckpt = o;
  ckpt.checkpointing = true;
  const size_t with_ckpt = LlamaModel::plan_memory(cpu, ckpt).activations;
  ASSERT_LT(with_ckpt, plan.activations / 2);
  // Free memory (beyond the 512 MiB headroom and the 32 MiB workspace) that holds the checkpointed plan only.
  const size_t fixed = plan.frozen_weights + plan.trainable_weights + 3 * plan.gradients;  // + f32 moments
  SmallDevice small((size_t(512) << 20) + fixed + with_ckpt + (plan.activations - with_ckpt) / 4);
  try {
    check_device_memory(small, o, 0, 1);
    FAIL() << "expected the memory check to stop the run";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("does not fit in device memory: needs"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test card"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--gradient_checkpointing"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace ll
