// The training loop end to end on CPU: exact resume, accumulation semantics, frozen weights, SFT examples,
// the demo configuration learning, exports and flag errors.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <csignal>
#include <cstring>
#include <thread>
#include <filesystem>
#include <fstream>
#include <map>

#include "cpu/cpu_backend.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/param_select.h"
#include "mpi/comm.h"
#include "mpi/zero.h"
#include "core/tensor_host.h"
#include "test_data_util.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/memory_check.h"
#include "optim/adamw.h"
#include "model/registry.h"
#include "train/trainer.h"
#include "util/files.h"
#include "util/flags.h"

namespace fs = std::filesystem;

namespace ll {
namespace {

const char* kTinyConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
  "intermediate_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
  "vocab_size": 50, "rms_norm_eps": 1e-5, "max_position_embeddings": 16, "rope_theta": 10000.0})";

// The error a run with these options stops with ("" when it does not).
std::string error_of(const TrainOptions& o) {
  try {
    run_training(o, {});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/trainer_" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    make_directories(dir_);
    write_file_atomic(dir_ + "/config.json", kTinyConfig);
    // A learnable stream: repeating phrases with noise.
    Rng rng(3);
    TokenFileWriter w(dir_ + "/train.bin", TokenFormat::Raw16);
    for (int i = 0; i < 4000; ++i) w.append({int32_t(rng.uniform() < 0.9 ? (i * 7) % 50 : rng.below(50))});
    w.finish();
  }
  TrainOptions base(const std::string& out) const {
    TrainOptions o;
    o.model_config = dir_ + "/config.json";
    o.data_path = dir_ + "/train.bin";
    o.output_dir = dir_ + "/" + out;
    o.model_max_length = 32;  // factor ceil(32/16) = 2
    o.lora_r = 4;
    o.learning_rate = 1e-2;
    o.per_device_train_batch_size = 2;
    o.max_steps = 6;
    o.save_steps = 0;
    o.lr_scheduler_type = "cosine";
    o.warmup_steps = 2;
    return o;
  }
  static std::vector<double> losses(const std::string& out_dir) {
    std::vector<double> out;
    std::ifstream in(out_dir + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line).at("loss"));
    return out;
  }
  static std::vector<unsigned char> file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {});
  }
  std::string dir_;
};

