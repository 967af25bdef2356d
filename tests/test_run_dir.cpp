// What a training run does with its output folder (issue 13 §1): never write into the model folder, never mix
// with another run, one run at a time, metrics that stay valid JSON lines, checkpoints that survive a kill at any
// point of a save or a rotation, and a SIGTERM/SIGINT stop that saves, resumes exactly and exits 128 + signal.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "data/token_file.h"
#include "mpi/comm.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "mpi/rank_agreement.h"
#include "train/run_dir.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/files.h"
#include "util/random.h"

extern char** environ;

namespace fs = std::filesystem;

namespace ll {
namespace {

const char* kTinyConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
  "intermediate_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
  "vocab_size": 50, "rms_norm_eps": 1e-5, "max_position_embeddings": 16, "rope_theta": 10000.0})";

std::string error_of(const TrainOptions& o, const nlohmann::json& flags = {}) {
  try {
    run_training(o, flags);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos ? "" : "`" + part + "` not in: " + text;
}

std::vector<unsigned char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// The steps and losses of metrics.jsonl; every line must be a complete JSON record.
std::vector<std::pair<int64_t, double>> logged(const std::string& out_dir) {
  std::vector<std::pair<int64_t, double>> out;
  const std::string text = read_text_file(out_dir + "/metrics.jsonl");
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "metrics.jsonl ends mid-line";
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    out.push_back({j.at("step").get<int64_t>(), j.at("loss").get<double>()});
  }
  return out;
}

class RunDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/run_dir_" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    make_directories(dir_);
    write_file_atomic(dir_ + "/config.json", kTinyConfig);
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
    o.model_max_length = 32;
    o.lora_r = 4;
    o.learning_rate = 1e-2;
    o.per_device_train_batch_size = 2;
    o.max_steps = 6;
    o.save_steps = 0;
    o.lr_scheduler_type = "cosine";
    o.warmup_steps = 2;
    o.lora_dropout = 0.1;
    return o;
  }
  // A folder that looks like a Hugging Face model (config.json only: the refusal comes before any loading).
  std::string model_folder() const {
    const std::string m = dir_ + "/model";
    make_directories(m);
    write_file_atomic(m + "/config.json", kTinyConfig);
    return m;
  }
  std::string dir_;
};

// ---- 1. the output folder is never the model folder --------------------------------------------------------------

TEST_F(RunDirTest, OutputDirInOrEqualToTheModelFolderIsRefusedBeforeAnythingIsWritten) {
  const std::string model = model_folder();
  fs::create_directory_symlink(model, dir_ + "/model_link");
  for (const std::string& out : {model, model + "/", model + "/run", dir_ + "/model_link", dir_ + "/model_link/run",
                                dir_ + "/./model/../model/run/deeper"}) {
    TrainOptions o = base("unused");
    o.model_config.clear();
    o.model_name_or_path = model;
    o.output_dir = out;
    const std::string e = error_of(o, {{"output_dir", out}});
    EXPECT_EQ(contains(e, "--output_dir `" + out + "`"), "");
    EXPECT_EQ(contains(e, "--model_name_or_path `" + model + "`"), "");
    EXPECT_EQ(read_text_file(model + "/config.json"), kTinyConfig) << out;
    EXPECT_EQ(entries(model), std::vector<std::string>{"config.json"}) << out;
  }
  // Beside the model folder is fine (the run then fails later, loading the weights-less model).
  TrainOptions o = base("beside");
  o.model_config.clear();
  o.model_name_or_path = model;
  const std::string e = error_of(o);
  EXPECT_EQ(e.find("--output_dir `"), std::string::npos) << e;
  EXPECT_EQ(contains(e, "model.safetensors"), "");
  EXPECT_EQ(read_text_file(model + "/config.json"), kTinyConfig);
}

// ---- 2. a fresh run never mixes with another run ----------------------------------------------------------------

TEST_F(RunDirTest, FlagsGoToTrainingArgsJsonNotConfigJson) {
  TrainOptions o = base("args");
  o.max_steps = 1;
  const nlohmann::json flags = {{"output_dir", o.output_dir}, {"learning_rate", 0.01}};
  run_training(o, flags);
  EXPECT_EQ(nlohmann::json::parse(read_text_file(o.output_dir + "/training_args.json")), flags);
  EXPECT_FALSE(path_exists(o.output_dir + "/config.json"));
}

