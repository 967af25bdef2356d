// LongLoRA's README commands, run as a user pastes them: only the script name replaced by our binary (docs/
// longlora-commands.md has the table), paths pointed at a tiny Llama folder (2 layers, the small sentencepiece
// tokenizer, 64 positions: 128-token contexts are PI factor 2), the long runs shortened by --max_steps, the
// lengths of the evaluations scaled to the tiny model. Each must succeed and do what the original does: the ZeRO
// stage and the scheduler of its DeepSpeed config, full fine-tuning vs LoRA, SFT for a JSON --data_path, the files
// LongLoRA's next command reads.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "eval_test_util.h"

namespace ll {
namespace {

namespace fs = std::filesystem;

struct CommandResult {
  int status = -1;
  std::string output;
};

class LongLoraCommands : public ::testing::Test {
 protected:
  // Binaries, the tiny model folder, the token files, a LongAlpaca-style JSON and LongLoRA's ds_configs/ (copied
  // into the working folder, where the commands name them relatively).
  void SetUp() override {
    for (const char* name : {"train", "eval", "merge"})
      if (test::sibling_binary(name).empty()) GTEST_SKIP() << "build/" << name << " is not next to the test binary";
    const test::SmallTokenizer& tok = test::small_tokenizer();
    if (!tok.skip_reason.empty()) GTEST_SKIP() << tok.skip_reason;
    ASSERT_TRUE(tok.error.empty()) << tok.error;
    model_ = dir_.file("Llama-2-7b-hf");
    fs::create_directories(model_);
    test::write_random_hf_folder(model_, test::small_config(400, 64), 7, 0.1);
    fs::copy_file(tok.path, model_ + "/tokenizer.model");
    std::vector<int32_t> ids(3000);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(3 + (i * 7919 + i / 5) % 397);
    test::write_tokens(dir_.file("train.bin"), ids);
    fs::create_directories(dir_.file("pg19"));
    test::write_tokens(dir_.file("pg19/test.bin"), std::vector<int32_t>(ids.begin(), ids.begin() + 600));
    nlohmann::json sft = nlohmann::json::array();
    for (int i = 0; i < 4; ++i)
      sft.push_back({{"instruction", "Read the story and say who wins. The fox runs " + std::to_string(i) + " times."},
                     {"output", "The fox wins the race " + std::to_string(i) + "."}});
    write_file_atomic(dir_.file("LongAlpaca-16k-length.json"), sft.dump());
    fs::create_directories(dir_.file("ds_configs"));
    for (const char* f : {"stage2.json", "stage3.json"})
      fs::copy_file(test::fixtures_dir() + "/ds_configs/" + f, dir_.file(std::string("ds_configs/") + f));
  }

  // `command` with its first word (train, eval, merge) made the binary's path, run in the working folder.
  CommandResult run(const std::string& command) {
    const size_t space = command.find(' ');
    const std::string bin = test::sibling_binary(command.substr(0, space));
    CommandResult r;
    r.status = test::run_command("cd '" + dir_.path() + "' && OMP_NUM_THREADS=2 " + bin + command.substr(space), &r.output);
    return r;
  }
  nlohmann::json json_file(const std::string& path) { return nlohmann::json::parse(read_text_file(dir_.file(path))); }
  std::vector<nlohmann::json> metrics(const std::string& out) {
    std::vector<nlohmann::json> lines;
    std::istringstream in(read_text_file(dir_.file(out + "/metrics.jsonl")));
    for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
    return lines;
  }
  bool exists(const std::string& path) { return fs::exists(dir_.file(path)); }

