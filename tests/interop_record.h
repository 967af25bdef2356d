// The interop tests' shared steps (test_peft, test_neox_interop, test_mistral_interop, test_family_interop): we write
// an adapter and a merged folder, transformers + peft checked files written that way once (the fixture scripts'
// --check-ours step, recorded with each file's sha256), and the test proves that today's writers still write exactly
// those bytes.
#pragma once
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "hf_test_util.h"
#include "util/files.h"
#include "util/sha256.h"

namespace ll::test {

// Where an interop test writes: $env_var when set (a fixture script's rerun step sets it and reads the files from
// there), else a temporary folder. A kept folder may hold only `entries` (an earlier run's output), which are removed.
class InteropOutput {
 public:
  InteropOutput(const char* env_var, const std::vector<std::string>& entries) {
    const char* keep = std::getenv(env_var);
    kept_ = keep && *keep;
    dir_ = kept_ ? keep : temp_.path();
    if (!kept_) return;
    make_directories(dir_);
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      bool known = false;
      for (const std::string& entry : entries) known = known || name == entry;
      if (!known) {  // never delete what an earlier run did not write
        ADD_FAILURE() << env_var << "=" << dir_ << " holds `" << name
                      << "`; point it at a new or earlier-interop folder";
        usable_ = false;
        return;
      }
    }
    for (const std::string& entry : entries) std::filesystem::remove_all(dir_ + "/" + entry);
  }
  const std::string& dir() const { return dir_; }
  bool kept() const { return kept_; }
  bool usable() const { return usable_; }

 private:
  TempDir temp_;
  std::string dir_;
  bool kept_ = false, usable_ = true;
};

// One recorded check (`passed`, `files`: name → sha256) against the files under dir/<folder> for each of `folders`:
// it passed, and they are exactly the recorded files, byte for byte. `what` names the check, `script` its rerun steps.
inline void expect_files_match_record(const nlohmann::json& check, const std::string& dir,
                                      const std::vector<std::string>& folders, const std::string& what,
                                      const std::string& script) {
  EXPECT_TRUE(check.at("passed").get<bool>()) << what << ": the recorded check failed: " << check.dump(2);
  std::set<std::string> ours, recorded;
  for (const std::string& folder : folders)
    for (const auto& e : std::filesystem::directory_iterator(dir + "/" + folder))
      ours.insert(folder + "/" + e.path().filename().string());
  for (const auto& [name, sha] : check.at("files").items()) {
    recorded.insert(name);
    EXPECT_EQ(sha256_file(dir + "/" + name), sha.get<std::string>())
        << name << " differs from the file " << what << " checked: the writers changed, so rerun the check (steps in "
        << script << ")";
  }
  EXPECT_EQ(ours, recorded) << "the set of files written differs from the set " << what
                            << " checked; rerun the check (" << script << ")";
}

}  // namespace ll::test
