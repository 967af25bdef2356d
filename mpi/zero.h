// Data-parallel optimisation over a Comm (DeepSpeed's ZeRO stages, hand-rolled):
//   stage 0: gradients are all-reduced (mean over ranks); every rank runs the full AdamW.
//   stage 2: gradients are reduce-scattered (mean) so each rank keeps only its shard; Adam moments exist only
//            for that shard; each rank updates its shard of the trainable weights and the shards are all-gathered.
//            Shards are even splits of the flat gradient arena (ParamStore::flat_grads).
//   stage 3: parameters themselves are sharded (mpi/zero3.h): gradients arrive already reduce-scattered into the
//            owners' shards during backward; each rank updates its shards in place; nothing is gathered here.
// The global gradient norm is summed over shards, so clipping sees every rank's gradient.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "model/arena.h"
#include "model/params.h"
#include "mpi/comm.h"
#include "mpi/zero3.h"
#include "train/optimizer.h"

namespace ll {

class DistributedOptimizer {
 public:
  // Stage 3 needs the Zero3Storage that holds the parameter shards.
  DistributedOptimizer(Backend& backend, ParamStore& params, Comm& comm, const AdamWConfig& config, int stage,
                       Zero3Storage* zero3 = nullptr);
  ~DistributedOptimizer();

  // After the local backward: reduce across ranks, then clip to max_norm (0: no clipping). Returns the global norm
  // before clipping; inf/NaN on every rank if any gradient is.
  double reduce_and_clip(double max_norm);
  // One AdamW update at learning rate lr (weights identical on every rank afterwards).
  void step(double lr);

  int stage() const { return stage_; }
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t steps);
  size_t state_bytes() const;  // optimizer state held by this rank

  // Checkpoint moments. Stage 0: rank 0 writes optimizer.safetensors (exp_avg/<param>, exp_avg_sq/<param>).
  // Stages 2 and 3: every rank writes optimizer-shard-R-of-N.safetensors holding its pieces of parameters as
  // exp_avg/<param>@<first element> (metadata: world size). Loading accepts any of these forms from any world
  // size and stage, and re-cuts the moments for this run.
  void save_moments(const std::string& dir);
  void load_moments(const std::string& dir);

 private:
  struct Piece {  // a contiguous part of one trainable parameter updated by this rank
    Param* param;
    int64_t param_begin, count;
    Tensor value, grad, m, v;
    bool decay;
  };
  std::vector<Tensor> local_grads() const;  // the gradients this rank reduces and updates from

  Backend& backend_;
  ParamStore& params_;
  Comm& comm_;
  AdamWConfig config_;
  int stage_;
  std::unique_ptr<AdamW> full_;  // stage 0
  std::vector<int64_t> counts_;  // stage 2 split of the flat gradient arena
  Tensor shard_grad_;            // stage 2
  Zero3Storage* zero3_ = nullptr;
  std::unique_ptr<Arena> arena_;
  std::vector<Piece> pieces_;    // stages 2 and 3
  int64_t step_ = 0;
};

// Reads checkpoint moments (any form above) as one full host vector per trainable parameter of `params`.
std::map<std::string, std::vector<double>> read_moments(const std::string& dir, const std::string& which,
                                                        ParamStore& params);

}  // namespace ll
