// Data-parallel training on CPU ranks: N ranks with ZeRO stage 0, 2 or 3 follow the single-rank run with the same
// global batch (losses and final weights); checkpoints resume exactly on N → 1, N → N and 1 → N ranks.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/token_file.h"
#include "cpu/cpu_backend.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/param_select.h"
#include "mpi/stager.h"
#include "mpi/zero.h"
#include "mpi_test_env.h"
#include "run_outputs.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/files.h"
#include "util/random.h"

namespace fs = std::filesystem;

namespace ll {
namespace {

using test::g_comm;
using test::expect_run_matches;

const char* kConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
  "intermediate_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
  "vocab_size": 50, "rms_norm_eps": 1e-5, "max_position_embeddings": 16, "rope_theta": 10000.0})";

// The second architecture: GPT-NeoX with parallel residual and partial rotary, the same sizes.
const char* kNeoxConfig = R"({"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": 32,
  "intermediate_size": 48, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 50, "layer_norm_eps": 1e-5,
  "max_position_embeddings": 16, "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": true})";

struct RunCase {
  int stage;
  bool neox;
};

// A directory every rank agrees on (TempDir is the same path on every rank of one machine).
std::string shared_dir(const std::string& name) {
  return ::testing::TempDir() + "/ll_mpi_" + std::to_string(g_comm->size()) + "_" + name;
}

class DistributedTraining : public ::testing::TestWithParam<RunCase> {
 protected:
  void SetUp() override {
    dir_ = shared_dir((GetParam().neox ? "neox_stage" : "stage") + std::to_string(GetParam().stage));
    if (g_comm->rank() == 0) {
      fs::remove_all(dir_);
      make_directories(dir_);
      write_file_atomic(dir_ + "/config.json", config());
      Rng rng(5);
      TokenFileWriter w(dir_ + "/train.bin", TokenFormat::Raw16);
      for (int i = 0; i < 6000; ++i) w.append({int32_t(rng.uniform() < 0.85 ? (i * 11) % 50 : rng.below(50))});
      w.finish();
    }
    g_comm->barrier();
  }
  TrainOptions options(const std::string& out, int64_t per_device_batch) const {
    TrainOptions o;
    o.model_config = dir_ + "/config.json";
    o.data_path = dir_ + "/train.bin";
    o.output_dir = dir_ + "/" + out;
    o.model_max_length = 32;
    o.lora_r = 4;
    o.learning_rate = 5e-3;
    o.per_device_train_batch_size = per_device_batch;
    o.gradient_accumulation_steps = 2;
    o.max_steps = 10;
    o.save_steps = 0;
    o.warmup_steps = 2;
    o.lr_scheduler_type = "linear";
    o.weight_decay = 0.01;
    o.zero_stage = GetParam().stage;
    o.gradient_checkpointing = "false";
    if (GetParam().neox) o.lora_target = "query_key_value,dense";
    return o;
  }
  std::string config() const { return GetParam().neox ? kNeoxConfig : kConfig; }
  std::string dir_;
};

TEST_P(DistributedTraining, MatchesTheSingleRankRunWithTheSameGlobalBatch) {
  const int n = g_comm->size();
  run_training(options("ranks", 2), {}, g_comm);
  if (g_comm->rank() == 0) {
    std::unique_ptr<Comm> local = make_local_comm();
    TrainOptions single = options("single", 2 * n);
    single.zero_stage = 0;
    run_training(single, {}, local.get());
    expect_run_matches(dir_ + "/ranks", dir_ + "/single", 10, 1e-5, 1e-5);
  }
  g_comm->barrier();
}

// QLoRA: a 4-bit (NF4, double-quantized) base sharded by ZeRO-3 as raw bytes, or replicated, trains as on one rank.
TEST_P(DistributedTraining, FourBitBaseMatchesTheSingleRankRun) {
  const int n = g_comm->size();
  auto four_bit = [](TrainOptions o) {
    o.quant.load_in_4bit = true;
    o.quant.bnb_4bit_quant_type = "nf4";
    o.quant.bnb_4bit_use_double_quant = true;
    return o;
  };
  run_training(four_bit(options("ranks_4bit", 2)), {}, g_comm);
  if (g_comm->rank() == 0) {
    std::unique_ptr<Comm> local = make_local_comm();
    TrainOptions single = four_bit(options("single_4bit", 2 * n));
    single.zero_stage = 0;
    run_training(single, {}, local.get());
    expect_run_matches(dir_ + "/ranks_4bit", dir_ + "/single_4bit", 10, 1e-5, 1e-5);
  }
  g_comm->barrier();
}