TEST_F(RunDirTest, FreshRunIntoAnotherRunIsRefusedAndOverwriteRemovesOnlyThatRunsFiles) {
  TrainOptions old_run = base("shared");
  old_run.save_steps = 2;
  old_run.save_total_limit = 0;
  run_training(old_run, {{"output_dir", old_run.output_dir}});
  write_file_atomic(old_run.output_dir + "/notes.txt", "mine\n");
  ASSERT_EQ(list_checkpoints(old_run.output_dir).size(), 3u);

  TrainOptions fresh = base("shared");
  fresh.max_steps = 3;
  fresh.seed = 7;
  const std::string e = error_of(fresh);
  EXPECT_EQ(contains(e, "already holds another run"), "");
  EXPECT_EQ(contains(e, "checkpoint-2"), "");
  EXPECT_EQ(contains(e, "metrics.jsonl"), "");
  EXPECT_EQ(contains(e, "--overwrite_output_dir true"), "");
  EXPECT_EQ(contains(e, "--resume_from_checkpoint"), "");
  EXPECT_EQ(logged(old_run.output_dir).size(), 6u) << "the refused run wrote nothing";
  ASSERT_EQ(list_checkpoints(old_run.output_dir).size(), 3u);

  fresh.overwrite_output_dir = true;
  fresh.resume_from_checkpoint = "auto";  // would resume what it removes
  EXPECT_EQ(contains(error_of(fresh), "--overwrite_output_dir true"), "");
  EXPECT_EQ(list_checkpoints(old_run.output_dir).size(), 3u);
  fresh.resume_from_checkpoint.clear();
  run_training(fresh, {{"output_dir", fresh.output_dir}, {"seed", 7}});
  const std::vector<std::string> kept = list_checkpoints(fresh.output_dir);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(fs::path(kept[0]).filename(), "checkpoint-3");
  EXPECT_EQ(logged(fresh.output_dir).size(), 3u);
  EXPECT_EQ(read_text_file(fresh.output_dir + "/notes.txt"), "mine\n");
  EXPECT_EQ(nlohmann::json::parse(read_text_file(fresh.output_dir + "/training_args.json")).at("seed"), 7);

  // A legacy flags file (config.json with flags) marks a run; an empty folder does not.
  TrainOptions legacy = base("legacy");
  make_directories(legacy.output_dir);
  write_file_atomic(legacy.output_dir + "/config.json", R"({"output_dir": "x", "learning_rate": 0.1})");
  EXPECT_EQ(contains(error_of(legacy), "config.json"), "");
  legacy.overwrite_output_dir = true;
  legacy.max_steps = 1;
  EXPECT_EQ(error_of(legacy), "");
  EXPECT_FALSE(path_exists(legacy.output_dir + "/config.json"));
  TrainOptions empty = base("empty");
  empty.max_steps = 1;
  make_directories(empty.output_dir);
  EXPECT_EQ(error_of(empty), "");
}

// An HF export in the output folder (full fine-tuning) is another run's; --overwrite_output_dir removes its files
// but keeps a folder with a file it did not write, and never touches the model the run trains from.
TEST_F(RunDirTest, OverwriteRemovesExportsButNeverTheInputModel) {
  TrainOptions full = base("full");
  full.low_rank_training = false;
  full.max_steps = 2;
  run_training(full, {});
  ASSERT_TRUE(path_exists(full.output_dir + "/model/model.safetensors"));
  write_file_atomic(full.output_dir + "/model/README.txt", "my notes\n");

  // Fine-tune the exported model into the same folder: model/ is an input now, not the old run's file.
  TrainOptions again = base("full");
  again.model_config.clear();
  again.model_name_or_path = full.output_dir + "/model";
  again.add_pad_token = false;
  again.max_steps = 2;
  again.overwrite_output_dir = true;
  EXPECT_EQ(error_of(again), "");
  EXPECT_TRUE(path_exists(full.output_dir + "/model/model.safetensors"));
  ASSERT_EQ(list_checkpoints(full.output_dir).size(), 1u);

  TrainOptions lora = base("full");
  lora.overwrite_output_dir = true;
  lora.max_steps = 1;
  EXPECT_EQ(error_of(lora), "");
  EXPECT_FALSE(path_exists(full.output_dir + "/model/model.safetensors"));
  EXPECT_FALSE(path_exists(full.output_dir + "/model/config.json"));
  EXPECT_EQ(read_text_file(full.output_dir + "/model/README.txt"), "my notes\n");
  EXPECT_TRUE(path_exists(full.output_dir + "/adapter_config.json"));
}

