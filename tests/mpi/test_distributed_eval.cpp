// Multi-rank evaluation (LongLoRA's eval_distributed.py): perplexity's batches of windows and passkey's trials split
// over the ranks give exactly the one-rank JSON (timings and world_size aside) — with window counts divisible and
// not divisible by the number of ranks, and fewer than the ranks — and rank 0 alone prints and writes the file.
#include <gtest/gtest.h>

#include <sstream>

#include "../eval_test_util.h"
#include "eval/commands.h"
#include "mpi_test_env.h"

namespace ll {
namespace {

using test::g_comm;

// The results without what may differ between runs: timings and the number of ranks.
nlohmann::json without_timings(nlohmann::json j) {
  for (const char* key : {"seconds", "tokens_per_sec", "world_size"}) j.erase(key);
  if (j.contains("points"))
    for (auto& p : j["points"]) p.erase("seconds");
  return j;
}

// The first `n` lines of a report.
std::string first_lines(const std::string& text, int n) {
  size_t end = 0;
  for (int i = 0; i < n && end != std::string::npos; ++i) end = text.find('\n', end + (i > 0));
  return text.substr(0, end);
}

// passkey's table rows (one per length) without their seconds column.
std::vector<std::vector<std::string>> table_rows(const std::string& report) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(report);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> row;
    for (std::string w; words >> w;) row.push_back(w);
    if (row.size() < 5 || row[0].find_first_not_of("0123456789") != std::string::npos) continue;
    row.erase(row.begin() + 3);  // n_garbage, prompt_tokens, accuracy, [seconds], marks
    rows.push_back(row);
  }
  return rows;
}

// A folder every rank of this run agrees on, made by rank 0 (TempDir is the same path on every rank of one machine).
std::string shared_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/ll_mpi_eval_" + std::to_string(g_comm->size()) + "_" + name;
  if (g_comm->rank() == 0) {
    std::filesystem::remove_all(dir);
    make_directories(dir);
  }
  g_comm->barrier();
  return dir;
}

struct PerplexityCase {
  const char* name;
  int64_t seq_len, batch_size, sliding_window, max_windows;
  bool drop_last;
  int64_t windows;  // what the case evaluates (checked, so that the split cases are what they claim)
};

void PrintTo(const PerplexityCase& c, std::ostream* os) { *os << c.name; }

class DistributedPerplexity : public ::testing::TestWithParam<PerplexityCase> {};

TEST_P(DistributedPerplexity, EqualsOneRankExactly) {
  const PerplexityCase& pc = GetParam();
  const std::string dir = shared_dir(std::string("ppl_") + pc.name);
  if (g_comm->rank() == 0) test::copy_hf_tiny(dir, false);
  g_comm->barrier();
  PerplexityCommand c;
  c.common.base_model = dir;
  c.common.progress = false;
  c.data_path = test::fixtures_dir() + "/ppl_tokens.bin";
  c.seq_len = pc.seq_len, c.batch_size = pc.batch_size, c.sliding_window = pc.sliding_window;
  c.max_windows = pc.max_windows, c.drop_last = pc.drop_last;
  std::ostringstream one_out, one_log;
  const nlohmann::json one = run_perplexity_command(c, one_out, one_log);  // this rank alone

  // Every rank names its own file: only rank 0's may appear.
  c.common.json = dir + "/ppl_rank" + std::to_string(g_comm->rank()) + ".json";
  std::ostringstream out, log;
  const nlohmann::json many = run_perplexity_command(c, out, log, nullptr, g_comm);
  EXPECT_EQ(one["num_windows"], pc.windows) << pc.name;
  EXPECT_EQ(one["world_size"], 1);
  EXPECT_EQ(many["world_size"], g_comm->size());
  EXPECT_EQ(without_timings(many), without_timings(one)) << pc.name << " on " << g_comm->size() << " ranks";
  const bool lead = g_comm->rank() == 0;
  EXPECT_EQ(path_exists(c.common.json), lead) << c.common.json;
  EXPECT_EQ(out.str().empty(), !lead) << out.str();
  EXPECT_EQ(log.str().empty(), !lead) << log.str();
  if (lead) {
    EXPECT_EQ(without_timings(nlohmann::json::parse(read_text_file(c.common.json))), without_timings(many));
    EXPECT_EQ(first_lines(out.str(), 2), first_lines(one_out.str(), 2));  // both perplexities, as printed
  }
  g_comm->barrier();  // no rank removes the folder while another reads it
}

