// Training checkpoints: output_dir/checkpoint-<step>/ holding the trainable weights, the AdamW moments and the
// trainer state (step, data position, counters, resolved flags). A checkpoint directory is written under a
// temporary name and renamed into place, so it is either complete or absent.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend.h"
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
// Deletes the oldest checkpoints so that at most `keep` remain (keep <= 0: keep all).
void rotate_checkpoints(const std::string& output_dir, int64_t keep);

}  // namespace ll
