// Training checkpoints: output_dir/checkpoint-<step>/ holding the trainable weights, the AdamW moments and the
// trainer state (step, data position, counters, resolved flags). A checkpoint directory is written under a
// temporary name and renamed into place, so it is either complete or absent.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/backend.h"
#include "model/params.h"
#include "mpi/comm.h"
#include "mpi/zero.h"
#include "train/data.h"

namespace ll {

struct TrainerState {
  int64_t global_step = 0;      // completed optimizer steps
  DataPosition data;            // next row to read
  int64_t nonfinite_streak = 0;  // consecutive skipped updates
  nlohmann::json flags;         // the run's resolved flags (informational; resume uses the command line)
};

// Collective: every rank calls it. Rank 0 writes the trainable weights and the state; the optimizer writes its
// moments (rank 0 alone, or every rank its ZeRO shard) into the same temporary directory, which rank 0 renames
// once all ranks are done. Returns the checkpoint directory.
std::string save_checkpoint(const std::string& output_dir, ParamStore& params, DistributedOptimizer& optimizer,
                            Backend& backend, Comm& comm, const TrainerState& state);
// Restores weights, moments (re-cut for this run's ranks) and state; every trainable parameter must be present
// with the same shape and dtype.
void load_checkpoint(const std::string& dir, ParamStore& params, DistributedOptimizer& optimizer, Backend& backend,
                     TrainerState* state);
// checkpoint-<N> directories of output_dir (complete ones only), sorted by N.
std::vector<std::string> list_checkpoints(const std::string& output_dir);
// Deletes the oldest checkpoints so that at most `keep` remain (keep <= 0: keep all). Each is renamed to
// checkpoint-<N>.deleting before it is deleted, so a kill midway never leaves a half-deleted checkpoint-<N>.
void rotate_checkpoints(const std::string& output_dir, int64_t keep);

// The checkpoint folders of output_dir by kind (folder names, each list sorted by step or name). A step is the
// decimal form save_checkpoint writes (no sign, no leading zero, fits int64).
struct CheckpointFolders {
  std::vector<std::pair<int64_t, std::string>> complete;  // checkpoint-<N> with trainer_state.json
  std::vector<std::string> incomplete;                    // checkpoint-<N> without it
  std::vector<std::string> in_flight;                     // checkpoint-<N>.tmp / .deleting: a save or rotation
  std::vector<std::string> not_a_step;                    // checkpoint-<anything else>, e.g. an int64 overflow
};
CheckpointFolders scan_checkpoint_folders(const std::string& output_dir);
// At start-up, by the one process that holds the output folder (rank 0 under its lock): finishes or removes what
// a killed save or rotation left — a complete checkpoint-<N>.tmp whose checkpoint-<N> is missing is renamed into
// place, other .tmp and every .deleting folder is deleted, an empty checkpoint-<N> is deleted — and returns one
// line per thing done or found (incomplete checkpoints and names that are no step are only mentioned: resume
// and rotation ignore them).
std::vector<std::string> tidy_checkpoint_folders(const std::string& output_dir);

}  // namespace ll