TEST_F(TrainerTest, ResumeContinuesBitIdentically) {
  TrainOptions straight = base("straight");
  straight.lora_dropout = 0.1;  // dropout masks must also be reproduced after resume
  const TrainResult a = run_training(straight, {});
  EXPECT_EQ(a.steps, 6);

  TrainOptions first = base("resumed");
  first.lora_dropout = 0.1;
  first.interrupt_at_step = 3;
  const TrainResult b1 = run_training(first, {});
  EXPECT_TRUE(b1.interrupted);
  EXPECT_EQ(b1.steps, 3);
  ASSERT_EQ(list_checkpoints(first.output_dir).size(), 1u);
  TrainOptions second = base("resumed");
  second.lora_dropout = 0.1;
  second.resume_from_checkpoint = "auto";
  const TrainResult b2 = run_training(second, {});
  EXPECT_EQ(b2.steps, 6);

  const std::vector<double> la = losses(straight.output_dir), lb = losses(first.output_dir);
  ASSERT_EQ(la.size(), 6u);
  ASSERT_EQ(lb.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(la[i], lb[i]) << "step " << i + 1;
  EXPECT_EQ(file_bytes(straight.output_dir + "/checkpoint-6/trainable.safetensors"),
            file_bytes(first.output_dir + "/checkpoint-6/trainable.safetensors"));
  EXPECT_EQ(file_bytes(straight.output_dir + "/checkpoint-6/optimizer.safetensors"),
            file_bytes(first.output_dir + "/checkpoint-6/optimizer.safetensors"));
  // Exports and bookkeeping.
  for (const char* f : {"training_args.json", "metrics.jsonl", "adapter_config.json", "adapter_model.safetensors"})
    EXPECT_TRUE(path_exists(straight.output_dir + "/" + f)) << f;
  const nlohmann::json m = nlohmann::json::parse(read_text_file(straight.output_dir + "/metrics.jsonl").substr(0, 
      read_text_file(straight.output_dir + "/metrics.jsonl").find('\n')));
  for (const char* k : {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "elapsed_sec"}) EXPECT_TRUE(m.contains(k)) << k;
  EXPECT_EQ(m.at("lr"), 0.0);  // first step of a warmup schedule, as in Hugging Face
}

// --profile_ops: the same losses and weights as an unprofiled run, and a profile of the loop's ops.
TEST_F(TrainerTest, ProfileOpsWritesAPlausibleProfileAndChangesNothing) {
  TrainOptions plain = base("unprofiled"), profiled = base("profiled");
  plain.max_steps = profiled.max_steps = 3;
  profiled.profile_ops = true;
  run_training(plain, {});
  run_training(profiled, {});
  EXPECT_EQ(losses(plain.output_dir), losses(profiled.output_dir));
  EXPECT_EQ(file_bytes(plain.output_dir + "/checkpoint-3/trainable.safetensors"),
            file_bytes(profiled.output_dir + "/checkpoint-3/trainable.safetensors"));
  EXPECT_FALSE(path_exists(plain.output_dir + "/op_profile.json"));
  ASSERT_TRUE(path_exists(profiled.output_dir + "/op_profile.json"));
  const nlohmann::json j = nlohmann::json::parse(read_text_file(profiled.output_dir + "/op_profile.json"));
  EXPECT_EQ(j.at("steps"), 3);
  EXPECT_EQ(j.at("backend"), "cpu");
  const double wall_ms = j.at("wall_seconds").get<double>() * 1e3;
  EXPECT_GT(wall_ms, 0.0);
  std::map<std::string, int64_t> calls;
  double sum_ms = 0, prev_ms = 1e300;
  for (const auto& row : j.at("ops")) {
    calls[row.at("op")] = row.at("calls");
    const double ms = row.at("ms");
    EXPECT_GE(ms, 0.0);
    EXPECT_LE(ms, prev_ms) << "ops are sorted by time";
    prev_ms = ms;
    sum_ms += ms;
  }
  EXPECT_LE(sum_ms, wall_ms);
  // 2 layers, 1 micro-batch per step, both checkpointed (auto on CPU): 3 layer forwards per step (layer 1, the last
  // checkpointed one, is not recomputed).
  EXPECT_EQ(calls["attention_forward"], 3 * 3);
  EXPECT_EQ(calls["attention_backward"], 3 * 2);
  EXPECT_EQ(calls["lora_forward"], 3 * 3 * 4);  // q, k, v, o
  EXPECT_EQ(calls["embedding_backward"], 3);        // embed is trainable by default
  EXPECT_GT(calls["adamw_step"], 0);
  EXPECT_EQ(calls["adamw_step"] % 3, 0);
  EXPECT_GT(calls["copy_to_host"], 0);  // the final checkpoint is written inside the profiled loop
}

TEST_F(TrainerTest, SaveTotalLimitKeepsTheLastCheckpoints) {
  TrainOptions o = base("rotate");
  o.save_steps = 2;
  o.save_total_limit = 2;
  run_training(o, {});
  const std::vector<std::string> kept = list_checkpoints(o.output_dir);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_NE(kept[0].find("checkpoint-4"), std::string::npos);
  EXPECT_NE(kept[1].find("checkpoint-6"), std::string::npos);
  for (const auto& e : fs::directory_iterator(o.output_dir))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
}

TEST_F(TrainerTest, AccumulationEqualsOneLargerBatch) {
  TrainOptions accumulated = base("accumulated"), single = base("single");
  accumulated.per_device_train_batch_size = 2;
  accumulated.gradient_accumulation_steps = 3;
  single.per_device_train_batch_size = 6;
  accumulated.max_steps = single.max_steps = 2;
  accumulated.warmup_steps = single.warmup_steps = 0;
  accumulated.gradient_checkpointing = single.gradient_checkpointing = "false";
  run_training(accumulated, {});
  run_training(single, {});
  const std::vector<double> la = losses(accumulated.output_dir), lb = losses(single.output_dir);
  ASSERT_EQ(la.size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(la[i], lb[i], 1e-5 * std::abs(lb[i]));
  const SafetensorsFile wa(accumulated.output_dir + "/checkpoint-2/trainable.safetensors"),
      wb(single.output_dir + "/checkpoint-2/trainable.safetensors");
  for (const std::string& name : wa.names()) {
    const Tensor ta = wa.tensor(name), tb = wb.tensor(name);
    std::vector<double> va(ta.numel()), vb(tb.numel());
    for (int64_t i = 0; i < ta.numel(); ++i) va[i] = ta.ptr<float>()[i], vb[i] = tb.ptr<float>()[i];
    EXPECT_LT(test::rel_error(va, vb), 1e-5) << name;
  }
}

TEST_F(TrainerTest, LossFallsAndFullFineTuningExportsAnHfFolder) {
  TrainOptions o = base("full");
  o.low_rank_training = false;
  o.max_steps = 40;
  o.learning_rate = 1e-2;
  o.lr_scheduler_type = "constant";
  run_training(o, {});
  const std::vector<double> l = losses(o.output_dir);
  ASSERT_EQ(l.size(), 40u);
  EXPECT_LT(l.back(), 0.7 * l.front()) << "the repeating stream is learnable";
  EXPECT_TRUE(path_exists(o.output_dir + "/model/config.json"));
  EXPECT_TRUE(path_exists(o.output_dir + "/model/model.safetensors"));
}

TEST_F(TrainerTest, SaveMergedWritesAnHfFolderEqualToTheAdapterModel) {
  TrainOptions o = base("merged");
  o.save_merged = true;
  o.max_steps = 3;
  run_training(o, {});
  EXPECT_TRUE(path_exists(o.output_dir + "/merged/config.json"));
  const nlohmann::json cfg = nlohmann::json::parse(read_text_file(o.output_dir + "/merged/config.json"));
  EXPECT_EQ(cfg.at("rope_scaling").at("factor"), 2.0);  // ceil(32 / 16)
  const SafetensorsFile merged(o.output_dir + "/merged/model.safetensors");
  EXPECT_FALSE(merged.contains("model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_TRUE(merged.contains("model.layers.0.self_attn.q_proj.weight"));
  // The merged folder computes what the base (same seed) + the exported adapter computes.
  CpuBackend<float> backend;
  ModelOptions mo;
  mo.config = read_hf_config(o.output_dir + "/merged").model;
  mo.seq_len = 32;
  Model merged_model(backend, mo);
  load_hf_weights(o.output_dir + "/merged", merged_model.params(), backend);
  mo.lora = read_adapter_config(o.output_dir, mo.config).lora;
  mo.trainable = TrainableConfig::parse("embed,norm");
  Model adapted(backend, mo);
  adapted.init_random(uint64_t(o.seed));
  load_adapter(o.output_dir, adapted.params(), backend);
  std::vector<int32_t> tokens(32);
  for (int i = 0; i < 32; ++i) tokens[i] = (i * 7) % 50;
  EXPECT_LT(test::rel_error(merged_model.logits(tokens.data()), adapted.logits(tokens.data())), 1e-5);
}

TEST_F(TrainerTest, NonFiniteStepsAreSkippedThenStopTheRun) {
  TrainOptions o = base("nonfinite");
  o.learning_rate = 1e30;  // the first update overflows the weights; later losses are not finite
  o.max_grad_norm = 0;
  o.warmup_steps = 0;
  o.lr_scheduler_type = "constant";
  o.max_steps = 20;
  try {
    run_training(o, {});
    FAIL() << "expected the run to stop";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 consecutive steps had a non-finite"), std::string::npos) << e.what();
  }
}

// A finite gradient at a huge (finite) learning rate overflows the weights: the update is never kept — the run stops
// naming the first parameter it broke, and neither a checkpoint nor an export holds it (with max_steps 1 the run
// used to finish, exit 0, with an adapter of inf/NaN tensors).
TEST_F(TrainerTest, AnUpdateThatMakesAWeightNonFiniteStopsTheRunWithoutSavingIt) {
  TrainOptions o = base("overflow");
  o.learning_rate = 1e39;  // finite as a double; every update overflows fp32
  o.lr_scheduler_type = "constant";
  o.warmup_steps = 0;
  o.max_steps = 1;
  o.save_steps = 1;
  std::string e = error_of(o);
  EXPECT_NE(e.find("step 1 made `model.embed_tokens.weight` non-finite (NaN or inf) at learning rate 1e+39"),
            std::string::npos) << e;
  EXPECT_NE(e.find("lower --learning_rate"), std::string::npos) << e;
  EXPECT_TRUE(list_checkpoints(o.output_dir).empty());
  EXPECT_FALSE(path_exists(o.output_dir + "/adapter_model.safetensors"));
  EXPECT_FALSE(path_exists(o.output_dir + "/adapter_config.json"));
}

TEST_F(TrainerTest, SigintSavesACheckpointAndStops) {
  TrainOptions o = base("sigint");
  o.max_steps = 100000;  // would run for hours: only the signal ends it
  std::thread killer([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::raise(SIGINT);
  });
  const TrainResult r = run_training(o, {});
  killer.join();
  EXPECT_TRUE(r.interrupted);
  EXPECT_GT(r.steps, 0);
  EXPECT_LT(r.steps, 100000);
  ASSERT_EQ(list_checkpoints(o.output_dir).size(), 1u);
  EXPECT_NE(list_checkpoints(o.output_dir)[0].find("checkpoint-" + std::to_string(r.steps)), std::string::npos);
}

TEST_F(TrainerTest, DemoPresetLearnsOnAShortRun) {
  TrainOptions o = base("demo_preset");
  o.model_config = "demo";  // the embedded demo's model: 4 layers, hidden 64, vocab 512 (ids here are < 50)
  o.model_max_length = 64;
  o.low_rank_training = false;
  o.use_s2attn = false;
  o.learning_rate = 3e-3;
  o.lr_scheduler_type = "constant";
  o.warmup_steps = 0;
  o.per_device_train_batch_size = 4;
  o.max_steps = 30;
  run_training(o, {});
  const std::vector<double> l = losses(o.output_dir);
  ASSERT_EQ(l.size(), 30u);
  EXPECT_LT(l.back(), 0.6 * l.front()) << "first " << l.front() << ", last " << l.back();
}

TEST(TrainerSteps, FrozenWeightsStayBitIdentical) {
  CpuBackend<float> backend;
  ModelOptions mo;
  mo.config.hidden_size = 16, mo.config.intermediate_size = 24, mo.config.num_attention_heads = 2;
  mo.config.num_key_value_heads = 2, mo.config.num_hidden_layers = 2, mo.config.vocab_size = 20;
  mo.seq_len = 8;
  mo.lora.rank = 2;
  mo.lora.targets = parse_lora_targets("q,v", mo.config);
  mo.trainable = TrainableConfig::parse("norm");
  Model model(backend, mo);
  model.init_random(1);
  std::vector<std::vector<unsigned char>> before;
  for (const Param& p : model.params().all())
    if (!p.trainable) before.emplace_back((const unsigned char*)p.value.data, (const unsigned char*)p.value.data + p.value.nbytes());
  AdamW opt(backend, model.params(), {0.9, 0.999, 1e-8, 0.1});
  Rng rng(2);
  std::vector<int32_t> tokens(8), targets(8);
  for (int step = 0; step < 3; ++step) {
    for (int i = 0; i < 8; ++i) tokens[i] = int32_t(rng.below(20)), targets[i] = int32_t(rng.below(20));
    model.params().zero_grads();
    model.forward_backward(tokens.data(), targets.data());
    opt.step(1e-2);
  }
  size_t i = 0;
  for (const Param& p : model.params().all())
    if (!p.trainable) {
      EXPECT_EQ(std::memcmp(before[i++].data(), p.value.data, p.value.nbytes()), 0) << p.name << " changed";
    }
  const Param& b = model.params().get("model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_GT(test::norm(download_f64(backend, b.value)), 0.0) << "trainable LoRA B moved away from zero";
}

// The optimizer names the first trainable parameter (store order) holding NaN/inf, at ZeRO stages 0 and 2 (one
// rank here; tests/mpi covers several), and a checkpoint refuses to save one, leaving no checkpoint directory.
TEST(TrainerSteps, NonFiniteWeightsAreNamedAndNeverCheckpointed) {
  for (int stage : {0, 2}) {
    CpuBackend<float> backend;
    ModelOptions mo;
    mo.config.hidden_size = 16, mo.config.intermediate_size = 24, mo.config.num_attention_heads = 2;
    mo.config.num_key_value_heads = 2, mo.config.num_hidden_layers = 2, mo.config.vocab_size = 20;
    mo.seq_len = 8;
    mo.lora.rank = 2;
    mo.lora.targets = parse_lora_targets("q,v", mo.config);
    mo.trainable = TrainableConfig::parse("norm");
    Model model(backend, mo);
    model.init_random(1);
    std::unique_ptr<Comm> local = make_local_comm();
    DistributedOptimizer opt(backend, model.params(), *local, {}, stage);
    EXPECT_EQ(opt.first_nonfinite_weight(), "") << "stage " << stage;
    auto poison = [&](const std::string& name, size_t at, double value) {
      Param& p = model.params().get(name);
      std::vector<double> v = download_f64(backend, p.value);
      v[at] = value;
      upload_f64(backend, p.value, v);
    };
    poison("model.norm.weight", 3, std::numeric_limits<double>::infinity());
    poison("model.layers.1.self_attn.v_proj.lora_B.weight", 5, std::nan(""));
    poison("model.layers.0.mlp.down_proj.weight", 0, std::nan(""));  // frozen: not the optimizer's business
    EXPECT_EQ(opt.first_nonfinite_weight(), "model.layers.1.self_attn.v_proj.lora_B.weight") << "stage " << stage;

    const std::string dir = ::testing::TempDir() + "/nonfinite_checkpoint_" + std::to_string(stage);
    fs::remove_all(dir);
    TrainerState state;
    state.global_step = 7;
    try {
      save_checkpoint(dir, model.params(), opt, backend, *local, state);
      ADD_FAILURE() << "expected the save to be refused";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("trainable.safetensors: `model.layers.1.self_attn.v_proj.lora_B.weight` "
                                           "holds nan at [2,1] of [16,2] (f32); refusing to checkpoint"),
                std::string::npos)
          << e.what();
    }
    EXPECT_TRUE(list_checkpoints(dir).empty());
    EXPECT_FALSE(path_exists(dir + "/checkpoint-7"));
  }
}

TEST_F(TrainerTest, FlagErrorsAreClear) {
  TrainOptions o = base("errors");
  o.sft_data_path = "x.json";
  EXPECT_NE(error_of(o).find("exactly one of --data_path"), std::string::npos);
  o = base("errors");
  o.zero_stage = 1;
  EXPECT_NE(error_of(o).find("expected 0, 2 or 3"), std::string::npos);
  o = base("errors");
  o.device = "cuda";
  bool cuda_available = false;
  for (const BackendInfo& info : list_backends()) cuda_available |= info.name == "cuda" && info.available;
  if (!cuda_available) {  // on a GPU machine --device cuda is valid
    EXPECT_NE(error_of(o).find("backend `cuda` cannot be created"), std::string::npos);
  }
  o = base("errors");
  o.model_max_length = 30;  // S2: 30 · 1/4 = 7, 30 % 7 != 0
  EXPECT_NE(error_of(o).find("not divisible by the group size"), std::string::npos);
  o = base("errors");
  o.lr_scheduler_type = "cosine_restarts";
  EXPECT_NE(error_of(o).find("--lr_scheduler_type"), std::string::npos);
  o = base("errors");
  o.trainable_params = "embed,bias";
  EXPECT_NE(error_of(o).find("--trainable_params"), std::string::npos);
  o = base("errors");
  o.model_config = "llama3-8b";
  EXPECT_NE(error_of(o).find("neither a preset"), std::string::npos);
  o = base("errors");
  o.gradient_checkpointing = "sometimes";
  EXPECT_NE(error_of(o).find("--gradient_checkpointing: expected true, false, auto or a number of layers to checkpoint "
                             "(0 to num_hidden_layers), got `sometimes`"),
            std::string::npos)
      << error_of(o);
  o = base("errors");
  o.gradient_checkpointing = "3";  // the model has 2 layers
  EXPECT_NE(error_of(o).find("--gradient_checkpointing: 3 layers to checkpoint, but the model has 2 layers; expected "
                             "true, false, auto or a number from 0 to 2"),
            std::string::npos)
      << error_of(o);
  o = base("errors");
  o.data_path = dir_ + "/missing.bin";
  EXPECT_NE(error_of(o).find("missing.bin"), std::string::npos);
}

// A CPU run larger than the host's memory stops before allocating, naming the sizes that ask for the memory (it used
// to end in std::bad_alloc, which says nothing about what was too large).
TEST_F(TrainerTest, AModelLargerThanHostMemoryIsRefusedNamingItsSizes) {
  // ~1.5·10¹² parameters (under the config limit): 6 TB of f32 weights, more than any host has available.
  write_file_atomic(dir_ + "/huge.json", R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 65536, "intermediate_size": 131072, "num_attention_heads": 512, "num_key_value_heads": 512,
    "num_hidden_layers": 40, "vocab_size": 50, "rms_norm_eps": 1e-5, "max_position_embeddings": 16})");
  TrainOptions o = base("huge");
  o.model_config = dir_ + "/huge.json";
  const std::string e = error_of(o);
  EXPECT_NE(e.find("of host memory"), std::string::npos) << e;
  EXPECT_NE(e.find("hidden_size 65536"), std::string::npos) << e;
  EXPECT_NE(e.find("num_hidden_layers 40"), std::string::npos) << e;
  EXPECT_NE(e.find("is available (MemAvailable)"), std::string::npos) << e;
}

TEST(HostBackendMemory, PlansAreComparedWithTheAvailableMemoryPerHost) {
  auto backend = create_backend("cpu");
  ModelOptions mo;
  ASSERT_TRUE(model_preset("demo", &mo.config));
  mo.seq_len = 64;
  mo.checkpoint_layers = mo.config.num_hidden_layers;
  const size_t need = plan_rank_memory(*backend, mo, 0, 1).total();
  EXPECT_NO_THROW(check_host_backend_memory(*backend, mo, 0, 1, 1, 0));         // unknown: not checked
  EXPECT_NO_THROW(check_host_backend_memory(*backend, mo, 0, 1, 1, need));      // exactly fits
  EXPECT_NO_THROW(check_host_backend_memory(*backend, mo, 0, 2, 2, 2 * need));  // two ranks, each its own plan
  EXPECT_THROW(check_host_backend_memory(*backend, mo, 0, 1, 1, need - 1), Error);
  EXPECT_THROW(check_host_backend_memory(*backend, mo, 0, 2, 2, 2 * need - 1), Error);
}

// Options out of their flag's range (or NaN/inf) stop the run before anything is written, naming the option, the
// value and the range: with --adam_beta1 1 or --learning_rate inf a run used to export an all-NaN adapter, exit 0.
TEST_F(TrainerTest, NumericOptionsOutOfRangeAreRefusedBeforeAnythingIsWritten) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  const std::vector<std::pair<std::function<void(TrainOptions&)>, std::string>> cases = {
      {[](TrainOptions& o) { o.adam_beta1 = 1.0; }, "--adam_beta1 must be a finite number in [0, 1), got 1"},
      {[](TrainOptions& o) { o.adam_beta2 = -0.5; }, "--adam_beta2 must be a finite number in [0, 1), got -0.5"},
      {[&](TrainOptions& o) { o.learning_rate = inf; }, "--learning_rate must be a finite number >= 0, got inf"},
      {[&](TrainOptions& o) { o.adam_epsilon = 0; }, "--adam_epsilon must be a finite number > 0, got 0"},
      {[&](TrainOptions& o) { o.weight_decay = nan; }, "--weight_decay must be a finite number >= 0, got"},
      {[](TrainOptions& o) { o.max_grad_norm = -1; }, "--max_grad_norm must be a finite number >= 0, got -1"},
      {[](TrainOptions& o) { o.rope_scaling_factor = -2; }, "--rope_scaling_factor must be a finite number >= 0"},
      {[](TrainOptions& o) { o.s2_group_ratio = 1.5; }, "--s2_group_ratio must be a finite number in (0, 1], got 1.5"},
      {[&](TrainOptions& o) { o.lora_alpha = inf; }, "--lora_alpha must be a finite number, got inf"},
      {[](TrainOptions& o) { o.lora_dropout = 1; }, "--lora_dropout must be a finite number in [0, 1), got 1"},
      {[&](TrainOptions& o) { o.num_train_epochs = inf; }, "--num_train_epochs must be a finite number >= 0, got inf"},
      {[](TrainOptions& o) { o.comm_timeout_sec = 0; }, "--comm_timeout_sec must be a finite number > 0, got 0"},
      {[](TrainOptions& o) { o.save_steps = -1; }, "--save_steps must be an integer >= 0, got -1"},
      {[](TrainOptions& o) { o.save_total_limit = -2; }, "--save_total_limit must be an integer >= 0, got -2"},
      {[](TrainOptions& o) { o.logging_steps = 0; }, "--logging_steps must be an integer >= 1, got 0"},
      {[](TrainOptions& o) { o.warmup_steps = -5; }, "--warmup_steps must be an integer >= 0, got -5"},
      {[](TrainOptions& o) { o.reduce_bucket_size = -1; }, "--reduce_bucket_size must be an integer >= 0, got -1"},
      {[](TrainOptions& o) { o.comm_chunk_bytes = 0; }, "--comm_chunk_bytes must be an integer >= 1, got 0"},
      {[](TrainOptions& o) { o.mlp_tile_rows = -1; }, "--mlp_tile_rows must be an integer >= 0, got -1"},
      {[](TrainOptions& o) { o.comm = "gloo"; }, "--comm: expected auto, nccl or mpi, got `gloo`"},
      {[](TrainOptions& o) { o.comm = "nccl"; }, "--comm nccl: NCCL moves device buffers, and --device cpu ranks"},
  };
  for (const auto& [set, expected] : cases) {
    TrainOptions o = base("ranges");
    set(o);
    const std::string e = error_of(o);
    EXPECT_NE(e.find(expected), std::string::npos) << "expected `" << expected << "`, got `" << e << "`";
    EXPECT_FALSE(path_exists(o.output_dir)) << expected;
  }
}

TEST(GradientCheckpointingFlag, ParsesWordsAndLayerCountsAndRejectsTheRest) {
  auto parsed = [](const std::string& v, int64_t layers) {
    const GradientCheckpointing g = parse_gradient_checkpointing(v, layers);
    return std::pair<bool, int64_t>{g.automatic, g.layers};
  };
  using P = std::pair<bool, int64_t>;
  EXPECT_EQ(parsed("true", 32), P(false, 32));
  EXPECT_EQ(parsed("True", 32), P(false, 32));  // LongLoRA's spelling
  EXPECT_EQ(parsed("yes", 32), P(false, 32));
  EXPECT_EQ(parsed("False", 32), P(false, 0));
  EXPECT_EQ(parsed("no", 32), P(false, 0));
  EXPECT_EQ(parsed("AUTO", 32), P(true, 32));
  EXPECT_EQ(parsed("0", 32), P(false, 0));
  EXPECT_EQ(parsed("1", 32), P(false, 1));  // a layer count, not "true"
  EXPECT_EQ(parsed("12", 32), P(false, 12));
  EXPECT_EQ(parsed("32", 32), P(false, 32));
  EXPECT_EQ(parsed("40", -1), P(false, 40));  // spelling only: the model is not known yet
  auto error = [](const std::string& v, int64_t layers) -> std::string {
    try {
      parse_gradient_checkpointing(v, layers);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error("33", 32).find("--gradient_checkpointing: 33 layers to checkpoint, but the model has 32 layers"),
            std::string::npos);
  for (const std::string bad : {"-1", "1.5", "12x", " 3", "", "on", "99999999999999999999"}) {
    const std::string e = error(bad, 32);
    EXPECT_NE(e.find("--gradient_checkpointing: expected true, false, auto or a number of layers to checkpoint (0 to "
                     "32), got `" + bad + "`"),
              std::string::npos)
        << "`" << bad << "`: " << e;
  }
}

TEST_F(TrainerTest, PartialCheckpointingTrainsBitIdenticallyAndSaysWhatItRecomputes) {
  std::map<std::string, std::vector<double>> runs;
  for (const std::string flag : {"false", "1", "true", "auto"}) {
    TrainOptions o = base("ckpt_" + (flag == "1" ? std::string("one") : flag));
    o.max_steps = 3;
    o.lora_dropout = 0.1;  // recomputation must redraw the same masks
    o.gradient_checkpointing = flag;
    ::testing::internal::CaptureStderr();
    run_training(o, {});
    const std::string err = ::testing::internal::GetCapturedStderr();
    const std::string expected =
        flag == "false"  ? "0 of 2 layers checkpointed (--gradient_checkpointing false)"
        : flag == "1"    ? "1 of 2 layers checkpointed (--gradient_checkpointing 1)"
        : flag == "true" ? "2 of 2 layers checkpointed (--gradient_checkpointing true)"
                         : "2 of 2 layers checkpointed (auto: host backend)";
    EXPECT_NE(err.find("gradient checkpointing: " + expected), std::string::npos) << err;
    runs[flag] = losses(o.output_dir);
    ASSERT_EQ(runs[flag].size(), 3u) << flag;
  }
  EXPECT_EQ(runs["1"], runs["false"]);
  EXPECT_EQ(runs["true"], runs["false"]);
  EXPECT_EQ(runs["auto"], runs["false"]);
}

// The start-up line names the RoPE rule the run trains with: for a Llama-3.1 config (rope_scaling llama3) trained
// past its length, LongLoRA's linear factor composes into the llama3 factor, as build/info says.
TEST_F(TrainerTest, StartUpLineNamesTheComposedLlama3Rope) {
  nlohmann::json config = nlohmann::json::parse(kTinyConfig);
  config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}};
  write_file_atomic(dir_ + "/llama3.json", config.dump());
  TrainOptions o = base("llama3");
  o.model_config = dir_ + "/llama3.json";
  o.max_steps = 1;
  ::testing::internal::CaptureStderr();
  run_training(o, {});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("| RoPE llama3 factor 16, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings "
                     "16 (config.json's factor 8 × linear factor 2) |"),
            std::string::npos)
      << err;
  // A plain Llama config: the linear (position interpolation) factor.
  TrainOptions plain = base("plain");
  plain.max_steps = 1;
  ::testing::internal::CaptureStderr();
  run_training(plain, {});
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("| RoPE linear scaling (position interpolation) factor 2 |"),
            std::string::npos);
}