// ---- 3. one run per folder --------------------------------------------------------------------------------------

TEST_F(RunDirTest, ASecondRunOnALockedFolderStopsNamingTheHolder) {
  TrainOptions o = base("locked");
  o.max_steps = 1;
  make_directories(o.output_dir);
  {
    // flock locks belong to an open file description: this second open conflicts as another process's would.
    const OutputDirLock holder(o.output_dir);
    const std::string e = error_of(o);
    EXPECT_EQ(contains(e, "is in use by another run"), "");
    EXPECT_EQ(contains(e, "pid " + std::to_string(::getpid())), "");
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    EXPECT_EQ(contains(e, std::string("on ") + host), "");
    EXPECT_FALSE(path_exists(o.output_dir + "/metrics.jsonl"));
  }
  EXPECT_EQ(error_of(o), "");  // released
  o.resume_from_checkpoint = "auto";
  o.max_steps = 2;
  EXPECT_EQ(error_of(o), "");  // released again at the end of the run
}

// ---- 4. metrics.jsonl -------------------------------------------------------------------------------------------

TEST_F(RunDirTest, ResumeDropsATornLastLineAndRecordsAfterTheCheckpoint) {
  TrainOptions straight = base("straight");
  run_training(straight, {});
  TrainOptions first = base("torn");
  first.interrupt_at_step = 3;
  ASSERT_TRUE(run_training(first, {}).interrupted);
  // A crash after step 4 was logged but before it was saved, then a kill in the middle of writing step 5.
  {
    std::ofstream m(first.output_dir + "/metrics.jsonl", std::ios::app);
    m << R"({"step": 4, "loss": 1.5})" << "\n" << R"({"step": 5, "lo)";
  }
  TrainOptions second = base("torn");
  second.resume_from_checkpoint = "auto";
  ::testing::internal::CaptureStderr();
  run_training(second, {});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(contains(err, "metrics.jsonl"), "");
  EXPECT_EQ(contains(err, "incomplete last line"), "");
  EXPECT_EQ(contains(err, "after step 3"), "");
  EXPECT_EQ(logged(first.output_dir), logged(straight.output_dir));
}

