// Data-parallel optimisation over a Comm (DeepSpeed's ZeRO stages, hand-rolled):
//   stage 0: gradients are all-reduced (mean over ranks); every rank runs the full AdamW.
//   stage 2: gradients are reduce-scattered (mean) so each rank keeps only its shard; Adam moments exist only
//            for that shard; each rank updates its shard of the trainable weights and the shards are all-gathered.
// Shards are contiguous element ranges of the flat gradient arena (ParamStore::flat_grads), split evenly.
// The global gradient norm is summed over shards, so clipping sees every rank's gradient.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "model/arena.h"
#include "model/params.h"
#include "mpi/comm.h"
#include "train/optimizer.h"

namespace ll {

class DistributedOptimizer {
 public:
  DistributedOptimizer(Backend& backend, ParamStore& params, Comm& comm, const AdamWConfig& config, int stage);
  ~DistributedOptimizer();

  // After the local backward (gradients accumulated in the gradient arena): reduce across ranks, then clip to
  // max_norm (0: no clipping). Returns the global norm before clipping; inf/NaN on every rank if any gradient is.
  double reduce_and_clip(double max_norm);
  // One AdamW update at learning rate lr (weights identical on every rank afterwards).
  void step(double lr);

  int stage() const { return stage_; }
  int64_t steps_taken() const;
  void set_steps_taken(int64_t steps);
  size_t state_bytes() const;  // optimizer state held by this rank

  // Checkpoint moments: stage 0 → rank 0 writes optimizer.safetensors (per-parameter exp_avg/…, exp_avg_sq/…);
  // stage 2 → every rank writes optimizer-shard-R-of-N.safetensors (its flat range). Loading accepts either form
  // from any world size and re-cuts shards for this run.
  void save_moments(const std::string& dir);
  void load_moments(const std::string& dir);

 private:
  struct Segment {  // the part of one parameter inside this rank's shard (stage 2)
    Param* param;
    int64_t begin, end;  // element range within the flat gradient arena
    bool decay;
  };
  std::vector<double> read_full_moment(const std::string& dir, const char* which);

  Backend& backend_;
  ParamStore& params_;
  Comm& comm_;
  AdamWConfig config_;
  int stage_;
  std::unique_ptr<AdamW> full_;  // stage 0
  // stage 2
  std::vector<int64_t> counts_;
  int64_t shard_begin_ = 0;
  std::unique_ptr<Arena> arena_;
  Tensor shard_grad_, shard_m_, shard_v_;
  std::vector<Segment> segments_;
  int64_t step_ = 0;
};

}  // namespace ll