// --num_train_epochs: full steps (the last batch of an epoch wraps into the next), and a note with the Hugging Face
// Trainer's count where its short end-of-epoch steps make it differ (train/epoch_steps.h).
TEST_F(TrainerTest, EpochRunsSayWhereTheTrainersStepCountDiffers) {
  TokenFileWriter w(dir_ + "/ten_rows.bin", TokenFormat::Raw16);
  for (int i = 0; i < 320; ++i) w.append({int32_t((i * 7) % 50)});  // 10 rows of 32 tokens
  w.finish();
  TrainOptions o = base("epochs");
  o.data_path = dir_ + "/ten_rows.bin";
  o.max_steps = -1;
  o.num_train_epochs = 3;
  o.gradient_accumulation_steps = 2;  // 4 rows per step: 7.5 steps, 8; the Trainer: 3 per epoch (2 + 2 + 1 batches)
  ::testing::internal::CaptureStderr();
  run_training(o, {});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(losses(o.output_dir).size(), 8u);
  EXPECT_NE(err.find("--num_train_epochs 3: 8 steps of 4 full rows (an epoch's last batch wraps into the next); the "
                     "Hugging Face Trainer would run 9 (3 per epoch, the last one short)"),
            std::string::npos)
      << err;
  // One epoch of whole steps: the counts agree, no note.
  TrainOptions whole = base("whole");
  whole.data_path = o.data_path;
  whole.max_steps = -1;
  whole.num_train_epochs = 1;
  ::testing::internal::CaptureStderr();
  run_training(whole, {});
  EXPECT_EQ(::testing::internal::GetCapturedStderr().find("the Hugging Face Trainer would run"), std::string::npos);
  EXPECT_EQ(losses(whole.output_dir).size(), 5u);
}

