// The flag parser shared by every binary.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <functional>

#include "util/error.h"
#include "util/files.h"
#include "util/flags.h"

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

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

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

TEST(Flags, HelpListsEveryFlagWithItsDefault) {
  Parsed p;
  const std::string h = p.flags.help();
  for (const char* s : {"--model_name_or_path [m]", "--max_steps [10]", "--learning_rate [2e-05]", "--use_s2attn [true]",
                        "--config"})
    EXPECT_NE(h.find(s), std::string::npos) << s << " missing from:\n" << h;
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
