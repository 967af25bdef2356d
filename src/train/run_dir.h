// The output folder of a training run; rank 0 alone touches it, before the model is built:
//   - --output_dir must not be, or lie inside, --model_name_or_path (compared as canonical paths): nothing is
//     written before this is checked;
//   - one run at a time: an exclusive flock on output_dir/.lock (holding pid, host and start time) for the whole
//     run; a second run stops at once naming the holder;
//   - a fresh run (no --resume_from_checkpoint) refuses a folder that holds another run's files, unless
//     --overwrite_output_dir true, which removes exactly those files (Hugging Face's rule);
//   - what a killed save or rotation left in the checkpoint folders is repaired (tidy_checkpoint_folders).
// The resolved flags go to training_args.json, never config.json (older versions wrote config.json there, so a run
// folder looked like a model folder; such a flags file is still recognised as a run's).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/trainer.h"

namespace ll {

// An exclusive flock on output_dir/.lock, held while the object lives (the kernel drops it when the process dies).
// The folder must exist. Throws naming the holder (pid, host, start time written into the file) when held.
class OutputDirLock {
 public:
  explicit OutputDirLock(const std::string& output_dir);
  ~OutputDirLock();
  OutputDirLock(const OutputDirLock&) = delete;
  OutputDirLock& operator=(const OutputDirLock&) = delete;

 private:
  int fd_ = -1;
};

// Rank 0's set-up of o.output_dir, in the order listed at the top of this file; prints what it removed or
// repaired. Returns the lock, to be held until the run ends.
std::unique_ptr<OutputDirLock> prepare_output_dir(const TrainOptions& o);

// The entries (names in output_dir) that a training run writes and that are present: checkpoint folders,
// metrics.jsonl, training_args.json (or a flags config.json), op_profile.json, the exported adapter's files and the
// model/ and merged/ export folders. An entry that is, or contains, one of `inputs` (the run's model, tokenizer,
// data) is never listed.
std::vector<std::string> previous_run_files(const std::string& output_dir, const std::vector<std::string>& inputs);

// output_dir/training_args.json: the run's resolved flags (a valid --config file).
void write_training_args(const std::string& output_dir, const nlohmann::json& flags);

}  // namespace ll
