// The flag parser shared by every binary.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <functional>

#include "util/error.h"
#include "util/files.h"
#include "util/flags.h"
#include "test_util.h"

namespace ll {
namespace {

struct Parsed {
  std::string model = "m";
  int64_t steps = 10;
  double lr = 2e-5;
  bool s2 = true;
  Flags flags{"train", "test program"};
  Parsed() {
    flags.add("model_name_or_path", &model, "model folder");
    flags.add("max_steps", &steps, "steps");
    flags.add("learning_rate", &lr, "learning rate");
    flags.add("use_s2attn", &s2, "S2-Attn");
  }
  bool parse(std::vector<std::string> args) {
    std::vector<char*> argv{const_cast<char*>("train")};
    for (auto& a : args) argv.push_back(a.data());
    return flags.parse(int(argv.size()), argv.data());
  }
};

using test::error_of;

TEST(Flags, ParsesBothSpellingsAndTypes) {
  Parsed p;
  ASSERT_TRUE(p.parse({"--max_steps", "5", "--learning_rate=1e-4", "--use_s2attn", "false", "--model_name_or_path", "x"}));
  EXPECT_EQ(p.steps, 5);
  EXPECT_DOUBLE_EQ(p.lr, 1e-4);
  EXPECT_FALSE(p.s2);
  EXPECT_EQ(p.model, "x");
  EXPECT_TRUE(p.flags.was_set("max_steps"));
  Parsed q;
  ASSERT_TRUE(q.parse({"--use_s2attn", "--max_steps", "-3"}));  // bare bool = true; negative numbers are values
  EXPECT_TRUE(q.s2);
  EXPECT_EQ(q.steps, -3);
  EXPECT_FALSE(q.flags.was_set("learning_rate"));
  EXPECT_EQ(q.flags.values()["learning_rate"], 2e-5);
}

TEST(Flags, UnknownFlagSuggestsTheNearestOne) {
  Parsed p;
  const std::string e = error_of([&] { p.parse({"--max_step", "3"}); });
  EXPECT_NE(e.find("unknown flag `--max_step`"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean `--max_steps`"), std::string::npos) << e;
  EXPECT_EQ(p.flags.suggest("zzzzzzzzzzzz"), "");
}

TEST(Flags, MalformedValuesNameTheFlag) {
  EXPECT_NE(error_of([] { Parsed().parse({"--max_steps", "ten"}); }).find("--max_steps: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of([] { Parsed().parse({"--learning_rate", "1e-4x"}); }).find("--learning_rate"), std::string::npos);
  EXPECT_NE(error_of([] { Parsed().parse({"--use_s2attn=maybe"}); }).find("expected true or false"), std::string::npos);
  EXPECT_NE(error_of([] { Parsed().parse({"--max_steps"}); }).find("needs a value"), std::string::npos);
  EXPECT_NE(error_of([] { Parsed().parse({"stray"}); }).find("unexpected argument `stray`"), std::string::npos);
}

TEST(Flags, ConfigFileSuppliesFlagsAndTheCommandLineWins) {
  const std::string path = ::testing::TempDir() + "/flags_config.json";
  write_file_atomic(path, R"({"max_steps": 7, "learning_rate": 0.5, "model_name_or_path": "from_config"})");
  Parsed p;
  ASSERT_TRUE(p.parse({"--config", path, "--max_steps", "9"}));
  EXPECT_EQ(p.steps, 9);
  EXPECT_DOUBLE_EQ(p.lr, 0.5);
  EXPECT_EQ(p.model, "from_config");
  write_file_atomic(path, R"({"learning_rte": 1})");
  const std::string e = error_of([&] { Parsed().parse({"--config", path}); });
  EXPECT_NE(e.find("did you mean `learning_rate`"), std::string::npos) << e;
  EXPECT_NE(e.find(path), std::string::npos) << e;
  write_file_atomic(path, "{not json");
  EXPECT_NE(error_of([&] { Parsed().parse({"--config", path}); }).find("invalid JSON"), std::string::npos);
}

// LongLoRA's vocabulary that a binary accepts without effect: with a value or bare (argparse's store_true), one
// note each, listed in --help, not in the resolved values; booleans take Python's True/False.
TEST(Flags, IgnoredFlagsTakeAValueOrNoneAndLeaveOneNoteEach) {
  Parsed p;
  p.flags.add_ignored("tf32", "TF32 is never used");
  p.flags.add_ignored("use_flash_attn", "always our kernel");
  ASSERT_TRUE(p.parse({"--tf32", "True", "--use_flash_attn", "--use_s2attn", "False", "--max_steps", "3"}));
  EXPECT_FALSE(p.s2);
  EXPECT_EQ(p.steps, 3);
  ASSERT_EQ(p.flags.notes().size(), 2u);
  EXPECT_EQ(p.flags.notes()[0], "--tf32 True: ignored; TF32 is never used");
  EXPECT_EQ(p.flags.notes()[1], "--use_flash_attn: ignored; always our kernel");
  EXPECT_TRUE(p.flags.was_set("tf32"));
  EXPECT_FALSE(p.flags.values().contains("tf32"));
  EXPECT_NE(p.flags.help().find("--tf32 (accepted for LongLoRA command lines, ignored: TF32 is never used)"),
            std::string::npos);
  Parsed q;
  q.flags.add_ignored("cache_dir", "local folders");
  ASSERT_TRUE(q.parse({"--cache_dir=./cache"}));
  EXPECT_EQ(q.flags.notes().at(0), "--cache_dir ./cache: ignored; local folders");
}

// LongLoRA's README passes `----enable_streaming` (four dashes): the flag it means, with a note; still an error when
// no flag has that name.
TEST(Flags, ExtraLeadingDashesNameTheSameFlagWithANote) {
  Parsed p;
  ASSERT_TRUE(p.parse({"----use_s2attn", "false", "---max_steps=4"}));
  EXPECT_FALSE(p.s2);
  EXPECT_EQ(p.steps, 4);
  ASSERT_EQ(p.flags.notes().size(), 2u);
  EXPECT_EQ(p.flags.notes()[0], "----use_s2attn: read as --use_s2attn (extra leading dashes)");
  EXPECT_EQ(p.flags.notes()[1], "---max_steps: read as --max_steps (extra leading dashes)");
  Parsed q;
  EXPECT_NE(error_of([&] { q.parse({"----no_such_flag", "1"}); }).find("unknown flag `----no_such_flag`"),
            std::string::npos);
}

TEST(Flags, HelpListsEveryFlagWithItsDefault) {
  Parsed p;
  const std::string h = p.flags.help();
  for (const char* s : {"--model_name_or_path [m]", "--max_steps [10]", "--learning_rate [2e-05]", "--use_s2attn [true]",
                        "--config"})
    EXPECT_NE(h.find(s), std::string::npos) << s << " missing from:\n" << h;
}

// Every number flag refuses NaN and ±inf (strtod accepts them), with or without a declared range.
TEST(Flags, NumberFlagsRefuseNonFiniteValues) {
  for (const char* v : {"inf", "-inf", "nan", "infinity", "NaN"}) {
    const std::string e = error_of([&] { Parsed().parse({"--learning_rate", v}); });
    EXPECT_NE(e.find("--learning_rate must be a finite number, got"), std::string::npos) << v << ": " << e;
  }
}

// Ranges are declared with the flag; values outside them name the flag, the value and the range, inclusive and
// exclusive bounds as declared, from the command line, --config and check_values() alike.
TEST(Flags, DeclaredRangesRejectValuesOutsideThem) {
  struct Ranged {
    int64_t steps = 1, limit = 2;
    double beta = 0.9, eps = 1e-8, ratio = 0.25;
    Flags flags{"train", "test program"};
    Ranged() {
      flags.add("save_steps", &steps, "steps").at_least(0);
      flags.add("logging_steps", &limit, "steps").at_least(1).at_most(100);
      flags.add("adam_beta1", &beta, "beta").at_least(0).below(1);
      flags.add("adam_epsilon", &eps, "epsilon").above(0);
      flags.add("s2_group_ratio", &ratio, "ratio").above(0).at_most(1);
    }
    void parse(std::vector<std::string> args) {
      std::vector<char*> argv{const_cast<char*>("train")};
      for (auto& a : args) argv.push_back(a.data());
      flags.parse(int(argv.size()), argv.data());
    }
  };
  auto parse_error = [](std::vector<std::string> args) { return error_of([&] { Ranged().parse(args); }); };
  EXPECT_EQ(parse_error({"--save_steps", "0", "--logging_steps", "100", "--adam_beta1", "0", "--adam_epsilon", "1e-30",
                         "--s2_group_ratio", "1"}),
            "");  // every bound that is included
  EXPECT_EQ(parse_error({"--save_steps", "-1"}), "train: --save_steps must be an integer >= 0, got -1");
  EXPECT_EQ(parse_error({"--logging_steps", "0"}), "train: --logging_steps must be an integer in [1, 100], got 0");
  EXPECT_EQ(parse_error({"--logging_steps", "101"}), "train: --logging_steps must be an integer in [1, 100], got 101");
  EXPECT_EQ(parse_error({"--adam_beta1", "1.0"}), "train: --adam_beta1 must be a finite number in [0, 1), got 1");
  EXPECT_EQ(parse_error({"--adam_beta1=-0.1"}), "train: --adam_beta1 must be a finite number in [0, 1), got -0.1");
  EXPECT_EQ(parse_error({"--adam_epsilon", "0"}), "train: --adam_epsilon must be a finite number > 0, got 0");
  EXPECT_EQ(parse_error({"--s2_group_ratio", "0"}), "train: --s2_group_ratio must be a finite number in (0, 1], got 0");
  EXPECT_EQ(parse_error({"--adam_epsilon", "inf"}), "train: --adam_epsilon must be a finite number > 0, got inf");

  const std::string path = ::testing::TempDir() + "/flags_range_config.json";
  write_file_atomic(path, R"({"adam_beta1": 1.5})");
  EXPECT_EQ(parse_error({"--config", path}),
            "--config `" + path + "`: --adam_beta1 must be a finite number in [0, 1), got 1.5");

  Ranged r;  // values put in the bound variables directly (library callers) are checked by check_values()
  EXPECT_NO_THROW(r.flags.check_values());
  r.beta = std::nan("");
  EXPECT_EQ(error_of([&] { r.flags.check_values(); }).find("train: --adam_beta1 must be a finite number in [0, 1)"), 0u);
  r.beta = 0.5, r.steps = -3;
  EXPECT_EQ(error_of([&] { r.flags.check_values(); }), "train: --save_steps must be an integer >= 0, got -3");

  const std::string help = Ranged().flags.help();
  EXPECT_NE(help.find("beta (a finite number in [0, 1))"), std::string::npos) << help;
  EXPECT_NE(help.find("steps (an integer >= 0)"), std::string::npos) << help;
}

TEST(Files, AtomicWriteReplacesAndLeavesNoTemporary) {
  const std::string path = ::testing::TempDir() + "/atomic.txt";
  write_file_atomic(path, "one");
  write_file_atomic(path, "two");
  EXPECT_EQ(read_text_file(path), "two");
  EXPECT_FALSE(path_exists(path + ".tmp." + std::to_string(::getpid())));
  EXPECT_THROW(write_file_atomic("/nonexistent_dir_xyz/file", "x"), Error);
}

}  // namespace
}  // namespace ll
