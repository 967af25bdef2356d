// ZeRO-3 parameter storage: every rank keeps 1/N of every parameter group (the embedding/final-norm/LM-head group
// and each decoder layer), split separately over the group's trainable and frozen elements. A group's weights
// are all-gathered into a staging slot when the model acquires it (two slots alternate between layers, so layer
// l+1's gather could overlap layer l's compute once collectives are asynchronous), and its gradients are
// reduce-scattered into the owners' fp32 shards as soon as the group's backward is done — a full gradient never
// exists. The optimizer (mpi/zero.h, stage 3) updates the trainable shards in place.
#pragma once
#include <memory>
#include <vector>

#include "backend.h"
#include "model/arena.h"
#include "model/param_storage.h"
#include "model/params.h"
#include "mpi/comm.h"

namespace ll {

class Zero3Storage final : public ParamStorage {
 public:
  // `params` must have been built with external storage; attaches itself to it.
  Zero3Storage(Backend& backend, ParamStore& params, Comm& comm);
  ~Zero3Storage() override;

  void acquire(int group) override;
  void release(int group) override;
  void backward_done(int group) override;
  void commit(int group) override;
  void materialize(bool trainable_only) override;
  void dematerialize() override;
  void zero_grads() override;

  // This rank's part of one trainable parameter: elements [param_begin, param_begin + count) of `param`,
  // stored at `value` (weights) and `grad` (summed gradients) — what the optimizer updates.
  struct Segment {
    Param* param;
    int64_t param_begin, count;
    Tensor value, grad;
  };
  const std::vector<Segment>& segments() const { return segments_; }
  // Every gradient shard of this rank (for norms and scaling).
  std::vector<Tensor> grad_shards() const;
  size_t shard_bytes() const;    // parameter + gradient shards held by this rank
  size_t staging_bytes() const;  // gather slots

 private:
  struct Group {
    std::vector<Param*> trainable, frozen;  // layout order inside the group: trainable first
    std::vector<int64_t> offset;            // element offset of each parameter (trainable, then frozen)
    int64_t trainable_elems = 0, frozen_elems = 0;
    std::vector<int64_t> t_counts, f_counts;  // even splits over ranks
    Tensor t_shard, f_shard, g_shard;         // this rank's trainable / frozen weights and summed gradients
    int slot = 0;
  };
  struct Slot {
    Tensor values, grads;
  };
  Group& group(int g) { return groups_[size_t(g + 1)]; }
  void point(Group& gr, const Slot& slot, bool with_grads);
  void unpoint(Group& gr);

  Backend& backend_;
  ParamStore& params_;
  Comm& comm_;
  std::vector<Group> groups_;  // index g + 1 (the outer group first)
  std::vector<Slot> slots_;    // 0, 1: layers (alternating); 2: the outer group
  Tensor reduce_tmp_;
  std::unique_ptr<Arena> shards_, staging_, materialized_;
  std::vector<Segment> segments_;
};

}  // namespace ll
