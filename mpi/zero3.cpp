#include "mpi/zero3.h"

#include <algorithm>
#include <array>

namespace ll {

namespace {

}  // namespace

// The groups' layouts (trainable elements first, then frozen; padded for mixed precision), their splits over n
// ranks, and the slot sizes rank r needs. The one place the ZeRO-3 layout is decided.
Zero3Storage::Layout Zero3Storage::plan_layout(ParamStore& params, const DTypePolicy& dt, int n, int r,
                                               std::vector<Group>* groups_out) {
  std::vector<Group>& groups = *groups_out;
  groups.assign(size_t(params.num_layers() + 1), Group{});
  Layout lay;
  // Mixed precision (GPU): every parameter of a gathered group starts on a 256-byte boundary of its slot, as in the
  // replicated arenas (cuBLASLt picks its fast kernels by operand alignment). fp32 backends keep the dense layout.
  const int64_t align = dt.weight != dt.grad ? int64_t(256 / dtype_size(dt.weight)) : 1;
  auto round_up = [align](int64_t x) { return (x + align - 1) / align * align; };
  for (int g = kOuterGroup; g < params.num_layers(); ++g) {
    Group& gr = groups[size_t(g + 1)];
    for (Param* p : params.group(g)) (p->trainable ? gr.trainable : gr.frozen).push_back(p);
    for (Param* p : gr.trainable) {
      gr.trainable_elems = round_up(gr.trainable_elems);
      gr.offset.push_back(gr.trainable_elems);
      gr.trainable_elems += p->numel();
    }
    gr.trainable_elems = round_up(gr.trainable_elems);
    for (Param* p : gr.frozen) {
      gr.frozen_elems = round_up(gr.frozen_elems);
      gr.offset.push_back(gr.trainable_elems + gr.frozen_elems);
      // A 4-bit weight (core/dtype.h) is sharded as its raw storage, counted in weight-dtype elements: the gather
      // reassembles the bytes exactly before any op reads them.
      gr.frozen_elems += is_quantized(p->value.dtype)
                             ? int64_t((p->value.nbytes() + dtype_size(dt.weight) - 1) / dtype_size(dt.weight))
                             : p->numel();
    }
    gr.t_counts = even_split(gr.trainable_elems, n);
    gr.f_counts = even_split(gr.frozen_elems, n);
    gr.slot = g == kOuterGroup ? 2 : g % 2;
    const int64_t total = gr.trainable_elems + gr.frozen_elems;
    if (g == kOuterGroup) {
      lay.outer = total, lay.outer_grads = gr.trainable_elems;
    } else {
      lay.max_layer = std::max(lay.max_layer, total);
      lay.max_layer_grads = std::max(lay.max_layer_grads, gr.trainable_elems);
    }
    lay.max_shard = std::max(lay.max_shard, gr.t_counts[r]);
  }
  return lay;
}

// Reserves rank r's shards (weights into `weights`, gradients into `grads`) and the three staging slots.
Zero3Storage::Handles Zero3Storage::reserve(const Layout& lay, const std::vector<Group>& groups, const DTypePolicy& dt,
                                            int r, Arena& weights, Arena& grads, Arena& staging) {
  Handles h;
  h.shards.resize(groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    h.shards[i][0] = weights.reserve(dt.weight, {std::max<int64_t>(1, groups[i].t_counts[r])});
    h.shards[i][1] = weights.reserve(dt.weight, {std::max<int64_t>(1, groups[i].f_counts[r])});
    h.shards[i][2] = grads.reserve(dt.grad, {std::max<int64_t>(1, groups[i].t_counts[r])});
  }
  const bool seed_grads = dt.act != dt.grad;  // see seed_grads_
  for (int s = 0; s < 3; ++s) {
    const int64_t vals = s == 2 ? lay.outer : lay.max_layer, g = s == 2 ? lay.outer_grads : lay.max_layer_grads;
    h.slots[s][0] = staging.reserve(dt.weight, {std::max<int64_t>(1, vals)});
    h.slots[s][1] = staging.reserve(dt.grad, {std::max<int64_t>(1, g)});
    if (!seed_grads) h.slots[s][2] = staging.reserve(dt.grad, {lay.max_shard});  // a slot's reduction in flight
  }
  return h;
}

Zero3Storage::PlannedBytes Zero3Storage::plan_bytes(Backend& backend, ParamStore& params, int ranks) {
  const DTypePolicy dt = backend.dtypes();
  std::vector<Group> groups;
  const Layout lay = plan_layout(params, dt, ranks, 0, &groups);  // rank 0 holds the largest share
  Arena weights(backend, "zero-3 weight shards"), grads(backend, "zero-3 gradient shards");
  Arena staging(backend, "zero-3 staging");
  reserve(lay, groups, dt, 0, weights, grads, staging);
  return {weights.bytes(), grads.bytes(), staging.bytes()};
}

Zero3Storage::Zero3Storage(Backend& backend, ParamStore& params, Comm& comm)
    : backend_(backend), params_(params), comm_(comm) {
  LL_CHECK(params.external(), "ZeRO-3: the parameter store must be built with external storage");
  const DTypePolicy dt = backend.dtypes();
  // Masters for weights stored below the gradient dtype live in the optimizer (mpi/zero.h).
  seed_grads_ = dt.act != dt.grad;  // the backend's add op works on activations only
  const int n = comm.size(), r = comm.rank();
  const Layout lay = plan_layout(params, dt, n, r, &groups_);

  // This rank's shards, then the staging slots.
  shards_ = std::make_unique<Arena>(backend, "zero-3 shards");
  staging_ = std::make_unique<Arena>(backend, "zero-3 staging");
  const Handles h = reserve(lay, groups_, dt, r, *shards_, *shards_, *staging_);
  shards_->commit();
  for (size_t i = 0; i < groups_.size(); ++i) {
    Group& gr = groups_[i];
    gr.t_shard = shards_->tensor(h.shards[i][0]).elements(0, gr.t_counts[r]);
    gr.f_shard = shards_->tensor(h.shards[i][1]).elements(0, gr.f_counts[r]);
    gr.g_shard = shards_->tensor(h.shards[i][2]).elements(0, gr.t_counts[r]);
  }
  staging_->commit();
  slots_.resize(3);
  for (int s = 0; s < 3; ++s) {
    slots_[size_t(s)].values = staging_->tensor(h.slots[s][0]);
    slots_[size_t(s)].grads = staging_->tensor(h.slots[s][1]);
    if (h.slots[s][2].valid()) slots_[size_t(s)].reduce_tmp = staging_->tensor(h.slots[s][2]);
  }

  // The optimizer's view: each trainable parameter's intersection with this rank's range of its group.
  for (Group& gr : groups_) {
    const int64_t lo = split_offset(gr.t_counts, r), hi = lo + gr.t_counts[r];
    for (size_t i = 0; i < gr.trainable.size(); ++i) {
      const int64_t b = std::max(lo, gr.offset[i]), e = std::min(hi, gr.offset[i] + gr.trainable[i]->numel());
      if (b < e)
        segments_.push_back({gr.trainable[i], b - gr.offset[i], e - b, gr.t_shard.elements(b - lo, e - b),
                             gr.g_shard.elements(b - lo, e - b)});
    }
  }
  params.set_storage(this);
}

Zero3Storage::~Zero3Storage() {
  if (params_.storage() == this) params_.set_storage(nullptr);
}

void Zero3Storage::point(Group& gr, const Slot& slot, bool with_grads) {
  size_t i = 0;
  for (Param* p : gr.trainable) {
    p->value.data = slot.values.elements(gr.offset[i], 1).data;
    if (with_grads) p->grad.data = slot.grads.elements(gr.offset[i], 1).data;
    ++i;
  }
  for (Param* p : gr.frozen) p->value.data = slot.values.elements(gr.offset[i++], 1).data;
}

void Zero3Storage::unpoint(Group& gr) {
  for (Param* p : gr.trainable) p->value.data = p->grad.data = nullptr;
  for (Param* p : gr.frozen) p->value.data = nullptr;
}

// Fills `slot` with group g's weights: this rank's ranges from its shards (compute stream), then the all-gathers
// of the trainable [0, T) and frozen [T, T + F) elements (started, not waited).
void Zero3Storage::gather_into(int g, Slot& slot) {
  Group& gr = group(g);
  wait_gathers(slot);  // an earlier gather into these values (a prefetch nobody used) must land first
  const int r = comm_.rank();
  const Tensor trainable = slot.values.elements(0, gr.trainable_elems);
  const Tensor frozen = slot.values.elements(gr.trainable_elems, gr.frozen_elems);
  if (gr.t_counts[r]) backend_.copy(trainable.elements(split_offset(gr.t_counts, r), gr.t_counts[r]), gr.t_shard);
  if (gr.f_counts[r]) backend_.copy(frozen.elements(split_offset(gr.f_counts, r), gr.f_counts[r]), gr.f_shard);
  if (comm_.size() > 1) {
    if (gr.trainable_elems) slot.gathers.push_back(comm_.start_all_gather_in_place(trainable, gr.t_counts));
    if (gr.frozen_elems) slot.gathers.push_back(comm_.start_all_gather_in_place(frozen, gr.f_counts));
  }
  slot.holder = g;
  slot.holder_version = gr.version;
}

void Zero3Storage::wait_gathers(Slot& slot) {
  for (const CommRequest& q : slot.gathers) comm_.wait(q);
  slot.gathers.clear();
}

// The slot's gradient reduce-scatter has landed in its group's shard (after the add, on host backends).
void Zero3Storage::finish_reduce(Slot& slot) {
  if (slot.reducing == kNone) return;
  Group& gr = group(slot.reducing);
  comm_.wait(slot.reduce);
  slot.reduce = {};
  slot.reducing = kNone;
  if (!seed_grads_ && gr.t_counts[comm_.rank()])
    backend_.add(gr.g_shard, gr.g_shard, slot.reduce_tmp.elements(0, gr.t_counts[comm_.rank()]));
}

void Zero3Storage::prefetch(int g) {
  if (g < kOuterGroup || g >= params_.num_layers()) return;
  Group& gr = group(g);
  Slot& slot = slots_[size_t(gr.slot)];
  if (slot.in_use) return;  // the model still uses the slot's group: acquire() will gather
  if (slot.holder == g && slot.holder_version == gr.version) return;  // already there or on its way
  gather_into(g, slot);
}

void Zero3Storage::acquire(int g) {
  Group& gr = group(g);
  Slot& slot = slots_[size_t(gr.slot)];
  LL_CHECK(!slot.in_use, "ZeRO-3: acquire(", g, ") while group ", slot.holder, " still holds its gather slot");
  if (slot.holder == g && slot.holder_version == gr.version) {
    ++prefetch_hits_;
  } else {
    gather_into(g, slot);
    ++acquire_gathers_;
  }
  wait_gathers(slot);
  finish_reduce(slot);  // the previous group's gradients leave the slot before they are overwritten
  if (gr.trainable_elems) {
    backend_.zero(slot.grads.elements(0, gr.trainable_elems));
    const int r = comm_.rank();
    if (seed_grads_ && gr.t_counts[r])
      backend_.copy(slot.grads.elements(split_offset(gr.t_counts, r), gr.t_counts[r]), gr.g_shard);
  }
  point(gr, slot, true);
  slot.in_use = true;
}

void Zero3Storage::release(int g) {
  Group& gr = group(g);
  unpoint(gr);
  slots_[size_t(gr.slot)].in_use = false;
}

void Zero3Storage::commit(int g) {
  Group& gr = group(g);
  const Slot& slot = slots_[size_t(gr.slot)];
  const int r = comm_.rank();
  if (gr.t_counts[r]) backend_.copy(gr.t_shard, slot.values.elements(split_offset(gr.t_counts, r), gr.t_counts[r]));
  if (gr.f_counts[r])
    backend_.copy(gr.f_shard, slot.values.elements(gr.trainable_elems + split_offset(gr.f_counts, r), gr.f_counts[r]));
  ++gr.version;
  // The slot holds what was written, which is now also what the shards hold everywhere.
  slots_[size_t(gr.slot)].holder_version = gr.version;
}

void Zero3Storage::backward_done(int g) {
  Group& gr = group(g);
  if (!gr.trainable_elems) return;
  Slot& slot = slots_[size_t(gr.slot)];
  LL_CHECK(slot.in_use && slot.holder == g && slot.reducing == kNone, "ZeRO-3: backward_done(", g,
           ") outside its acquire/release");
  const int r = comm_.rank();
  const Tensor grads = slot.grads.elements(0, gr.trainable_elems);
  if (comm_.size() == 1) {  // the sum over one rank: no collective (device buffers never go through a host comm)
    if (seed_grads_) backend_.copy(gr.g_shard, grads);
    else backend_.add(gr.g_shard, gr.g_shard, grads);
    return;
  }
  const Tensor out = seed_grads_ ? gr.g_shard : slot.reduce_tmp.elements(0, gr.t_counts[r]);
  slot.reduce = comm_.start_reduce_scatter_sum(out, grads, gr.t_counts);
  slot.reducing = g;
}

void Zero3Storage::flush() {
  for (Slot& slot : slots_) finish_reduce(slot);
}

void Zero3Storage::shards_changed() {
  for (Group& gr : groups_) ++gr.version;
}

void Zero3Storage::zero_grads() {
  flush();
  for (Group& gr : groups_)
    if (gr.g_shard.numel()) backend_.zero(gr.g_shard);
}

void Zero3Storage::materialize(bool trainable_only) {
  LL_CHECK(!materialized_, "ZeRO-3: materialize() while already materialized");
  flush();
  materialized_ = std::make_unique<Arena>(backend_, "zero-3 materialized");
  std::vector<std::pair<Param*, Arena::Handle>> handles;
  for (Group& gr : groups_) {
    for (Param* p : gr.trainable) handles.push_back({p, materialized_->reserve(p->value.dtype, p->shape)});
    if (!trainable_only)
      for (Param* p : gr.frozen) handles.push_back({p, materialized_->reserve(p->value.dtype, p->shape)});
  }
  materialized_->commit();
  std::vector<std::pair<Param*, Tensor>> copies;
  for (int g = kOuterGroup; g < params_.num_layers(); ++g) {
    acquire(g);
    for (auto& [p, handle] : handles)
      if (p->layer == g) {
        const Tensor dst = materialized_->tensor(handle);
        backend_.copy(dst, p->value);
        copies.push_back({p, dst});
      }
    release(g);
  }
  for (auto& [p, dst] : copies) p->value.data = dst.data;
}

void Zero3Storage::dematerialize() {
  for (Group& gr : groups_) unpoint(gr);
  materialized_.reset();
}

std::vector<Tensor> Zero3Storage::grad_shards() const {
  std::vector<Tensor> out;
  for (const Group& gr : groups_)
    if (gr.g_shard.numel()) out.push_back(gr.g_shard);
  return out;
}

size_t Zero3Storage::shard_bytes() const { return shards_->bytes(); }
size_t Zero3Storage::staging_bytes() const { return staging_->bytes(); }

}  // namespace ll
