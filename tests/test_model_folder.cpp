// --base_model given a run's output folder (io/model_folder.h): build/eval, build/merge and build/serve resolve it
// with one helper that also writes the note saying so.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "hf_test_util.h"
#include "io/model_folder.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {
namespace {

TEST(ResolveBaseModel, RunFolderResolvesToItsModelWithOneNoteLine) {
  test::TempDir run;
  std::filesystem::create_directories(run / "model");
  write_file_atomic(run / "model/config.json", "{}");
  std::ostringstream note;
  EXPECT_EQ(resolve_base_model(run.path(), &note), run / "model");
  EXPECT_EQ(note.str(), "--base_model " + run.path() + ": a full fine-tuning run's output folder; its model is " +
                            run.path() + "/model\n");
  // Without a stream (ranks other than 0) the same folder, nothing written anywhere.
  EXPECT_EQ(resolve_base_model(run.path(), nullptr), run / "model");
}

TEST(ResolveBaseModel, ModelFolderIsItselfWithoutANote) {
  test::TempDir model;
  write_file_atomic(model / "config.json", "{}");
  std::ostringstream note;
  EXPECT_EQ(resolve_base_model(model.path(), &note), model.path());
  EXPECT_EQ(note.str(), "");
}

TEST(ResolveBaseModel, LoraRunFolderIsAnErrorNamingTheFlag) {
  test::TempDir lora;
  write_file_atomic(lora / "adapter_config.json", "{}");
  std::ostringstream note;
  try {
    resolve_base_model(lora.path(), &note);
    FAIL() << "a LoRA run's folder was taken as --base_model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--base_model `" + lora.path() + "` is a LoRA adapter folder"),
              std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("pass it as --peft_model"), std::string::npos) << e.what();
  }
  EXPECT_EQ(note.str(), "");
}

}  // namespace
}  // namespace ll