  test::TempDir dir_;
  std::string model_;
};

// README "Fine-tuning": torchrun --nproc_per_node=8 fine-tune.py → build/train (mpirun -np 8 for 8 ranks); fine-tune.py
// reads RedPajama itself, ours a token file (--data_path added); --max_steps 1000 → 2.
const char kFineTune[] =
    "train  \\\n"
    "        --model_name_or_path Llama-2-7b-hf \\\n"
    "        --bf16 True \\\n"
    "        --output_dir path_to_saving_checkpoints       \\\n"
    "        --cache_dir path_to_cache \\\n"
    "        --model_max_length 128 \\\n"
    "        --use_flash_attn True \\\n"
    "        --low_rank_training False \\\n"
    "        --num_train_epochs 1  \\\n"
    "        --per_device_train_batch_size 1     \\\n"
    "        --per_device_eval_batch_size 2     \\\n"
    "        --gradient_accumulation_steps 8     \\\n"
    "        --evaluation_strategy \"no\"     \\\n"
    "        --save_strategy \"steps\"     \\\n"
    "        --save_steps 1000     \\\n"
    "        --save_total_limit 2     \\\n"
    "        --learning_rate 2e-5     \\\n"
    "        --weight_decay 0.0     \\\n"
    "        --warmup_steps 20     \\\n"
    "        --lr_scheduler_type \"constant_with_warmup\"     \\\n"
    "        --logging_steps 1     \\\n"
    "        --deepspeed \"ds_configs/stage2.json\" \\\n"
    "        --tf32 True \\\n"
    "        --max_steps 2 --data_path train.bin";

// README "Supervised Fine-tuning", verbatim but for the paths and model_max_length 16384 → 128 (5 epochs of 4
// examples are 3 steps of 8).
const char kSupervisedFineTune[] =
    "train  \\\n"
    "        --model_name_or_path Llama-2-7b-hf \\\n"
    "        --bf16 True \\\n"
    "        --output_dir path_to_saving_sft \\\n"
    "        --model_max_length 128 \\\n"
    "        --use_flash_attn True \\\n"
    "        --data_path LongAlpaca-16k-length.json \\\n"
    "        --low_rank_training True \\\n"
    "        --num_train_epochs 5  \\\n"
    "        --per_device_train_batch_size 1     \\\n"
    "        --per_device_eval_batch_size 2     \\\n"
    "        --gradient_accumulation_steps 8     \\\n"
    "        --evaluation_strategy \"no\"     \\\n"
    "        --save_strategy \"steps\"     \\\n"
    "        --save_steps 98     \\\n"
    "        --save_total_limit 2     \\\n"
    "        --learning_rate 2e-5     \\\n"
    "        --weight_decay 0.0     \\\n"
    "        --warmup_steps 20     \\\n"
    "        --lr_scheduler_type \"constant_with_warmup\"     \\\n"
    "        --logging_steps 1     \\\n"
    "        --deepspeed \"ds_configs/stage2.json\" \\\n"
    "        --tf32 True";

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

TEST_F(LongLoraCommands, FineTuneWithStage2IsFullFineTuningUnderZero2) {
  const CommandResult r = run(kFineTune);
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* line : {"--cache_dir path_to_cache: ignored; ", "--use_flash_attn True: ignored; ",
                           "--per_device_eval_batch_size 2: ignored; ", "--tf32 True: ignored; ",
                           "--evaluation_strategy no: ignored; ",
                           "--bf16 true: the CPU backend trains in fp32",
                           "--deepspeed ds_configs/stage2.json: ZeRO stage 2", "ZeRO stage 2"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
  const nlohmann::json args = json_file("path_to_saving_checkpoints/training_args.json");
  EXPECT_EQ(args["zero_stage"], 2);
  EXPECT_EQ(args["low_rank_training"], false);
  EXPECT_EQ(args["lr_scheduler_type"], "constant_with_warmup");
  // Full fine-tuning: a Hugging Face folder (what eval --base_model takes); the final checkpoint for resuming.
  EXPECT_TRUE(exists("path_to_saving_checkpoints/model/config.json"));
  EXPECT_FALSE(exists("path_to_saving_checkpoints/adapter_config.json"));
  EXPECT_TRUE(exists("path_to_saving_checkpoints/checkpoint-2"));
  const std::vector<nlohmann::json> m = metrics("path_to_saving_checkpoints");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0]["lr"].get<double>(), 0.0);  // constant_with_warmup over 20 steps
  EXPECT_DOUBLE_EQ(m[1]["lr"].get<double>(), 2e-5 / 20);