TEST_F(TrainerTest, OffloadedCheckpointsTrainBitIdenticallyAndCheckHostMemory) {
  // Four layers, so that checkpointing all of them offloads the inputs of two (the last two stay in device slots).
  std::string cfg = kTinyConfig;
  cfg.replace(cfg.find("\"num_hidden_layers\": 2"), std::string("\"num_hidden_layers\": 2").size(),
              "\"num_hidden_layers\": 4");
  write_file_atomic(dir_ + "/config4.json", cfg);
  std::map<bool, std::vector<double>> runs;
  for (const bool offload : {false, true}) {
    TrainOptions o = base(offload ? "offload_on" : "offload_off");
    o.model_config = dir_ + "/config4.json";
    o.max_steps = 3;
    o.lora_dropout = 0.1;
    o.gradient_checkpointing = "true";
    o.offload_checkpoints = offload;
    ::testing::internal::CaptureStderr();
    run_training(o, {});
    const std::string err = ::testing::internal::GetCapturedStderr();
    const size_t host = 2 * size_t(2 * 32 * 32) * sizeof(float);  // 2 inputs of [B·L = 64, hidden 32]
    EXPECT_EQ(err.find("4 of 4 layers checkpointed (--gradient_checkpointing true; offloaded to host memory: the "
                       "inputs of 2 layers, " + format_gib(host) + "; the last 2 stay in device slots)") !=
                  std::string::npos,
              offload)
        << err;
    EXPECT_EQ(err.find("host memory: offloaded layer inputs 0.0") != std::string::npos, offload) << err;
    runs[offload] = losses(o.output_dir);
    ASSERT_EQ(runs[offload].size(), 3u);
  }
  EXPECT_EQ(runs[true], runs[false]);

  TrainOptions o = base("offload_errors");
  o.model_config = dir_ + "/config4.json";
  o.offload_checkpoints = true;
  o.gradient_checkpointing = "false";
  EXPECT_NE(error_of(o).find("--offload_checkpoints true moves the saved inputs of checkpointed layers to host memory, "
                             "but --gradient_checkpointing false checkpoints no layer"),
            std::string::npos)
      << error_of(o);
  o.gradient_checkpointing = "0";
  EXPECT_NE(error_of(o).find("checkpoints no layer"), std::string::npos) << error_of(o);
  // A host with less memory available than the staging (injected: the real check reads /proc/meminfo).
  o.gradient_checkpointing = "true";
  o.pretend_host_memory = 8192;
  const std::string e = error_of(o);
  EXPECT_NE(e.find("--offload_checkpoints true: the offloaded layer inputs need 0.0 GiB of host memory, but only "
                   "0.0 GiB is available (MemAvailable)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("set --offload_checkpoints false"), std::string::npos) << e;
  o.pretend_host_memory = 1 << 20;  // enough: the run goes ahead
  o.max_steps = 1;
  EXPECT_EQ(error_of(o), "");
  // Two layers checkpointed: nothing goes to the host, so no host memory is needed.
  o.gradient_checkpointing = "2";
  o.pretend_host_memory = 1;
  o.overwrite_output_dir = true;  // the folder holds the run just above
  EXPECT_EQ(error_of(o), "");
}

// --mlp_tile_rows: the run says so, plans less activation memory and trains as the untiled run does (the gradients
// differ only in the order of their sums over rows, so the losses agree to rounding).
TEST_F(TrainerTest, MlpTilesTrainLikeTheUntiledRunAndAreAnnounced) {
  std::map<int64_t, std::vector<double>> runs;
  for (const int64_t tile : {int64_t(0), int64_t(5)}) {
    TrainOptions o = base("tiles_" + std::to_string(tile));
    o.max_steps = 3;
    o.lora_target = "q,k,v,o,gate,up,down";
    o.mlp_tile_rows = tile;
    ::testing::internal::CaptureStderr();
    run_training(o, {});
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(err.find("--mlp_tile_rows 5: every layer's MLP runs over row tiles, its intermediates recomputed in "
                       "backward") != std::string::npos,
              tile > 0)
        << err;
    runs[tile] = losses(o.output_dir);
    ASSERT_EQ(runs[tile].size(), 3u);
  }
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(runs[5][i], runs[0][i], 1e-5 * runs[0][i]) << "step " << i;
}

TEST(OffloadFlags, HostMemoryCheckAndFlagValues) {
  EXPECT_NO_THROW(check_host_memory(0, 1, 1));           // nothing offloaded
  EXPECT_NO_THROW(check_host_memory(size_t(1) << 40, 1, 0));  // unknown: not checked
  EXPECT_NO_THROW(check_host_memory(100, 4, 400));
  try {
    check_host_memory(size_t(3) << 30, 4, size_t(10) << 30);  // 4 ranks on the host need 12 GiB
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("need 3.0 GiB of host memory per rank (12.0 GiB for the 4 ranks on this "
                                         "host), but only 10.0 GiB is available"),
              std::string::npos)
        << e.what();
  }
  EXPECT_GT(available_host_memory(), size_t(0));  // this machine reports it
  // --offload_checkpoints is a boolean flag: true/false (and 1/0/yes/no), anything else is an error naming it.
  bool offload = false;
  Flags flags("train", "test");
  flags.add("offload_checkpoints", &offload, "offload");
  auto parse = [&](std::vector<std::string> args) {
    std::vector<char*> argv{const_cast<char*>("train")};
    for (auto& a : args) argv.push_back(a.data());
    return flags.parse(int(argv.size()), argv.data());
  };
  parse({"--offload_checkpoints", "true"});
  EXPECT_TRUE(offload);
  parse({"--offload_checkpoints=false"});
  EXPECT_FALSE(offload);
  try {
    parse({"--offload_checkpoints", "sometimes"});
    ADD_FAILURE() << "accepted `sometimes`";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--offload_checkpoints"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("expected true or false, got `sometimes`"), std::string::npos) << e.what();
  }
}

// SFT examples whose prompt fills --model_max_length score no target. They used to count as loss 0 in the mean of
// micro-batch means (a run of only such examples "trained" at loss 0, exit 0; a 50/50 mix halved the loss and the
// gradient): they are dropped at load and reported, and a file with nothing left is an error naming it.
class SftTargets : public TrainerTest {
 protected:
  // `long_prompts` examples whose prompt alone exceeds 64 tokens, then `short_ones` that fit.
  std::string write_sft(const std::string& name, int long_prompts, int short_ones) const {
    std::string jsonl;
    std::string long_instruction;
    for (int i = 0; i < 60; ++i) long_instruction += "kalo mine rushi ";
    for (int i = 0; i < long_prompts; ++i)
      jsonl += nlohmann::json{{"instruction", long_instruction + std::to_string(i)}, {"output", "tapo deva"}}.dump() + "\n";
    for (int i = 0; i < short_ones; ++i)
      jsonl += nlohmann::json{{"instruction", "zuri " + std::to_string(i)}, {"output", "kalo mi neru ta shi po"}}.dump() +
               "\n";
    const std::string path = dir_ + "/" + name;
    write_file_atomic(path, jsonl);
    return path;
  }
  TrainOptions sft_options(const std::string& out, const std::string& data, const std::string& tokenizer) const {
    std::string config = kTinyConfig;
    config.replace(config.find("\"vocab_size\": 50"), 16, "\"vocab_size\": 400");  // the small tokenizer's
    write_file_atomic(dir_ + "/config400.json", config);
    TrainOptions o = base(out);
    o.model_config = dir_ + "/config400.json";
    o.data_path.clear();
    o.sft_data_path = data;
    o.tokenizer = tokenizer;
    o.model_max_length = 64;
    o.per_device_train_batch_size = 1;
    o.learning_rate = 0;  // losses of the untrained model: comparable step by step
    return o;
  }
};

TEST_F(SftTargets, ExamplesWithoutTargetsAreDroppedReportedAndNeverScoreZero) {
  LL_REQUIRE_SMALL_TOKENIZER(tokenizer);
  const Tokenizer tok = Tokenizer::load(tokenizer);
  const std::string mixed = write_sft("mixed.jsonl", 4, 4);
  std::FILE* log = std::tmpfile();
  const SftSource source(mixed, tok, 64, 1, 42, log);
  EXPECT_EQ(source.rows_per_epoch(), 4);
  EXPECT_EQ(source.dropped(), 4);
  for (const SftExample& ex : source.examples()) EXPECT_LT(ex.prompt_tokens, int64_t(ex.ids.size()));
  std::rewind(log);
  char line[512] = {};
  EXPECT_NE(std::fgets(line, sizeof line, log), nullptr);
  std::fclose(log);
  EXPECT_EQ(std::string(line), "SFT data " + mixed + ": dropped 4 of 8 examples whose prompt fills the context "
                               "(--model_max_length 64): no target token left to train on\n");

  TrainOptions o = sft_options("mixed", mixed, tokenizer);
  o.max_steps = 8;
  o.gradient_accumulation_steps = 1;
  run_training(o, {});
  const std::vector<double> l = losses(o.output_dir);
  ASSERT_EQ(l.size(), 8u);
  for (size_t i = 0; i < l.size(); ++i) EXPECT_GT(l[i], 1.0) << "step " << i + 1;  // ln(400) ≈ 6 untrained

  const std::string none_left = write_sft("none_left.jsonl", 3, 0);
  TrainOptions all_long = sft_options("none_left", none_left, tokenizer);
  EXPECT_EQ(error_of(all_long).find("SFT data `" + none_left + "`: all 3 examples have a prompt that fills the "
                                    "context (--model_max_length 64"),
            0u) << error_of(all_long);
}

// SFT with a tokenizer.json given as a folder: the chat template comes from the tokenizer_config.json beside it
// (here a Mistral-style [INST] template, though the tokenizer's own <|im_start|> alone would suggest chatml);
// --chat_template overrides it. The examples are the template's prompt (masked) + answer + end of turn.
TEST_F(SftTargets, TokenizerJsonFolderAndItsChatTemplate) {
  const std::string tok_dir = dir_ + "/tok";
  make_directories(tok_dir);
  const std::string tokenizer_json = test::write_chatml_tokenizer_json(tok_dir);
  write_file_atomic(tok_dir + "/tokenizer_config.json",
                    R"({"bos_token": "[CLS]", "eos_token": "[SEP]", "chat_template": "{{ bos_token }}{% for message )"
                    R"(in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }})"
                    R"({% else %}{{ message['content'] + eos_token + ' ' }}{% endif %}{% endfor %}"})");
  const Tokenizer tok = Tokenizer::load(tokenizer_json);  // BOS and EOS from the config
  std::string config = kTinyConfig;
  config.replace(config.find("\"vocab_size\": 50"), 16, "\"vocab_size\": " + std::to_string(tok.vocab_size()));
  write_file_atomic(dir_ + "/config_tok.json", config);
  const std::string data = write_sft("chat.jsonl", 0, 4);
  auto run = [&](const std::string& chat_template) {
    TrainOptions o = sft_options("chat_" + chat_template, data, tok_dir);
    o.model_config = dir_ + "/config_tok.json";
    o.chat_template = chat_template;
    o.max_steps = 2;
    testing::internal::CaptureStderr();
    const TrainResult r = run_training(o, {});
    const std::string log = testing::internal::GetCapturedStderr();
    EXPECT_EQ(r.steps, 2) << log;
    EXPECT_EQ(losses(o.output_dir).size(), 2u);
    return log;
  };
  const std::string mistral = run("auto");
  EXPECT_NE(mistral.find("SFT prompts: chat template mistral, tokenizer " + tok_dir + "/tokenizer.json (tokenizer.json)"),
            std::string::npos) << mistral;
  const std::string chatml = run("chatml");
  EXPECT_NE(chatml.find("SFT prompts: chat template chatml"), std::string::npos) << chatml;

  ChatStyle style = resolve_chat_style("auto", tok_dir, tok);
  ASSERT_EQ(style.kind, ChatTemplate::Mistral);
  const SftExample ex = make_sft_example(tok, "zuri 0", "", "kalo mi", 64, style);
  EXPECT_EQ(ex.ids.front(), tok.token_to_id("[CLS]"));
  EXPECT_EQ(ex.ids.back(), tok.token_to_id("[SEP]"));
  EXPECT_EQ(std::vector<int32_t>(ex.ids.begin() + 1, ex.ids.begin() + ex.prompt_tokens),
            tok.encode("[INST] zuri 0 [/INST]", false, false));
  // --parse_special_tokens: a literal <|im_end|> in an answer is text by default, the id when asked.
  TokenizerOptions parse;
  parse.parse_special_tokens = true;
  const Tokenizer parsing = Tokenizer::load(tokenizer_json, parse);
  const ChatStyle chatml_style = resolve_chat_style("chatml", tok_dir, tok);
  const int32_t im_end = tok.token_to_id("<|im_end|>");
  auto count_im_end = [&](const Tokenizer& t) {
    const SftExample e = make_sft_example(t, "zuri", "", "kalo<|im_end|>mi", 64, chatml_style);
    return std::count(e.ids.begin(), e.ids.end(), im_end);
  };
  EXPECT_EQ(count_im_end(tok), 2) << "the user turn's and the answer's end of turn";
  EXPECT_EQ(count_im_end(parsing), 3);

  TrainOptions bad = sft_options("bad", data, tok_dir);
  bad.model_config = dir_ + "/config_tok.json";
  bad.chat_template = "chatgpt";
  EXPECT_EQ(error_of(bad), "--chat_template: expected auto, llama2, llama3, chatml, mistral or none, got `chatgpt`");
}