TEST_P(DistributedTraining, CheckpointFromNRanksResumesOnOneRankExactly) {
  const int n = g_comm->size();
  TrainOptions interrupted = options("interrupted", 2);
  interrupted.interrupt_at_step = 4;
  const TrainResult r = run_training(interrupted, {}, g_comm);
  EXPECT_TRUE(r.interrupted);
  if (g_comm->rank() == 0) {
    std::unique_ptr<Comm> local = make_local_comm();
    // The same global batch on one rank: per-device batch 2·n, the optimizer state re-cut from n shards to one.
    TrainOptions resumed = options("interrupted", 2 * n);
    resumed.resume_from_checkpoint = "auto";
    run_training(resumed, {}, local.get());
    TrainOptions straight = options("straight", 2 * n);
    run_training(straight, {}, local.get());
    expect_run_matches(dir_ + "/interrupted", dir_ + "/straight", 10, 1e-5, 1e-5);
  }
  g_comm->barrier();
}

// Resume on the same N ranks (the shards read back as written), and at another world size the other way round:
// a one-rank checkpoint re-cut into N shards. Both continue exactly like the uninterrupted single-rank run.
TEST_P(DistributedTraining, CheckpointResumesOnTheSameRanksAndOneRankCheckpointResumesOnNRanks) {
  const int n = g_comm->size();
  TrainOptions same = options("same", 2);
  same.interrupt_at_step = 4;
  EXPECT_TRUE(run_training(same, {}, g_comm).interrupted);
  TrainOptions same_resumed = options("same", 2);
  same_resumed.resume_from_checkpoint = "auto";
  EXPECT_FALSE(run_training(same_resumed, {}, g_comm).interrupted);

  if (g_comm->rank() == 0) {
    std::unique_ptr<Comm> local = make_local_comm();
    TrainOptions one = options("one_to_n", 2 * n);
    one.zero_stage = 0;
    one.interrupt_at_step = 4;
    EXPECT_TRUE(run_training(one, {}, local.get()).interrupted);
    TrainOptions straight = options("straight_resume", 2 * n);
    straight.zero_stage = 0;
    run_training(straight, {}, local.get());
  }
  g_comm->barrier();
  TrainOptions widened = options("one_to_n", 2);
  widened.resume_from_checkpoint = "auto";
  run_training(widened, {}, g_comm);

  if (g_comm->rank() == 0) {
    for (const char* run : {"same", "one_to_n"})
      expect_run_matches(dir_ + "/" + run, dir_ + "/straight_resume", 10, 1e-5, 1e-5);
  }
  g_comm->barrier();
}

// The asynchronous schedule on CPU ranks: LONGLORA_COMM_DEFER=1 completes every started collective only when it is
// waited for (the latest an asynchronous implementation may), ZeRO-2 reduces many small gradient buckets from the
// backward hook, ZeRO-3 prefetches the next layer and waits for gradient reductions one layer late. Any read of a
// result before its wait, or write of an input before it, changes the numbers.
TEST_P(DistributedTraining, DeferredCollectivesAndSmallBucketsMatchTheSingleRankRun) {
  const int n = g_comm->size();
  TrainOptions o = options("deferred", 2);
  o.reduce_bucket_size = 97;  // the LoRA/embedding/norm arena of this model in a few dozen buckets
  o.gradient_checkpointing = "true";
  setenv("LONGLORA_COMM_DEFER", "1", 1);
  run_training(o, {}, g_comm);
  unsetenv("LONGLORA_COMM_DEFER");
  if (g_comm->rank() == 0) {
    std::unique_ptr<Comm> local = make_local_comm();
    TrainOptions single = options("deferred_single", 2 * n);
    single.zero_stage = 0;
    single.gradient_checkpointing = "true";
    run_training(single, {}, local.get());
    expect_run_matches(dir_ + "/deferred", dir_ + "/deferred_single", 10, 1e-5, 1e-5);
  }
  g_comm->barrier();
}

