// ZeRO-3 parameter storage: every rank keeps 1/N of every parameter group (the embedding/final-norm/LM-head group
// and each decoder layer), split separately over the group's trainable and frozen elements. A group's weights
// are all-gathered into a staging slot when the model acquires it (two slots alternate between layers; the
// outer group has its own), and its gradients are reduce-scattered into the owners' fp32 shards as soon as the
// group's backward is done — a full gradient never exists. The optimizer (mpi/zero.h, stage 3) updates the
// trainable shards in place (and keeps their f32 masters when the weights are bf16).
//
// Overlap (asynchronous comms, NCCL): the model's prefetch hints start the gather of the next layer into the other
// slot while the current layer computes; acquire() then only waits for it. A group's gradient reduce-scatter is
// waited for only when its slot is next reused (or at flush(), before the optimizer reads the shards), so it runs
// during the next layer's backward. Prefetched weights are used only if the group's shards have not changed since
// (commit, optimizer step). With host comms the same schedule runs synchronously and gives the same bytes.
//
// Accumulating micro-batches into the gradient shards: backends whose `add` op takes the gradient dtype (CPU)
// reduce into a temporary and add it to the shard; the others (CUDA, whose add is bf16-only) seed this rank's range
// of the slot's gradients with the shard before backward, so the reduce-scatter of the slot writes
// shard + Σ ranks' micro-batch gradients straight into the shard.
#pragma once
#include <array>
#include <memory>
#include <vector>

#include "core/backend.h"
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
  void prefetch(int group) override;
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
  // Waits for every reduce-scatter still in flight (their results are then in the gradient shards).
  void flush();
  // The optimizer changed the weight shards: weights gathered (prefetched) before are stale.
  void shards_changed();
  // Gathers started by prefetch() and used by acquire(), and gathers done in acquire() (tests, diagnostics).
  int64_t prefetch_hits() const { return prefetch_hits_; }
  int64_t acquire_gathers() const { return acquire_gathers_; }
  size_t shard_bytes() const;    // parameter + gradient shards held by this rank
  size_t staging_bytes() const;  // gather slots

  // What the storage would hold on the most loaded rank of `ranks`, without allocating (start-up memory plans).
  // `params`: a store built with external storage (nothing attached).
  struct PlannedBytes {
    size_t weight_shards, grad_shards, staging;
  };
  static PlannedBytes plan_bytes(Backend& backend, ParamStore& params, int ranks);

 private:
  static constexpr int kNone = -2;
  struct Group {
    std::vector<Param*> trainable, frozen;  // layout order inside the group: trainable first
    std::vector<int64_t> offset;            // element offset of each parameter (trainable, then frozen)
    int64_t trainable_elems = 0, frozen_elems = 0;  // including alignment padding (mixed precision)
    std::vector<int64_t> t_counts, f_counts;  // even splits over ranks
    Tensor t_shard, f_shard, g_shard;         // this rank's trainable / frozen weights and summed gradients
    int slot = 0;
    uint64_t version = 1;  // bumped whenever the shards change
  };
  struct Slot {
    Tensor values, grads, reduce_tmp;
    int holder = kNone;          // group whose weights are in `values` (or being gathered into it)
    uint64_t holder_version = 0;
    std::vector<CommRequest> gathers;  // in flight into `values`
    bool in_use = false;               // acquired and not released
    int reducing = kNone;              // group whose gradients are being reduce-scattered out of `grads`
    CommRequest reduce;
  };
  struct Layout {  // slot sizes in elements
    int64_t max_layer = 0, max_layer_grads = 0, outer = 0, outer_grads = 0, max_shard = 1;
  };
  struct Handles {
    std::vector<std::array<Arena::Handle, 3>> shards;  // per group: trainable weights, frozen weights, gradients
    std::array<Arena::Handle, 3> slots[3];             // per slot: values, grads, reduce_tmp (f32 backends)
  };
  static Layout plan_layout(ParamStore& params, const DTypePolicy& dt, int n, int r, std::vector<Group>* groups);
  static Handles reserve(const Layout& lay, const std::vector<Group>& groups, const DTypePolicy& dt, int r,
                         Arena& weights, Arena& grads, Arena& staging);
  Group& group(int g) { return groups_[size_t(g + 1)]; }
  void point(Group& gr, const Slot& slot, bool with_grads);
  void unpoint(Group& gr);
  void gather_into(int g, Slot& slot);
  void wait_gathers(Slot& slot);
  void finish_reduce(Slot& slot);

  Backend& backend_;
  ParamStore& params_;
  Comm& comm_;
  bool seed_grads_ = false;  // accumulate by seeding the slot's gradients with the shard (see the top)
  std::vector<Group> groups_;  // index g + 1 (the outer group first)
  std::vector<Slot> slots_;    // 0, 1: layers (alternating); 2: the outer group
  std::unique_ptr<Arena> shards_, staging_, materialized_;
  std::vector<Segment> segments_;
  int64_t prefetch_hits_ = 0, acquire_gathers_ = 0;
};

}  // namespace ll