  // eval.py / eval_distributed.py on the fully fine-tuned model: its output folder is the --base_model.
  for (const char* command : {"eval perplexity", "eval perplexity --drop_last false"}) {
    const CommandResult e = run(std::string(command) +
                      " --seq_len 128 --context_size 128 --batch_size 1 --base_model path_to_saving_checkpoints "
                      "--data_path pg19/test.bin");
    ASSERT_EQ(e.status, 0) << command << "\n" << e.output;
    EXPECT_NE(e.output.find("a full fine-tuning run's output folder; its model is path_to_saving_checkpoints/model"),
              std::string::npos) << e.output;
    EXPECT_NE(e.output.find("perplexity"), std::string::npos) << e.output;
  }
}

// The README's alternative: ds_configs/stage3.json — ZeRO-3 with the optimizer state and parameters "offloaded"
// to host memory (where the CPU backend keeps them) and DeepSpeed's WarmupDecayLR replacing the schedule.
TEST_F(LongLoraCommands, FineTuneWithStage3IsZero3WithDeepSpeedsScheduler) {
  const CommandResult r = run(replace_all(kFineTune, "stage2.json", "stage3.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("--deepspeed ds_configs/stage3.json: ZeRO stage 3, optimizer state in host memory"),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find("WarmupDecayLR"), std::string::npos) << r.output;
  const nlohmann::json args = json_file("path_to_saving_checkpoints/training_args.json");
  EXPECT_EQ(args["zero_stage"], 3);
  EXPECT_EQ(args["lr_scheduler_type"], "linear");
  EXPECT_EQ(args["lr_warmup_type"], "deepspeed_log");
  const std::vector<nlohmann::json> m = metrics("path_to_saving_checkpoints");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0]["lr"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(m[1]["lr"].get<double>(), 2e-5 * std::log(2.0) / std::log(20.0));
  EXPECT_TRUE(exists("path_to_saving_checkpoints/model/config.json"));
}

// SFT, then the README's next commands on its output: trainable weights, merge, eval.py, eval_distributed.py,
// passkey retrieval on the merged model, inference.py.
TEST_F(LongLoraCommands, SupervisedFineTuneThenMergeEvaluateAndChat) {
  const CommandResult r = run(kSupervisedFineTune);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("--data_path LongAlpaca-16k-length.json: a JSON data path means supervised fine-tuning"),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find("SFT prompts: chat template llama2"), std::string::npos) << r.output;
  const nlohmann::json args = json_file("path_to_saving_sft/training_args.json");
  EXPECT_EQ(args["sft_data_path"], "LongAlpaca-16k-length.json");
  EXPECT_EQ(args["data_path"], "");
  EXPECT_EQ(args["zero_stage"], 2);
  EXPECT_EQ(metrics("path_to_saving_sft").size(), 3u);  // 5 epochs × 4 examples / 8 per step, rounded up
  // LoRA+: the adapter, and get_trainable_weights.py's output already there (embed and norms, PyTorch's format).
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "trainable_params.bin"})
    EXPECT_TRUE(exists(std::string("path_to_saving_sft/") + f)) << f;
  const std::string trainable = test::read_bytes(dir_.file("path_to_saving_sft/trainable_params.bin"));
  EXPECT_NE(trainable.find("model.embed_tokens.weight"), std::string::npos);
  EXPECT_NE(trainable.find("model.norm.weight"), std::string::npos);

  const CommandResult merge = run("merge \\\n        --base_model Llama-2-7b-hf \\\n        --peft_model path_to_saving_sft \\\n"
                        "        --context_size 128 \\\n        --save_path path_to_saving_merged_model");
  ASSERT_EQ(merge.status, 0) << merge.output;
  const nlohmann::json merged = json_file("path_to_saving_merged_model/config.json");
  EXPECT_EQ(merged["rope_scaling"]["factor"].get<double>(), 2.0) << merged.dump();
  EXPECT_EQ(merged["vocab_size"], 401);  // LongLoRA's [PAD] row

  for (const char* command : {"eval perplexity", "eval perplexity --drop_last false"}) {
    const CommandResult e = run(std::string(command) +
                      " --seq_len 128 --context_size 128 --batch_size 1 --base_model Llama-2-7b-hf --peft_model "
                      "path_to_saving_sft --data_path pg19/test.bin");
    ASSERT_EQ(e.status, 0) << command << "\n" << e.output;
    EXPECT_NE(e.output.find("perplexity"), std::string::npos) << e.output;
  }

  const CommandResult pk = run("eval passkey \\\n        --context_size 128 \\\n        --base_model path_to_saving_merged_model "
                     "\\\n        --max_tokens 2000 \\\n        --interval 1000 --num_tests 2");
  ASSERT_EQ(pk.status, 0) << pk.output;
  EXPECT_NE(pk.output.find("accuracy"), std::string::npos) << pk.output;

