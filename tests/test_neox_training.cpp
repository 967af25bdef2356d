// GPT-NeoX through build/train's loop on the CPU, as the Llama tests in test_trainer.cpp do it: exact resume, layer
// checkpointing (including auto) and offload bit-identical to plain runs, and a tiny LongLoRA run end to end —
// pretrain at a short context, extend with position interpolation + S2 (roll, LongLoRA's NeoX code) + LoRA+ on
// query_key_value,dense with embed,norm trained — whose perplexity at the long context improves.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "data/token_file.h"
#include "eval/commands.h"
#include "eval_test_util.h"
#include "io/hf_config.h"
#include "neox_test_options.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "util/files.h"
#include "util/random.h"

namespace fs = std::filesystem;

namespace ll {
namespace {

class NeoxTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/neox_trainer_" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    make_directories(dir_);
    write_file_atomic(dir_ + "/config.json", test::tiny_neox_config_json(true, 2));
    write_file_atomic(dir_ + "/config4.json", test::tiny_neox_config_json(false, 4));
    write_stream(dir_ + "/train.bin", 3, 4000);
  }
  // A learnable stream: a repeating phrase with 10% noise.
  static void write_stream(const std::string& path, uint64_t seed, int n) {
    Rng rng(seed);
    TokenFileWriter w(path, TokenFormat::Raw16);
    for (int i = 0; i < n; ++i) w.append({int32_t(rng.uniform() < 0.9 ? (i * 7) % 50 : rng.below(50))});
    w.finish();
  }
  TrainOptions base(const std::string& out) const {
    TrainOptions o;
    o.model_config = dir_ + "/config.json";
    o.data_path = dir_ + "/train.bin";
    o.output_dir = dir_ + "/" + out;
    o.model_max_length = 32;  // factor ceil(32/16) = 2
    o.lora_r = 4;
    o.lora_target = "query_key_value,dense";
    o.s2_variant = "roll";
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
  static std::string file_bytes(const std::string& path) { return read_text_file(path); }
  std::string dir_;
};

TEST_F(NeoxTraining, WithoutLoraTargetTheAdapterCoversLongLorasNeoxModules) {
  TrainOptions o = base("default_targets");
  o.lora_target.clear();
  o.max_steps = 1;
  run_training(o, {});
  const nlohmann::json cfg = nlohmann::json::parse(read_text_file(o.output_dir + "/adapter_config.json"));
  std::vector<std::string> targets = cfg.at("target_modules").get<std::vector<std::string>>();
  std::sort(targets.begin(), targets.end());
  EXPECT_EQ(targets, (std::vector<std::string>{"dense", "query_key_value"}));
}

TEST_F(NeoxTraining, ResumeContinuesBitIdentically) {
  TrainOptions straight = base("straight");
  straight.lora_dropout = 0.1;
  EXPECT_EQ(run_training(straight, {}).steps, 6);
  TrainOptions first = base("resumed");
  first.lora_dropout = 0.1;
  first.interrupt_at_step = 3;
  EXPECT_TRUE(run_training(first, {}).interrupted);
  TrainOptions second = base("resumed");
  second.lora_dropout = 0.1;
  second.resume_from_checkpoint = "auto";
  EXPECT_EQ(run_training(second, {}).steps, 6);
  const std::vector<double> a = losses(straight.output_dir), b = losses(first.output_dir);
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(file_bytes(straight.output_dir + "/checkpoint-6/trainable.safetensors"),
            file_bytes(first.output_dir + "/checkpoint-6/trainable.safetensors"));
  EXPECT_EQ(file_bytes(straight.output_dir + "/checkpoint-6/optimizer.safetensors"),
            file_bytes(first.output_dir + "/checkpoint-6/optimizer.safetensors"));
  // The adapter names NeoX's modules, and LongLoRA's embed,norm trained both embeddings and the LayerNorms.
  const nlohmann::json cfg = nlohmann::json::parse(read_text_file(straight.output_dir + "/adapter_config.json"));
  EXPECT_EQ(cfg.at("target_modules"), nlohmann::json({"query_key_value", "dense"}));
  EXPECT_EQ(cfg.at("modules_to_save"),
            nlohmann::json({"embed_in", "input_layernorm", "post_attention_layernorm", "final_layer_norm",
                            "embed_out"}));
}

TEST_F(NeoxTraining, CheckpointingAutoAndOffloadTrainBitIdentically) {
  std::map<std::string, std::vector<double>> runs;
  for (const std::string flag : {"false", "1", "true", "auto"}) {
    TrainOptions o = base("ckpt_" + (flag == "1" ? std::string("one") : flag));
    o.max_steps = 3;
    o.lora_dropout = 0.1;
    o.gradient_checkpointing = flag;
    ::testing::internal::CaptureStderr();
    run_training(o, {});
    const std::string err = ::testing::internal::GetCapturedStderr();
    if (flag == "auto") {
      EXPECT_NE(err.find("gradient checkpointing: 2 of 2 layers checkpointed (auto: host backend)"), std::string::npos)
          << err;
    }
    runs[flag] = losses(o.output_dir);
    ASSERT_EQ(runs[flag].size(), 3u) << flag;
  }
  EXPECT_EQ(runs["1"], runs["false"]);
  EXPECT_EQ(runs["true"], runs["false"]);
  EXPECT_EQ(runs["auto"], runs["false"]);

  // Four sequential-residual layers, all checkpointed: the inputs of two go to host memory and come back.
  std::map<bool, std::vector<double>> offload_runs;
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
    EXPECT_EQ(err.find("offloaded to host memory: the inputs of 2 layers") != std::string::npos, offload) << err;
    offload_runs[offload] = losses(o.output_dir);
    ASSERT_EQ(offload_runs[offload].size(), 3u);
  }
  EXPECT_EQ(offload_runs[true], offload_runs[false]);
}