// The communicator as a parameter: the same ranks over StagedComm with the lazy host stager (each copy as late as a
// GPU's copy streams may run it; chunks of 60 bytes: every
// bucket, layer gather and gradient reduction cut into many pipelined chunks, most not dividing it) train exactly
// like MpiComm — the losses and the final weights bit for bit. The bucket size is fixed: StagedComm reports itself
// asynchronous, which would otherwise pick another ZeRO-2 bucket plan.
TEST_P(DistributedTraining, HostStagedCommTrainsBitForBitLikeMpiComm) {
  std::unique_ptr<Comm> staged_comm = make_staged_comm(*g_comm, make_host_stager(/*lazy=*/true), 60);
  for (Comm* comm : {g_comm, staged_comm.get()}) {
    TrainOptions o = options(comm == g_comm ? "over_mpi" : "over_staged", 2);
    o.reduce_bucket_size = 97;
    run_training(o, {}, comm);
  }
  if (g_comm->rank() == 0) expect_run_matches(dir_ + "/over_staged", dir_ + "/over_mpi", 10, 0, 1e-300);
  g_comm->barrier();
}

// --offload_checkpoints on N ranks (four layers, all checkpointed: the inputs of two go to host memory), with every
// collective completing as late as allowed: bit-identical to the same ranks without the offload (ZeRO-3 gathers
// and releases layers around the same forward/backward the copies overlap).
TEST_P(DistributedTraining, OffloadedCheckpointsMatchTheRunWithout) {
  std::string cfg = config();
  const std::string two = "\"num_hidden_layers\": 2";
  cfg.replace(cfg.find(two), two.size(), "\"num_hidden_layers\": 4");
  if (g_comm->rank() == 0) write_file_atomic(dir_ + "/config4.json", cfg);
  g_comm->barrier();
  setenv("LONGLORA_COMM_DEFER", "1", 1);
  for (const bool offload : {false, true}) {
    TrainOptions o = options(offload ? "offload_on" : "offload_off", 2);
    o.model_config = dir_ + "/config4.json";
    o.lora_dropout = 0.1;
    o.gradient_checkpointing = "true";
    o.offload_checkpoints = offload;
    run_training(o, {}, g_comm);
  }
  unsetenv("LONGLORA_COMM_DEFER");
  if (g_comm->rank() == 0) expect_run_matches(dir_ + "/offload_on", dir_ + "/offload_off", 10, 0, 1e-300);
  g_comm->barrier();
}

// --mlp_tile_rows on N ranks: the MLP over tiles of 5 tokens (not dividing a micro-batch), every layer checkpointed,
// LoRA on every linear; ZeRO-3 gathers and releases each layer around the same tile loops. Trains as the run without
// tiles, to fp32 rounding (the gradients' sums over rows are grouped by tile).
TEST_P(DistributedTraining, MlpTilesMatchTheRunWithout) {
  for (const int64_t tile : {int64_t(0), int64_t(5)}) {
    TrainOptions o = options(tile ? "tiles_on" : "tiles_off", 2);
    o.lora_target = GetParam().neox ? "query_key_value,dense,dense_h_to_4h,dense_4h_to_h"
                                    : "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
    o.gradient_checkpointing = "true";
    o.mlp_tile_rows = tile;
    run_training(o, {}, g_comm);
  }
  if (g_comm->rank() == 0) expect_run_matches(dir_ + "/tiles_on", dir_ + "/tiles_off", 10, 1e-5, 1e-4);
  g_comm->barrier();
}

// An update that overflows the weights stops every rank at the same step, naming the same first parameter, though
// under ZeRO-2/3 only the rank holding its shard sees it (here the embedding, in rank 0's shard); nothing is saved.
TEST_P(DistributedTraining, AnUpdateThatMakesAWeightNonFiniteStopsEveryRankAlike) {
  TrainOptions o = options("overflow", 2);
  o.learning_rate = 1e39;  // finite as a double; every update overflows fp32
  o.lr_scheduler_type = "constant";
  o.warmup_steps = 0;
  o.save_steps = 1;
  std::string message;
  try {
    run_training(o, {}, g_comm);
  } catch (const Error& e) {
    message = e.what();
  }
  const std::string embedding = GetParam().neox ? "gpt_neox.embed_in.weight" : "model.embed_tokens.weight";
  EXPECT_EQ(message.find("step 1 made `" + embedding + "` non-finite"), 0u)
      << "rank " << g_comm->rank() << ": " << message;
  g_comm->barrier();
  EXPECT_TRUE(list_checkpoints(o.output_dir).empty());
  EXPECT_FALSE(fs::exists(o.output_dir + "/adapter_model.safetensors"));
  g_comm->barrier();
}