  fs::create_directories(dir_.file("materials"));
  write_file_atomic(dir_.file("materials/Harry Potter and the Philosophers Stone_section2.txt"),
                    "Harry went to school. The fox runs fast.");
  const CommandResult gen = run("eval generate  \\\n        --base_model path_to_saving_merged_model \\\n"
                      "        --question \"Why doesn't Professor Snape seem to like Harry?\" \\\n"
                      "        --context_size 128 \\\n        --max_gen_len 8 \\\n        --flash_attn True \\\n"
                      "        --material \"materials/Harry Potter and the Philosophers Stone_section2.txt\"");
  ASSERT_EQ(gen.status, 0) << gen.output;
  EXPECT_NE(gen.output.find("--flash_attn True: ignored; "), std::string::npos) << gen.output;
}

// supervised-fine-tune-qlora.py: the same command; the script's fixed BitsAndBytesConfig (nf4, double quantization,
// bf16 compute) written as our flags in place of the script name.
TEST_F(LongLoraCommands, SupervisedFineTuneQloraIsFourBitNf4) {
  const CommandResult r = run(replace_all(kSupervisedFineTune, "train  \\\n",
                                          "train --load_in_4bit true --bnb_4bit_quant_type nf4 "
                                          "--bnb_4bit_use_double_quant true --bnb_4bit_compute_dtype bfloat16 \\\n"));
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json args = json_file("path_to_saving_sft/training_args.json");
  EXPECT_EQ(args["load_in_4bit"], true);
  EXPECT_EQ(args["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(args["sft_data_path"], "LongAlpaca-16k-length.json");
  EXPECT_TRUE(exists("path_to_saving_sft/adapter_model.safetensors"));
  EXPECT_TRUE(exists("path_to_saving_sft/trainable_params.bin"));
}

// What cannot be honoured stops the run at start-up, naming the flag or the config file and key.
TEST_F(LongLoraCommands, ValuesThatCannotBeHonouredAreErrorsSayingSo) {
  write_file_atomic(dir_.file("ds_configs/broken.json"), "{\"zero_optimization\": {\"stage\": 2,}");
  write_file_atomic(dir_.file("ds_configs/stage1.json"), "{\"zero_optimization\": {\"stage\": 1}}");
  write_file_atomic(dir_.file("ds_configs/adam8.json"), "{\"optimizer\": {\"type\": \"OneBitAdam\"}}");
  write_file_atomic(dir_.file("ds_configs/lr.json"), "{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-4}}}");
  write_file_atomic(dir_.file("ds_configs/batch8.json"), "{\"train_batch_size\": 8}");
  const std::string base = "train --model_name_or_path Llama-2-7b-hf --data_path train.bin --output_dir out ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--deepspeed ds_configs/missing.json", "--deepspeed: "},
      {"--deepspeed ds_configs/broken.json", "--deepspeed `ds_configs/broken.json`: invalid JSON"},
      {"--deepspeed ds_configs/stage1.json", "--deepspeed `ds_configs/stage1.json`: zero_optimization.stage: ZeRO "
                                             "stage 1 is not implemented"},
      {"--deepspeed ds_configs/adam8.json", "optimizer.type: `OneBitAdam`: only AdamW is implemented"},
      {"--deepspeed ds_configs/lr.json", "optimizer.params.lr: 0.0001 disagrees with --learning_rate 2e-05"},
      {"--deepspeed ds_configs/stage3.json --device cuda",
       "zero_optimization.offload_optimizer.device: cpu offload of the optimizer state from the GPU is not "
       "implemented"},
      {"--deepspeed ds_configs/stage2.json --zero_stage 3", "zero_optimization.stage: 2 disagrees with --zero_stage 3"},
      {"--deepspeed ds_configs/batch8.json --gradient_accumulation_steps 4",
       "--deepspeed `ds_configs/batch8.json`: train_batch_size: 8 is not micro batch 1 × gradient accumulation 4 × "
       "world size 1 = 4"},
      {"--evaluation_strategy steps", "--evaluation_strategy steps: build/train has no evaluation set"},
      {"--bf16 False --device cuda", "--bf16 false: the CUDA backend trains in bf16"},
      {"--optim adafactor", "--optim adafactor: only AdamW is implemented"},
      {"--model_type mistral", "--model_type: expected llama or gpt-neox"},
      {"--save_strategy best", "--save_strategy: expected steps, epoch or no, got `best`"},
  };
  for (const auto& [flags, message] : cases) {
    const CommandResult r = run(base + flags);
    EXPECT_EQ(r.status, 1) << flags << "\n" << r.output;
    EXPECT_NE(r.output.find("train: error: "), std::string::npos) << flags << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << flags << "\n" << r.output;
  }
  // missing.json is named in the message
  EXPECT_NE(run(base + "--deepspeed ds_configs/missing.json").output.find("missing.json"), std::string::npos);
  // A LoRA run's folder where a model is expected: said to be an adapter.
  fs::create_directories(dir_.file("lora_out"));
  write_file_atomic(dir_.file("lora_out/adapter_config.json"), "{}");
  const CommandResult e = run("eval perplexity --base_model lora_out --data_path pg19/test.bin --seq_len 128");
  EXPECT_EQ(e.status, 1);
  EXPECT_NE(e.output.find("--base_model `lora_out` is a LoRA adapter folder"), std::string::npos) << e.output;
}