TEST_F(RunDirTest, AFailedMetricsWriteStopsTheRunNamingTheFile) {
  if (!path_exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this machine";
  TrainOptions first = base("full_disk");
  first.interrupt_at_step = 2;
  ASSERT_TRUE(run_training(first, {}).interrupted);
  const std::string metrics = first.output_dir + "/metrics.jsonl";
  fs::remove(metrics);
  fs::create_symlink("/dev/full", metrics);  // every write fails with ENOSPC
  TrainOptions second = base("full_disk");
  second.resume_from_checkpoint = "auto";
  const std::string e = error_of(second);
  EXPECT_EQ(contains(e, "writing `" + metrics + "` failed"), "");
  EXPECT_EQ(contains(e, "No space left on device"), "");
  const std::vector<std::string> ckpts = list_checkpoints(first.output_dir);
  ASSERT_EQ(ckpts.size(), 1u);
  EXPECT_EQ(fs::path(ckpts[0]).filename(), "checkpoint-2") << "the run stopped at its first log line";
}

// The file itself: a run cut back to the resumed step, a failed write undone (never a partial line).
TEST(MetricsLog, OpeningCutsBackToTheRecordsUpToTheResumedStep) {
  const std::string path = ::testing::TempDir() + "/metrics_log_cut.jsonl";
  write_file_atomic(path, "{\"step\": 1}\n{\"step\": 2}\n{\"step\": 3}\n{\"step\": 4}\n{\"step\": 5}\n{\"step\": 6, \"lo");
  {
    MetricsLog log;
    ::testing::internal::CaptureStderr();
    log.open(path, 3);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(contains(err, path + ": dropped 2 records after step 3 (the step the run resumes from) and an incomplete "
                               "last line"),
              "");
    log.append({{"step", 4}});
  }
  EXPECT_EQ(read_text_file(path), "{\"step\": 1}\n{\"step\": 2}\n{\"step\": 3}\n{\"step\":4}\n");
  // A line that is no record ends the trajectory there too; a consistent file is left as it is.
  write_file_atomic(path, "{\"step\": 1}\nnot json\n{\"step\": 2}\n");
  {
    MetricsLog log;
    ::testing::internal::CaptureStderr();
    log.open(path, 10);
    EXPECT_EQ(contains(::testing::internal::GetCapturedStderr(), "1 line that is no JSON record with a step"), "");
  }
  EXPECT_EQ(read_text_file(path), "{\"step\": 1}\n");
  {
    MetricsLog log;
    ::testing::internal::CaptureStderr();
    log.open(path, 1);
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  }
  EXPECT_EQ(read_text_file(path), "{\"step\": 1}\n");
}

TEST(MetricsLog, AFailedWriteThrowsNamingTheFile) {
  if (!path_exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this machine";
  MetricsLog log;
  log.open("/dev/full", 0);  // not a regular file: appended to as it is
  try {
    log.append({{"step", 1}});
    ADD_FAILURE() << "the write to /dev/full succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(contains(e.what(), "writing `/dev/full` failed: No space left on device"), "");
  }
}

// A write cut short (here by the file size limit; a nearly full disk does the same) is undone: the file keeps only
// complete lines.
TEST(MetricsLog, AWriteCutShortLeavesNoPartialLine) {
  const std::string path = ::testing::TempDir() + "/metrics_log_short.jsonl";
  write_file_atomic(path, "{\"step\": 1}\n");
  MetricsLog log;
  log.open(path, 1);
  rlimit old_limit {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit limit = old_limit;
  limit.rlim_cur = 20;  // the 13 bytes there + 7 more: the next record does not fit
  void (*old_handler)(int) = std::signal(SIGXFSZ, SIG_IGN);
  std::string error;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  try {
    log.append({{"step", 2}, {"loss", 1.25}});  // nothing prints in between: every file write is limited now
  } catch (const Error& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(contains(error, "writing `" + path + "` failed: File too large"), "");
  EXPECT_EQ(read_text_file(path), "{\"step\": 1}\n");
}

// ---- 5. checkpoint folders after a kill --------------------------------------------------------------------------

// The states a SIGKILL can leave: a same-step replacement killed between its renames (the new checkpoint-6.tmp
// complete, checkpoint-6 gone), a rotation killed while deleting (checkpoint-2.deleting half removed), an empty
// checkpoint-7 (left by the rotation of earlier versions), a name that is no step. Start-up repairs what it can,
// mentions the rest, and the resumed run continues exactly from checkpoint-6.
TEST_F(RunDirTest, StartUpRepairsWhatAKilledSaveOrRotationLeft) {
  TrainOptions straight = base("straight");
  straight.max_steps = 8;
  run_training(straight, {});
  TrainOptions first = base("killed");
  first.max_steps = 8;
  first.save_steps = 2;
  first.save_total_limit = 0;
  first.interrupt_at_step = 6;
  ASSERT_TRUE(run_training(first, {}).interrupted);
  const std::string out = first.output_dir;
  fs::rename(out + "/checkpoint-6", out + "/checkpoint-6.tmp");
  fs::rename(out + "/checkpoint-2", out + "/checkpoint-2.deleting");
  fs::remove(out + "/checkpoint-2.deleting/trainer_state.json");
  make_directories(out + "/checkpoint-7");
  make_directories(out + "/checkpoint-99999999999999999999");
  make_directories(out + "/checkpoint-5");
  write_file_atomic(out + "/checkpoint-5/stray.txt", "?");

  TrainOptions second = base("killed");
  second.max_steps = 8;
  second.save_steps = 2;
  second.save_total_limit = 0;
  second.resume_from_checkpoint = "auto";
  ::testing::internal::CaptureStderr();
  const TrainResult r = run_training(second, {});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.steps, 8);
  EXPECT_EQ(contains(err, "resumed from " + out + "/checkpoint-6 at step 6"), "");
  EXPECT_EQ(contains(err, "checkpoint-6.tmp"), "");
  EXPECT_EQ(contains(err, "checkpoint-2.deleting"), "");
  EXPECT_EQ(contains(err, "checkpoint-99999999999999999999"), "");
  EXPECT_EQ(contains(err, "checkpoint-5"), "");
  for (const char* gone : {"checkpoint-6.tmp", "checkpoint-2.deleting", "checkpoint-2", "checkpoint-7"})
    EXPECT_FALSE(fs::exists(out + "/" + gone)) << gone;
  for (const char* kept : {"checkpoint-5/stray.txt", "checkpoint-99999999999999999999"})
    EXPECT_TRUE(fs::exists(out + "/" + kept)) << kept;  // not written by a run: mentioned, never deleted
  std::vector<std::string> complete;
  for (const std::string& c : list_checkpoints(out)) complete.push_back(fs::path(c).filename().string());
  EXPECT_EQ(complete, (std::vector<std::string>{"checkpoint-4", "checkpoint-6", "checkpoint-8"}));
  EXPECT_EQ(logged(out), logged(straight.output_dir));
  EXPECT_EQ(file_bytes(out + "/checkpoint-8/trainable.safetensors"),
            file_bytes(straight.output_dir + "/checkpoint-8/trainable.safetensors"));
  EXPECT_EQ(file_bytes(out + "/checkpoint-8/optimizer.safetensors"),
            file_bytes(straight.output_dir + "/checkpoint-8/optimizer.safetensors"));
}

// Resuming from an older checkpoint saves the later steps again: each replacement renames the old folder away
// before the new one takes its name, and leaves nothing behind.
TEST_F(RunDirTest, ResumingFromAnOlderCheckpointReplacesTheLaterOnes) {
  TrainOptions first = base("replace");
  first.save_steps = 2;
  first.save_total_limit = 0;
  first.interrupt_at_step = 4;
  ASSERT_TRUE(run_training(first, {}).interrupted);
  const std::string out = first.output_dir;
  const std::vector<unsigned char> saved = file_bytes(out + "/checkpoint-4/trainable.safetensors");
  TrainOptions again = base("replace");
  again.save_steps = 2;
  again.save_total_limit = 0;
  again.resume_from_checkpoint = out + "/checkpoint-2";
  EXPECT_EQ(run_training(again, {}).steps, 6);
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    EXPECT_EQ(name.find(".deleting"), std::string::npos) << name;
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;
  }
  EXPECT_EQ(list_checkpoints(out).size(), 3u);
  EXPECT_EQ(file_bytes(out + "/checkpoint-4/trainable.safetensors"), saved);  // the same trajectory
  EXPECT_EQ(logged(out).size(), 6u);
}

// A folder name that is no valid step (an int64 overflow) made resume fail with "stoll".
TEST_F(RunDirTest, CheckpointNamesThatAreNoStepAreIgnored) {
  TrainOptions first = base("names");
  first.interrupt_at_step = 3;
  ASSERT_TRUE(run_training(first, {}).interrupted);
  make_directories(first.output_dir + "/checkpoint-99999999999999999999");
  make_directories(first.output_dir + "/checkpoint-0012");
  TrainOptions second = base("names");
  second.resume_from_checkpoint = "auto";
  second.save_steps = 1;
  second.save_total_limit = 1;
  EXPECT_EQ(error_of(second), "");
  const std::vector<std::string> kept = list_checkpoints(first.output_dir);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(fs::path(kept[0]).filename(), "checkpoint-6");
  EXPECT_TRUE(is_directory(first.output_dir + "/checkpoint-99999999999999999999")) << "rotation keeps what it did not write";
}

// ---- 7. ranks with the same flags (the collectives are in tests/mpi/test_rank_agreement.cpp) -----------------------

TEST(RankAgreement, FlagDifferenceNamesTheFirstDifferingFlagAndBothValues) {
  const nlohmann::json ref = {{"learning_rate", 1}, {"output_dir", "out"}, {"seed", 42}};
  EXPECT_EQ(flag_difference(ref, ref, 1), "");
  EXPECT_EQ(flag_difference({{"learning_rate", 1.0}, {"output_dir", "out"}, {"seed", 42}}, ref, 1), "");
  EXPECT_EQ(flag_difference({{"learning_rate", 2}, {"output_dir", "elsewhere"}, {"seed", 42}}, ref, 3),
            "--learning_rate is 2 on rank 3 but 1 on rank 0");
  EXPECT_EQ(flag_difference({{"learning_rate", 1}, {"output_dir", "elsewhere"}, {"seed", 42}}, ref, 1),
            "--output_dir is `elsewhere` on rank 1 but `out` on rank 0");
  EXPECT_EQ(flag_difference({{"learning_rate", 1}, {"output_dir", "out"}}, ref, 2),
            "--seed is not given on rank 2 but 42 on rank 0");
  EXPECT_EQ(flag_difference({{"learning_rate", 1}, {"lora_r", 8}, {"output_dir", "out"}, {"seed", 42}}, ref, 2),
            "--lora_r is 8 on rank 2 but not given on rank 0");
  // One process: nothing to compare, and a failure is the step's own exception.
  std::unique_ptr<Comm> local = make_local_comm();
  EXPECT_NO_THROW(check_flags_agree(*local, ref));
  EXPECT_THROW(agree_on_failure(*local, [] { throw std::out_of_range("own"); }), std::out_of_range);
}

// ---- 6. stopped by a signal -------------------------------------------------------------------------------------

TEST_F(RunDirTest, SigtermSavesStopsAndTheResumedRunIsBitIdentical) {
  TrainOptions straight = base("straight");
  run_training(straight, {});
  TrainOptions first = base("sigterm");
  first.interrupt_at_step = 3;
  first.interrupt_signal = SIGTERM;  // raised for real: the handler saves and stops
  const TrainResult a = run_training(first, {});
  EXPECT_TRUE(a.interrupted);
  EXPECT_EQ(a.stop_signal, SIGTERM);
  EXPECT_EQ(a.steps, 3);
  ASSERT_EQ(list_checkpoints(first.output_dir), std::vector<std::string>{first.output_dir + "/checkpoint-3"});
  TrainOptions second = base("sigterm");
  second.resume_from_checkpoint = "auto";
  const TrainResult b = run_training(second, {});
  EXPECT_FALSE(b.interrupted);
  EXPECT_EQ(b.stop_signal, 0);
  EXPECT_EQ(logged(first.output_dir), logged(straight.output_dir));
  EXPECT_EQ(file_bytes(first.output_dir + "/checkpoint-6/trainable.safetensors"),
            file_bytes(straight.output_dir + "/checkpoint-6/trainable.safetensors"));
  EXPECT_EQ(file_bytes(first.output_dir + "/adapter_model.safetensors"),
            file_bytes(straight.output_dir + "/adapter_model.safetensors"));
}

// build/<dir>/<name> next to this test binary, or "".
std::string sibling_binary(const std::string& name) {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  const std::string self(buf, size_t(n));
  const std::string bin = self.substr(0, self.rfind('/') + 1) + name;
  return fs::is_regular_file(bin) ? bin : "";
}

// A real signal from outside, once the loop runs (metrics.jsonl has a line): build/train saves, says so and exits
// 128 + signal, like a process ended by it (what mpirun and batch systems report).
TEST_F(RunDirTest, TrainBinaryStoppedBySigtermExits143AndBySigintExits130) {
  const std::string train = sibling_binary("train");
  if (train.empty()) GTEST_SKIP() << "build/train is not next to the test binary";
  for (const int sig : {SIGTERM, SIGINT}) {
    const std::string out = dir_ + "/cli_" + std::to_string(sig), log = dir_ + "/cli.log";
    std::vector<std::string> args = {train, "--model_config", dir_ + "/config.json", "--data_path", dir_ + "/train.bin",
                                     "--output_dir", out, "--model_max_length", "32", "--lora_r", "4",
                                     "--per_device_train_batch_size", "2", "--max_steps", "100000000",
                                     "--save_steps", "0"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, train.c_str(), &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline &&
           (!path_exists(out + "/metrics.jsonl") || read_text_file(out + "/metrics.jsonl").find('\n') == std::string::npos))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_EQ(::kill(pid, sig), 0);
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        FAIL() << "build/train did not stop within 120 s; its log:\n" << read_text_file(log);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const std::string output = read_text_file(log);
    ASSERT_TRUE(WIFEXITED(status)) << "ended by a signal instead of exiting; log:\n" << output;
    EXPECT_EQ(WEXITSTATUS(status), 128 + sig) << output;
    const size_t steps = logged(out).size();
    EXPECT_EQ(contains(output, "saving a checkpoint at step " + std::to_string(steps)), "");
    EXPECT_EQ(contains(output, "interrupted after " + std::to_string(steps) + " steps"), "");
    EXPECT_EQ(list_checkpoints(out), std::vector<std::string>{out + "/checkpoint-" + std::to_string(steps)});
  }
}

}  // namespace
}  // namespace ll