TEST(Zero3Prefetch, EveryLayerIsGatheredAheadOfItsUse) {
  for (const int64_t recomputed : {0, 2, 4}) {  // none, the first half, every layer
    ModelOptions mo;
    mo.config.hidden_size = 32, mo.config.intermediate_size = 48, mo.config.num_attention_heads = 4;
    mo.config.num_key_value_heads = 2, mo.config.num_hidden_layers = 4, mo.config.vocab_size = 50;
    mo.seq_len = 8;
    mo.checkpoint_layers = recomputed;
    mo.lora.rank = 2;
    mo.lora.targets = parse_lora_targets("q_proj,v_proj", mo.config);
    mo.trainable = TrainableConfig::parse("embed,norm");
    mo.external_param_storage = true;
    CpuBackend<float> backend;
    Model model(backend, mo);
    Zero3Storage storage(backend, model.params(), *g_comm);
    model.init_random(3);
    std::vector<int32_t> tokens(8), targets(8);
    for (int i = 0; i < 8; ++i) tokens[size_t(i)] = (i * 7) % 50, targets[size_t(i)] = (i * 7 + 3) % 50;
    for (int pass = 0; pass < 2; ++pass) {
      const int64_t hits = storage.prefetch_hits(), gathers = storage.acquire_gathers();
      model.params().zero_grads();
      model.forward_backward(tokens.data(), targets.data(), 0);
      storage.flush();
      // Forward and backward acquire every layer once each, plus the outer group once: all layers prefetched.
      EXPECT_EQ(storage.prefetch_hits() - hits + storage.acquire_gathers() - gathers, 2 * 4 + 1);
      EXPECT_GE(storage.prefetch_hits() - hits, 2 * 4) << "recomputed " << recomputed << ", pass " << pass;
    }
  }
}

TEST(Zero3Memory, EachRankHoldsAboutOneNthOfParametersGradientsAndOptimizerState) {
  const int n = g_comm->size();
  ModelOptions mo;
  mo.config.hidden_size = 64, mo.config.intermediate_size = 96, mo.config.num_attention_heads = 4;
  mo.config.num_key_value_heads = 2, mo.config.num_hidden_layers = 8, mo.config.vocab_size = 100;
  mo.seq_len = 8;
  mo.trainable.all = true;
  CpuBackend<float> backend;
  Model replicated(backend, mo);
  AdamW adam(backend, replicated.params(), {});
  const double single = double(replicated.params().frozen_bytes() + replicated.params().trainable_bytes() +
                               replicated.params().grad_bytes() + adam.state_bytes());
  mo.external_param_storage = true;
  Model sharded(backend, mo);
  Zero3Storage storage(backend, sharded.params(), *g_comm);
  DistributedOptimizer opt(backend, sharded.params(), *g_comm, {}, 3, &storage);
  const double per_rank = double(storage.shard_bytes() + opt.state_bytes());
  EXPECT_EQ(sharded.params().frozen_bytes() + sharded.params().trainable_bytes() + sharded.params().grad_bytes(), 0u);
  EXPECT_LT(per_rank, single / n * 1.1 + 8192) << "single-rank " << single << " bytes, per rank " << per_rank;
  EXPECT_GT(per_rank, single / n * 0.9 - 8192);
  // The gather slots hold two layers and the outer group, not the model.
  EXPECT_LT(double(storage.staging_bytes()), single / 3);
}

INSTANTIATE_TEST_SUITE_P(ZeroStages, DistributedTraining,
                         ::testing::Values(RunCase{0, false}, RunCase{2, false}, RunCase{3, false}, RunCase{0, true},
                                           RunCase{2, true}, RunCase{3, true}),
                         [](const auto& info) {
                           return std::string(info.param.neox ? "gpt_neox_" : "") + "stage" +
                                  std::to_string(info.param.stage);
                         });

}  // namespace
}  // namespace ll