// A vocabulary over 65,536 (Llama-3's, Qwen's): the tokenize job writes llm.c's uint32 file, and training reads it.
TEST_F(TrainerTest, TrainsFromAUint32TokenFile) {
  std::string config = kTinyConfig;
  config.replace(config.find("\"vocab_size\": 50"), 16, "\"vocab_size\": 70000");
  write_file_atomic(dir_ + "/config70k.json", config);
  Rng rng(5);
  TokenFileWriter w(dir_ + "/train32.bin", TokenFormat::Llmc32);
  for (int i = 0; i < 2000; ++i) w.append({int32_t(65536 + (i * 7) % 4000 + (rng.uniform() < 0.1 ? 1 : 0))});
  w.finish();
  TrainOptions o = base("uint32");
  o.model_config = dir_ + "/config70k.json";
  o.data_path = dir_ + "/train32.bin";
  o.max_steps = 2;
  const TrainResult r = run_training(o, {});
  EXPECT_EQ(r.steps, 2);
  const std::vector<double> l = losses(o.output_dir);
  ASSERT_EQ(l.size(), 2u);
  EXPECT_TRUE(std::isfinite(l[0]) && std::isfinite(l[1]));
  // A 65,536-id model: every id of the file is past it (read as 16 bits they would all fit), so it is refused.
  config.replace(config.find("\"vocab_size\": 70000"), 19, "\"vocab_size\": 65536");
  write_file_atomic(dir_ + "/config64k.json", config);
  o.model_config = dir_ + "/config64k.json";
  o.output_dir = dir_ + "/uint32_64k";
  const std::string error = error_of(o);
  EXPECT_NE(error.find("train32.bin"), std::string::npos) << error;
  EXPECT_NE(error.find("65536"), std::string::npos) << error;
}

