// Data-parallel optimisation over a Comm (DeepSpeed's ZeRO stages, hand-rolled):
//   stage 0: gradients are all-reduced (mean over ranks); every rank runs the full AdamW.
//   stage 2: gradients are reduce-scattered (mean) so each rank keeps only its shard; Adam moments exist only
//            for that shard; each rank updates its shard of the trainable weights and the shards are all-gathered.
//            Shards are even splits of each bucket of the flat gradient arena (mpi/zero_plan.h). The last
//            micro-batch's backward starts each bucket's reduce-scatter as soon as its gradients are complete
//            (asynchronous comms overlap it with the rest of backward); one bucket on host comms by default.
//   stage 3: parameters themselves are sharded (mpi/zero3.h): gradients arrive already reduce-scattered into the
//            owners' shards during backward; each rank updates its shards in place; nothing is gathered here.
// The global gradient norm is summed over shards, so clipping sees every rank's gradient.
// Mixed precision (weights stored below the f32 gradients, CUDA's bf16): stages 2 and 3 keep an f32 master of
// every element this rank updates; AdamW runs on the master and writes the working copy (bf16), which is what the
// all-gather (stage 2) or the layer gathers (stage 3) move. Masters are checkpointed (master/<param>@<first>), so a
// resume continues from the exact f32 values; a checkpoint without them widens the restored working weights.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "model/arena.h"
#include "model/params.h"
#include "mpi/comm.h"
#include "mpi/zero3.h"
#include "mpi/zero_plan.h"
#include "optim/adamw.h"

namespace ll {

class DistributedOptimizer {
 public:
  // Stage 3 needs the Zero3Storage that holds the parameter shards. bucket_elems (stage 2): gradient elements per
  // reduce-scatter bucket; 0 = one bucket on host comms, kDefaultBucketElems on asynchronous ones (NCCL).
  DistributedOptimizer(Backend& backend, ParamStore& params, Comm& comm, const AdamWConfig& config, int stage,
                       Zero3Storage* zero3 = nullptr, int64_t bucket_elems = 0);
  ~DistributedOptimizer();
  static constexpr int64_t kDefaultBucketElems = int64_t(1) << 24;  // 64 MiB of f32 gradients

  // Before each micro-batch's forward/backward; `last`: the last one before reduce_and_clip. Stage 2 then
  // starts each gradient bucket's reduce-scatter during that backward, as soon as the bucket is complete.
  void begin_micro_batch(bool last);
  // After the local backward: reduce across ranks, then clip to max_norm (0: no clipping). Returns the global norm
  // before clipping; inf/NaN on every rank if any gradient is.
  double reduce_and_clip(double max_norm);
  // One AdamW update at learning rate lr (weights identical on every rank afterwards).
  void step(double lr);
  // The first trainable parameter (in the store's order) holding a NaN or ±inf after an update, "" when none; every
  // rank gets the same answer. Each rank checks what it updates (all weights at stage 0, its shard at 2 and 3), on
  // the device (sum_squares of the f32 masters where kept, else of the weights), and the ranks agree by one
  // all-reduce. Masters finite within bf16's range round to finite bf16 weights, except within 0.4% of FLT_MAX,
  // which the checks before saving catch.
  std::string first_nonfinite_weight();

  int stage() const { return stage_; }
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t steps);
  size_t state_bytes() const;  // optimizer state held by this rank (moments, and masters when kept)
  bool has_masters() const { return masters_; }
  size_t num_buckets() const { return plan_.buckets.size(); }

  // Checkpoint moments (and f32 masters when kept). Stage 0: rank 0 writes optimizer.safetensors (exp_avg/<param>,
  // exp_avg_sq/<param>, master/<param>). Stages 2 and 3: every rank writes optimizer-shard-R-of-N.safetensors
  // holding its pieces of parameters as exp_avg/<param>@<first element> (metadata: world size). Loading accepts
  // any of these forms from any world size and stage, and re-cuts the state for this run.
  void save_moments(const std::string& dir);
  void load_moments(const std::string& dir);

 private:
  struct Piece {  // a contiguous part of one trainable parameter updated by this rank
    Param* param;
    int64_t param_begin, count;
    Tensor value, grad, m, v, master;  // master: empty unless the weights are stored below f32
    bool decay;
    int bucket;
  };
  std::vector<Tensor> local_grads() const;  // the gradients this rank reduces and updates from
  void on_backward_done(int group);
  void start_bucket_reduce(size_t bucket);

  Backend& backend_;
  ParamStore& params_;
  Comm& comm_;
  AdamWConfig config_;
  int stage_;
  bool masters_ = false;
  std::unique_ptr<AdamW> full_;  // stage 0
  Zero2Plan plan_;               // stage 2
  Tensor shard_grad_;            // stage 2: this rank's reduced gradients, bucket after bucket
  std::vector<CommRequest> bucket_reduce_;  // stage 2, per bucket
  std::vector<bool> bucket_started_;
  bool reduce_in_backward_ = false;
  Zero3Storage* zero3_ = nullptr;
  std::unique_ptr<Arena> arena_;
  std::vector<Piece> pieces_;    // stages 2 and 3
  int64_t step_ = 0;
};

// Reads checkpoint moments (any form above) as one full host vector per trainable parameter of `params`.
std::map<std::string, std::vector<double>> read_moments(const std::string& dir, const std::string& which,
                                                        ParamStore& params);

}  // namespace ll