// save_strategy: no writes no checkpoint (the export still); epoch saves at every epoch's end.
TEST_F(LongLoraCommands, SaveStrategyNoAndEpoch) {
  const std::string base = "train --model_name_or_path Llama-2-7b-hf --data_path train.bin --model_max_length 128 "
                           "--per_device_train_batch_size 1 --gradient_accumulation_steps 4 --save_steps 1 ";
  const CommandResult no = run(base + "--output_dir out_no --save_strategy no --max_steps 2");
  ASSERT_EQ(no.status, 0) << no.output;
  EXPECT_FALSE(exists("out_no/checkpoint-1"));
  EXPECT_FALSE(exists("out_no/checkpoint-2"));
  EXPECT_TRUE(exists("out_no/adapter_model.safetensors"));
  // 3000 tokens are 23 rows of 128 (+1 for the next-token target): 5 steps of 4 rows per epoch.
  const CommandResult epoch = run(base + "--output_dir out_epoch --save_strategy epoch --num_train_epochs 2 --save_total_limit 0");
  ASSERT_EQ(epoch.status, 0) << epoch.output;
  const size_t at = epoch.output.find(" rows per epoch");
  ASSERT_NE(at, std::string::npos) << epoch.output;
  const int64_t rows = std::stoll(epoch.output.substr(epoch.output.rfind('(', at) + 1));
  const int64_t per_epoch = std::max<int64_t>(1, rows / 4);
  for (int64_t step = 1; step <= 2 * per_epoch; ++step)
    EXPECT_EQ(exists("out_epoch/checkpoint-" + std::to_string(step)), step % per_epoch == 0) << step;
}

}  // namespace

// README "Streaming Inference", verbatim — its four-dash `----enable_streaming` included (argparse itself would refuse
// it; we read it as the flag with a note) — but for the script name and the model path the script defaults to
// (Yukang/LongAlpaca-7B), and --max_gen_len 8 added (the script generates up to 1000 tokens a turn);
// outputs_stream.json holds LongAlpaca-style records answered in turn in one conversation.
TEST_F(LongLoraCommands, StreamingInferenceAnswersEachInstructionInOneConversation) {
  nlohmann::json records = nlohmann::json::array();
  for (const char* q : {"Who wins the race?", "Why does the fox run?", "Say it again."})
    records.push_back({{"instruction", q}, {"output", "unused"}});
  write_file_atomic(dir_.file("outputs_stream.json"), records.dump());
  const CommandResult r = run("eval streaming --model_name_or_path Llama-2-7b-hf \\\n"
                              "\t----enable_streaming \\\n"
                              "\t--test_filepath outputs_stream.json \\\n"
                              "\t--use_flash_attn True \\\n"
                              "\t--recent_size 32768 --max_gen_len 8");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("----enable_streaming: read as --enable_streaming"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--use_flash_attn True: ignored; "), std::string::npos) << r.output;
  size_t turns = 0;
  for (size_t at = r.output.find("ASSISTANT: "); at != std::string::npos; at = r.output.find("ASSISTANT: ", at + 1))
    ++turns;
  EXPECT_EQ(turns, 3u) << r.output;
  EXPECT_NE(r.output.find("USER: Say it again."), std::string::npos) << r.output;
}

}  // namespace ll