// LongLoRA's SFT example with the real Llama-2 tokenizer: [INST]…[/INST] prompt, BOS + prompt masked.
TEST(SftExamples, TemplateMaskingAndTruncationWithLlama2Tokenizer) {
  const std::string path = test::asset_path("llama2-tokenizer.model");
  if (path.empty()) GTEST_SKIP() << "llama2-tokenizer.model not found in $LONGLORA_ASSETS or ../shared/assets";
  const Tokenizer tok = Tokenizer::load(path);
  const SftExample ex = make_sft_example(tok, "What is the capital of France?", "", "Paris.", 1000);
  const std::vector<int32_t> prompt = tok.encode("[INST]What is the capital of France?[/INST]", true, false);
  const std::vector<int32_t> full = tok.encode("[INST]What is the capital of France?[/INST]Paris.", true, true);
  EXPECT_EQ(ex.ids, full);
  EXPECT_EQ(ex.ids.front(), 1);
  EXPECT_EQ(ex.ids.back(), 2);  // EOS by id
  EXPECT_EQ(ex.prompt_tokens, int64_t(prompt.size()));
  const SftExample cut = make_sft_example(tok, "What is the capital of France?", "", "Paris.", 5);
  EXPECT_EQ(cut.ids.size(), 5u);
  EXPECT_EQ(cut.prompt_tokens, 5);  // everything masked: nothing to learn from a truncated prompt
  const SftExample with_input = make_sft_example(tok, "Summarise.", "Some text.", "Ok.", 1000);
  EXPECT_EQ(tok.decode(with_input.ids).rfind("[INST] <<SYS>>\nYou are a helpful", 0), 0u) << tok.decode(with_input.ids);
}

}  // namespace
}  // namespace ll
