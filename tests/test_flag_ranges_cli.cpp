// Every binary refuses a numeric flag outside its range (or NaN/inf) at start-up, exit 1, naming the flag, the
// value and the range, before reading any input: `train --adam_beta1 1.0` used to export an all-NaN adapter.
#include <gtest/gtest.h>

#include "eval_test_util.h"

namespace ll {
namespace {

struct Case {
  std::string binary, args, message;
};

TEST(FlagRangesCli, EveryBinaryRefusesOutOfRangeNumbersNamingFlagValueAndRange) {
  const std::vector<Case> cases = {
      {"train", "--model_config demo --data_path none.bin --adam_beta1 1.0",
       "train: error: --adam_beta1 must be a finite number in [0, 1), got 1\n"},
      {"train", "--model_config demo --data_path none.bin --learning_rate inf",
       "train: error: --learning_rate must be a finite number >= 0, got inf\n"},
      {"train", "--model_config demo --data_path none.bin --comm_timeout_sec 0",
       "train: error: --comm_timeout_sec must be a finite number > 0, got 0\n"},
      {"train", "--model_config demo --data_path none.bin --save_total_limit -1",
       "train: error: --save_total_limit must be an integer >= 0, got -1\n"},
      {"tokenize", "--input none --output none.bin --tokenizer none.model --threads -1",
       "tokenize: error: --threads must be an integer >= 0, got -1\n"},
      {"tokenize", "--input none --output none.bin --tokenizer none.model --batch_mb 0",
       "tokenize: error: --batch_mb must be an integer in [1, 1048576], got 0\n"},
      {"merge", "--base_model a --peft_model b --save_path c --rope_scaling_factor nan",
       "merge: error: --rope_scaling_factor must be a finite number >= 0, got nan\n"},
      {"merge", "--base_model a --peft_model b --save_path c --max_shard_size_mb -1",
       "merge: error: --max_shard_size_mb must be an integer in [0, 1000000000], got -1\n"},
      {"eval", "perplexity --base_model a --data_path b --seq_len 1",
       "eval perplexity: error: --seq_len must be an integer >= 2, got 1\n"},
      {"eval", "perplexity --base_model a --data_path b --rope_scaling_factor inf",
       "eval perplexity: error: --rope_scaling_factor must be a finite number >= 0, got inf\n"},
      {"eval", "passkey --base_model a --num_tests 0", "eval passkey: error: --num_tests must be an integer >= 1, got 0\n"},
      {"eval", "passkey --base_model a --comm_timeout_sec 0",
       "eval passkey: error: --comm_timeout_sec must be a finite number > 0, got 0\n"},
      {"eval", "generate --base_model a --prompt hi --temperature inf",
       "eval generate: error: --temperature must be a finite number >= 0, got inf\n"},
      {"eval", "generate --base_model a --prompt hi --top_p 0",
       "eval generate: error: --top_p must be a finite number in (0, 1], got 0\n"},
      {"bench_cpu_train", "--steps 0", "bench_cpu_train: error: --steps must be an integer >= 1, got 0\n"},
      {"bench_cuda", "e2e --iters 0", "bench_cuda e2e: --iters must be an integer >= 1, got 0\n"},
  };
  for (const Case& c : cases) {
    const std::string bin = test::sibling_binary(c.binary);
    if (bin.empty()) GTEST_SKIP() << "no " << c.binary << " binary next to the test binary (build with `make all`)";
    std::string output;
    const int status = test::run_command("cd '" + ::testing::TempDir() + "' && " + bin + " " + c.args, &output);
    EXPECT_EQ(status, 1) << c.binary << " " << c.args << ":\n" << output;
    EXPECT_EQ(output, c.message) << c.binary << " " << c.args;
  }
}

TEST(FlagRangesCli, BenchCpuTrainRefusesAnUnknownCaseNamingTheChoices) {
  const std::string bin = test::sibling_binary("bench_cpu_train");
  if (bin.empty()) GTEST_SKIP() << "no bench_cpu_train binary next to the test binary (build with `make all`)";
  std::string output;
  EXPECT_EQ(test::run_command(bin + " --case peft2", &output), 1) << output;
  EXPECT_EQ(output, "bench_cpu_train: error: --case: expected `table` or `peft`, got `peft2`\n");
}

}  // namespace
}  // namespace ll