double perplexity(const std::string& model, const std::string& tokens, int64_t seq_len, double factor) {
  PerplexityCommand p;
  p.common.base_model = model;
  p.common.rope_scaling_factor = factor;
  p.common.progress = false;
  p.data_path = tokens;
  p.seq_len = seq_len, p.batch_size = 2, p.sliding_window = seq_len;
  std::ostringstream out, log;
  return run_perplexity_command(p, out, log).at("perplexity").get<double>();
}

TEST_F(NeoxTraining, LongLoraExtensionImprovesLongContextPerplexity) {
  write_stream(dir_ + "/eval.bin", 11, 1200);
  // 1. Pretrain from scratch at 16 tokens (the config's max_position_embeddings): full fine-tuning, causal attention.
  TrainOptions pre = base("pretrained");
  pre.model_max_length = 16;
  pre.low_rank_training = false;
  pre.use_s2attn = false;
  pre.learning_rate = 1e-2;
  pre.lr_scheduler_type = "constant";
  pre.warmup_steps = 0;
  pre.per_device_train_batch_size = 8;
  pre.max_steps = 200;
  run_training(pre, {});
  const std::string pretrained = pre.output_dir + "/model";
  ASSERT_TRUE(path_exists(pretrained + "/config.json"));
  EXPECT_EQ(read_hf_config(pretrained).model.model_type, "gpt_neox");

  // 2. LongLoRA at 64 tokens: PI factor ceil(64/16) = 4, S2 (roll), LoRA on query_key_value,dense + embed,norm.
  TrainOptions ext = base("extended");
  ext.model_name_or_path = pretrained;
  ext.model_config = "";
  ext.add_pad_token = false;  // no tokenizer: the token ids are the model's
  ext.model_max_length = 64;
  ext.learning_rate = 5e-3;
  ext.lr_scheduler_type = "constant";
  ext.warmup_steps = 0;
  ext.per_device_train_batch_size = 4;
  ext.max_steps = 60;
  ext.save_merged = true;
  run_training(ext, {});
  const nlohmann::json merged_cfg = nlohmann::json::parse(read_text_file(ext.output_dir + "/merged/config.json"));
  EXPECT_EQ(merged_cfg.at("rope_scaling").at("factor"), 4.0);

  // 3. Perplexity at 64 tokens: the pretrained model with PI 4 (as LongLoRA evaluates it before fine-tuning) against
  //    the extended one.
  const double before = perplexity(pretrained, dir_ + "/eval.bin", 64, 4.0);
  const double after = perplexity(ext.output_dir + "/merged", dir_ + "/eval.bin", 64, 0);
  std::printf("NeoX LongLoRA: perplexity at 64 tokens with PI 4: %.3f before, %.3f after\n", before, after);
  EXPECT_LT(after, 0.9 * before);  // seen: 6.29 before, 4.64 after (3.48 at 16 tokens after pretraining)
}

}  // namespace
}  // namespace ll

namespace ll {
namespace {

// build/info FOLDER: the architecture of a folder; a missing folder or extra argument is a clear error.
TEST(InfoBinary, DescribesANeoxFolderAndRefusesBadArguments) {
  const std::string bin = test::sibling_binary("info");
  if (bin.empty()) GTEST_SKIP() << "no info binary next to the test binary (build with `make all`)";
  const std::string folder = test::fixtures_dir() + "/neox_tiny";
  std::string out;
  ASSERT_EQ(test::run_command(bin + " " + folder, &out), 0) << out;
  for (const char* line : {"model_type: gpt_neox (GPTNeoXForCausalLM)", "parameters: 16928 ", "rotary: 2 of 8 head dims",
                           "residual: parallel", "torch_dtype: float32"})
    EXPECT_NE(out.find(line), std::string::npos) << line << " not in:\n" << out;
  EXPECT_EQ(test::run_command(bin + " " + folder + "/missing", &out), 1);
  EXPECT_NE(out.find("info: error: no config.json at"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(bin + " " + folder + " extra", &out), 2);
  EXPECT_NE(out.find("at most one model folder"), std::string::npos) << out;
  ASSERT_EQ(test::run_command(bin, &out), 0) << out;
  EXPECT_NE(out.find("cpu"), std::string::npos) << "without a folder it lists the backends:\n" << out;
}

}  // namespace
}  // namespace ll
