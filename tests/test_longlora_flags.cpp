// build/train's reading of LongLoRA's and Hugging Face's flags (train/longlora_flags.h) and of DeepSpeed configs
// (train/deepspeed_config.h), in process: what each maps onto TrainOptions, and the notes it prints.
#include <gtest/gtest.h>

#include "test_data_util.h"
#include "train/deepspeed_config.h"
#include "train/longlora_flags.h"
#include "train/train_flags.h"
#include "util/error.h"
#include "util/files.h"
#include "util/flags.h"

namespace ll {
namespace {

struct Parsed {
  TrainOptions o;
  LongLoraScriptFlags script;
  Flags flags{"train", ""};
  std::vector<std::string> notes;
  explicit Parsed(std::vector<std::string> args) {
    add_train_flags(flags, o);
    add_longlora_script_flags(flags, script);
    std::vector<char*> argv{const_cast<char*>("train")};
    for (auto& a : args) argv.push_back(a.data());
    flags.parse(int(argv.size()), argv.data());
    notes = apply_longlora_script_flags(script, flags, o);
  }
  bool noted(const std::string& text) const {
    for (const std::string& n : notes)
      if (n.find(text) != std::string::npos) return true;
    return false;
  }
};

std::string error_of(std::vector<std::string> args) {
  try {
    Parsed p(std::move(args));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LongLoraFlags, ScriptFlagsMapOntoTrainOptions) {
  const Parsed p({"--data_path", "LongAlpaca-12k.JSON", "--use_full_attn", "True", "--model_type", "gpt-neox",
                  "--optim", "adamw_torch", "--bf16"});
  EXPECT_EQ(p.o.sft_data_path, "LongAlpaca-12k.JSON");  // a JSON data path means SFT
  EXPECT_EQ(p.o.data_path, "");
  EXPECT_FALSE(p.o.use_s2attn);
  EXPECT_EQ(p.o.s2_variant, "roll");  // LongLoRA's NeoX S2
  EXPECT_TRUE(p.noted("--bf16 true: the CPU backend trains in fp32"));
  const Parsed q({"--data_path", "train.bin", "--model_type", "gpt-neox", "--s2_variant", "leakfree"});
  EXPECT_EQ(q.o.data_path, "train.bin");
  EXPECT_EQ(q.o.s2_variant, "leakfree");  // given explicitly: kept
  EXPECT_TRUE(q.o.use_s2attn);
  EXPECT_NE(error_of({"--use_full_attn", "--use_s2attn", "true"}).find("contradicts"), std::string::npos);
}

TEST(LongLoraFlags, DeepSpeedConfigSettings) {
  test::TempDir dir;
  auto config = [&](const std::string& name, const std::string& json) {
    write_file_atomic(dir.file(name), json);
    return dir.file(name);
  };
  // WarmupLR with a linear warmup: constant after it; bf16 from the config; stage 2's bucket size taken.
  const std::string warmup = config("warmup.json", R"({"bf16": {"enabled": true}, "zero_optimization": {"stage": 2,
      "reduce_bucket_size": 5e8}, "scheduler": {"type": "WarmupLR", "params": {"warmup_type": "linear",
      "warmup_num_steps": "auto"}}, "gradient_accumulation_steps": 4, "train_micro_batch_size_per_gpu": "auto"})");
  const Parsed p({"--deepspeed", warmup, "--gradient_accumulation_steps", "4"});
  EXPECT_EQ(p.o.zero_stage, 2);
  EXPECT_EQ(p.o.reduce_bucket_size, 500000000);
  EXPECT_EQ(p.o.lr_scheduler_type, "constant_with_warmup");
  EXPECT_EQ(p.o.lr_warmup_type, "deepspeed_linear");
  EXPECT_TRUE(p.noted("--bf16 true: the CPU backend trains in fp32"));  // bf16.enabled true
  EXPECT_TRUE(p.noted("ZeRO stage 2, schedule WarmupLR (linear warmup"));
  // A number that disagrees with its flag, as the Trainer refuses it.
  EXPECT_NE(error_of({"--deepspeed", warmup}).find("gradient_accumulation_steps: 4 disagrees with "
                                                    "--gradient_accumulation_steps 1"),
            std::string::npos);
  EXPECT_NE(error_of({"--deepspeed", warmup, "--gradient_accumulation_steps", "4", "--bf16", "false"})
                .find("--bf16 false disagrees with bf16.enabled true"),
            std::string::npos);
  const std::string minlr = config("minlr.json", R"({"scheduler": {"type": "WarmupDecayLR", "params":
      {"warmup_min_lr": 1e-6}}})");
  EXPECT_NE(error_of({"--deepspeed", minlr}).find("scheduler.params.warmup_min_lr: only 0"), std::string::npos);
  const std::string cosine = config("cosine.json", R"({"scheduler": {"type": "WarmupCosineLR"}})");
  EXPECT_NE(error_of({"--deepspeed", cosine}).find("scheduler.type: `WarmupCosineLR`"), std::string::npos);
  const std::string fp16 = config("fp16.json", R"({"fp16": {"enabled": true}})");
  EXPECT_NE(error_of({"--deepspeed", fp16}).find("fp16.enabled: fp16 training is not implemented"), std::string::npos);
  const std::string nvme = config("nvme.json", R"({"zero_optimization": {"stage": 3, "offload_param":
      {"device": "nvme"}}})");
  EXPECT_NE(error_of({"--deepspeed", nvme}).find("`nvme` offload is not implemented"), std::string::npos);
  const std::string list = config("list.json", "[1, 2]");
  EXPECT_NE(error_of({"--deepspeed", list}).find("expected a JSON object"), std::string::npos);
  // The config's stage agrees with an explicit --zero_stage; no zero_optimization keeps the flag's.
  const std::string empty = config("empty.json", "{}");
  EXPECT_EQ(Parsed({"--deepspeed", empty, "--zero_stage", "3"}).o.zero_stage, 3);
}

// DeepSpeed's train_batch_size must be micro batch × accumulation × world size (or "auto"); the world size is known
// only at set-up, where check_deepspeed_train_batch_size runs.
TEST(LongLoraFlags, DeepSpeedTrainBatchSizeIsMicroTimesAccumulationTimesWorld) {
  test::TempDir dir;
  write_file_atomic(dir.file("b8.json"), R"({"train_batch_size": 8, "train_micro_batch_size_per_gpu": "auto"})");
  const Parsed p({"--deepspeed", dir.file("b8.json"), "--gradient_accumulation_steps", "4"});
  EXPECT_NO_THROW(check_deepspeed_train_batch_size(p.o, 2));  // 1 × 4 × 2
  std::string message;
  try {
    check_deepspeed_train_batch_size(p.o, 1);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("--deepspeed `" + dir.file("b8.json") + "`: train_batch_size: 8 is not micro batch 1 × "
                         "gradient accumulation 4 × world size 1 = 4"),
            std::string::npos)
      << message;
  write_file_atomic(dir.file("auto.json"), R"({"train_batch_size": "auto"})");
  EXPECT_NO_THROW(check_deepspeed_train_batch_size(Parsed({"--deepspeed", dir.file("auto.json")}).o, 3));
  EXPECT_NO_THROW(check_deepspeed_train_batch_size(Parsed({}).o, 5));  // no --deepspeed: nothing to check
  write_file_atomic(dir.file("half.json"), R"({"train_batch_size": 2.5})");
  EXPECT_NE(error_of({"--deepspeed", dir.file("half.json")}).find("train_batch_size: expected a positive integer or "
                                                                   "\"auto\", got 2.5"),
            std::string::npos);
}

}  // namespace
}  // namespace ll