INSTANTIATE_TEST_SUITE_P(
    Windows, DistributedPerplexity,
    ::testing::Values(PerplexityCase{"seven_windows", 64, 1, 200, 0, false, 7},     // divisible by none of 2, 4
                      PerplexityCase{"four_windows", 64, 1, 200, 4, false, 4},      // divisible by 1, 2, 4
                      PerplexityCase{"one_window", 64, 1, 200, 1, false, 1},        // fewer than the ranks
                      PerplexityCase{"batches_of_three", 48, 3, 256, 0, true, 5},   // 2 batches, the last short
                      PerplexityCase{"batches_of_two", 100, 2, 128, 0, true, 10}),  // 5 batches
    [](const ::testing::TestParamInfo<PerplexityCase>& i) { return std::string(i.param.name); });

struct PasskeyCase {
  const char* name;
  int64_t max_tokens, interval, num_tests;
  bool reuse_prefix;
};

void PrintTo(const PasskeyCase& c, std::ostream* os) { *os << c.name; }

class DistributedPasskey : public ::testing::TestWithParam<PasskeyCase> {};

TEST_P(DistributedPasskey, EqualsOneRankExactly) {
  const PasskeyCase& pc = GetParam();
  const std::string dir = shared_dir(std::string("passkey_") + pc.name);
  const std::string tokenizer = test::fixtures_dir() + "/tokenizers/synthetic-llama2.tokenizer.json";
  if (g_comm->rank() == 0) test::write_random_hf_folder(dir, test::small_config(700, 64), 8, 0.4);
  g_comm->barrier();
  PasskeyCommand c;
  c.common.base_model = dir;
  c.common.progress = false;
  c.tokenizer = tokenizer;
  c.max_tokens = pc.max_tokens, c.interval = pc.interval, c.num_tests = pc.num_tests, c.prefill_chunk = 64;
  c.reuse_prefix = pc.reuse_prefix;
  std::ostringstream one_out, one_log;
  const nlohmann::json one = run_passkey_command(c, one_out, one_log);

  c.common.json = dir + "/passkey_rank" + std::to_string(g_comm->rank()) + ".json";
  std::ostringstream out, log;
  const nlohmann::json many = run_passkey_command(c, out, log, nullptr, g_comm);
  EXPECT_EQ(many["world_size"], g_comm->size());
  EXPECT_EQ(without_timings(many), without_timings(one)) << pc.name << " on " << g_comm->size() << " ranks";
  const bool lead = g_comm->rank() == 0;
  EXPECT_EQ(path_exists(c.common.json), lead) << c.common.json;
  EXPECT_EQ(out.str().empty(), !lead);
  if (lead) {  // the printed table too, but for the seconds column
    EXPECT_EQ(table_rows(out.str()).size(), many["points"].size()) << out.str();
    EXPECT_EQ(table_rows(out.str()), table_rows(one_out.str())) << out.str();
  }
  g_comm->barrier();
}

INSTANTIATE_TEST_SUITE_P(
    Trials, DistributedPasskey,
    ::testing::Values(PasskeyCase{"two_lengths_three_seeds", 700, 300, 3, true},   // 6 trials of unequal weight
                      PasskeyCase{"fresh_prefills", 700, 300, 3, false},           // every trial prefilled whole
                      PasskeyCase{"one_trial", 300, 300, 1, true}),                // fewer trials than ranks
    [](const ::testing::TestParamInfo<PasskeyCase>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace ll
