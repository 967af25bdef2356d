#include "mpi/zero.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/param_io.h"
#include "io/safetensors.h"
#include "core/tensor_host.h"

namespace ll {

namespace {

std::string shard_file(const std::string& dir, int rank, int world) {
  return dir + "/optimizer-shard-" + std::to_string(rank) + "-of-" + std::to_string(world) + ".safetensors";
}

}  // namespace

DistributedOptimizer::DistributedOptimizer(Backend& backend, ParamStore& params, Comm& comm,
                                           const AdamWConfig& config, int stage, Zero3Storage* zero3,
                                           int64_t bucket_elems)
    : backend_(backend), params_(params), comm_(comm), config_(config), stage_(stage), zero3_(zero3) {
  LL_CHECK(stage == 0 || stage == 2 || stage == 3, "ZeRO stage ", stage, " does not exist (0, 2 or 3)");
  LL_CHECK((stage == 3) == (zero3 != nullptr), "ZeRO-3 needs its parameter storage, and only ZeRO-3 has one");
  if (stage == 0) {
    full_ = std::make_unique<AdamW>(backend, params, config);
    masters_ = full_->has_masters();
    return;
  }
  const DTypePolicy dt = backend.dtypes();
  masters_ = dt.weight != dt.grad;
  LL_CHECK(!masters_ || dt.grad == DType::F32, "ZeRO-", stage, ": backend `", backend.name(), "` stores weights as ",
           dtype_name(dt.weight), " and gradients as ", dtype_name(dt.grad), "; master shards are kept in f32, so "
           "the gradients must be f32 too");
  arena_ = std::make_unique<Arena>(backend, "zero shard state");
  struct Planned {
    Param* param;
    int64_t param_begin, count;
    Tensor value, grad;        // stage 3: the storage's shards
    int64_t shard_offset = 0;  // stage 2: where the piece's gradient sits in the reduced shard
    int bucket = 0;
  };
  std::vector<Planned> planned;
  Arena::Handle grad_handle;
  if (stage == 2) {
    std::vector<Zero2Param> layout;
    std::vector<Param*> trainable;
    for (Param& p : params.all()) {
      if (!p.trainable) continue;
      layout.push_back({params.grad_offset(p), params.trainable_offset(p), p.numel(), p.layer});
      trainable.push_back(&p);
    }
    const int64_t buckets = bucket_elems > 0 ? bucket_elems : comm.asynchronous() ? kDefaultBucketElems : 0;
    plan_ = plan_zero2(layout, params.flat_grads().numel(), params.flat_trainable().numel(), buckets, comm.size(),
                       comm.rank(), params.num_layers());
    grad_handle = arena_->reserve(dt.grad, {std::max<int64_t>(plan_.shard_elems, 1)});
    const Tensor weights = params.flat_trainable();
    for (const Zero2Piece& z : plan_.pieces)
      planned.push_back({trainable[size_t(z.param)], z.param_begin, z.count, weights.elements(z.weight_offset, z.count),
                         {}, z.shard_offset, z.bucket});
    bucket_reduce_.resize(plan_.buckets.size());
    bucket_started_.assign(plan_.buckets.size(), false);
  } else {
    for (const Zero3Storage::Segment& s : zero3->segments())
      planned.push_back({s.param, s.param_begin, s.count, s.value, s.grad, 0, 0});
  }
  struct Handles {
    Arena::Handle m, v, master;
  };
  std::vector<Handles> handles;
  for (const Planned& p : planned) {
    Handles h;
    h.m = arena_->reserve(dt.grad, {p.count});
    h.v = arena_->reserve(dt.grad, {p.count});
    if (masters_) h.master = arena_->reserve(DType::F32, {p.count});
    handles.push_back(h);
  }
  arena_->commit();
  if (stage == 2) shard_grad_ = arena_->tensor(grad_handle).elements(0, plan_.shard_elems);
  for (size_t i = 0; i < planned.size(); ++i) {
    const Planned& p = planned[i];
    const Tensor grad = stage == 2 ? shard_grad_.elements(p.shard_offset, p.count) : p.grad;
    const Tensor master = masters_ ? arena_->tensor(handles[i].master) : Tensor();
    pieces_.push_back({p.param, p.param_begin, p.count, p.value, grad, arena_->tensor(handles[i].m),
                       arena_->tensor(handles[i].v), master, weight_decay_applies(*p.param), p.bucket});
    // The masters start as the widened working weights (loaded or initialised before the optimizer is built).
    if (masters_) backend_.convert(master, p.value);
  }
  if (stage == 2) params_.set_backward_hook([this](int group) { on_backward_done(group); });
}

DistributedOptimizer::~DistributedOptimizer() {
  if (stage_ == 2) params_.set_backward_hook(nullptr);
}

void DistributedOptimizer::set_steps_taken(int64_t s) {
  if (full_) full_->set_steps_taken(s);
  step_ = s;
}

size_t DistributedOptimizer::state_bytes() const { return full_ ? full_->state_bytes() : arena_->bytes(); }

std::vector<Tensor> DistributedOptimizer::local_grads() const {
  if (stage_ == 2) return {shard_grad_};
  return zero3_->grad_shards();
}

void DistributedOptimizer::begin_micro_batch(bool last) { reduce_in_backward_ = last && stage_ == 2; }

void DistributedOptimizer::start_bucket_reduce(size_t k) {
  const Zero2Bucket& b = plan_.buckets[k];
  const Tensor shard = shard_grad_.elements(b.shard_offset, b.counts[size_t(comm_.rank())]);
  const Tensor full = params_.flat_grads().elements(b.grad_begin, b.grad_count);
  if (comm_.size() == 1)
    backend_.copy(shard, full);  // one rank: the "reduction" is a copy (device buffers never go through a host comm)
  else
    bucket_reduce_[k] = comm_.start_reduce_scatter_sum(shard, full, b.counts);
  bucket_started_[k] = true;
}

void DistributedOptimizer::on_backward_done(int group) {
  if (!reduce_in_backward_) return;
  for (size_t k = 0; k < plan_.buckets.size(); ++k)
    if (!bucket_started_[k] && plan_.buckets[k].ready_group == group) start_bucket_reduce(k);
}

double DistributedOptimizer::reduce_and_clip(double max_norm) {
  const double inv_world = 1.0 / double(comm_.size());
  if (stage_ == 0) {
    if (comm_.size() > 1) {
      Tensor g = params_.flat_grads();
      comm_.all_reduce_sum(g);
      backend_.scale(g, inv_world);
    }
    return full_->clip_grad_norm(max_norm);
  }
  if (stage_ == 2) {
    // Buckets not started during backward (no begin_micro_batch(true), or a group without backward_done) now.
    for (size_t k = 0; k < plan_.buckets.size(); ++k)
      if (!bucket_started_[k]) start_bucket_reduce(k);
    for (size_t k = 0; k < plan_.buckets.size(); ++k) {
      comm_.wait(bucket_reduce_[k]);
      bucket_reduce_[k] = {};
      bucket_started_[k] = false;
    }
    reduce_in_backward_ = false;
  } else {
    zero3_->flush();  // stage 3: the gradients were reduce-scattered during backward; make sure they arrived
  }
  double local = 0;
  for (const Tensor& g : local_grads()) {
    backend_.scale(g, inv_world);
    local += backend_.sum_squares(g);
  }
  const double norm = std::sqrt(comm_.all_reduce_sum(local));
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm)
    for (const Tensor& g : local_grads()) backend_.scale(g, max_norm / (norm + 1e-6));
  return norm;
}

void DistributedOptimizer::step(double lr) {
  ++step_;
  if (stage_ == 0) return full_->step(lr);
  auto update = [&](const Piece& p) {
    const AdamWStep st{lr, config_.beta1, config_.beta2, config_.eps, p.decay ? config_.weight_decay : 0.0, step_};
    backend_.adamw_step(p.value, p.master, p.grad, p.m, p.v, st);
  };
  if (stage_ == 3) {
    for (const Piece& p : pieces_) update(p);
    zero3_->shards_changed();
    return;
  }
  // Stage 2: bucket by bucket, so the gather of one bucket overlaps the update of the next (asynchronous comms).
  std::vector<CommRequest> gathers;
  size_t next = 0;
  const Tensor weights = params_.flat_trainable();
  for (size_t k = 0; k < plan_.buckets.size(); ++k) {
    for (; next < pieces_.size() && pieces_[next].bucket == int(k); ++next) update(pieces_[next]);
    const Zero2Bucket& b = plan_.buckets[k];
    if (comm_.size() > 1)
      gathers.push_back(comm_.start_all_gather_in_place(weights.elements(b.weight_begin, b.weight_count),
                                                        b.weight_counts));
  }
  LL_CHECK(next == pieces_.size(), "ZeRO-2: pieces out of bucket order");
  for (const CommRequest& r : gathers) comm_.wait(r);
}

std::string DistributedOptimizer::first_nonfinite_weight() {
  const std::vector<Param>& all = params_.all();
  int64_t first = int64_t(all.size());  // index in params_.all() of the first non-finite parameter on this rank
  auto check = [&](const Param* p, const Tensor& updated) {
    const int64_t index = int64_t(p - all.data());
    if (index < first && !std::isfinite(backend_.sum_squares(updated))) first = index;
  };
  if (stage_ == 0) {
    for (const OptimizerSlot& s : full_->slots()) check(s.param, s.master.empty() ? s.param->value : s.master);
  } else {
    for (const Piece& p : pieces_) check(p.param, p.master.empty() ? p.value : p.master);
  }
  // The smallest index over the ranks (a max of negatives); exact in a double for any parameter count.
  first = -int64_t(comm_.all_reduce_max(-double(first)));
  return first < int64_t(all.size()) ? all[size_t(first)].name : "";
}

namespace {

// Whether any optimizer file of a checkpoint holds tensors named `which`/….
bool checkpoint_holds(const std::string& dir, const std::string& which) {
  const std::string prefix = which + "/";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name != "optimizer.safetensors" && name.rfind("optimizer-shard-", 0) != 0) continue;
    for (const std::string& key : SafetensorsFile(e.path().string()).names())
      if (key.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

}  // namespace

void DistributedOptimizer::save_moments(const std::string& dir) {
  std::vector<std::vector<unsigned char>> keep;
  std::vector<SafetensorsWriteItem> items;
  auto add = [&](const std::string& name, const Tensor& t) {
    keep.emplace_back(t.nbytes());
    backend_.copy_to_host(keep.back().data(), t);
    check_finite_values(keep.back().data(), t.dtype, {t.numel()}, dir, name,
                        "refusing to checkpoint a non-finite optimizer state (gradients overflowed: set --max_grad_norm "
                        "or lower --learning_rate)");
    items.push_back({name, t.dtype, {t.numel()}, keep.back().data()});
  };
  if (stage_ == 0) {
    if (comm_.rank() != 0) return;
    for (const OptimizerSlot& s : full_->slots()) {
      add("exp_avg/" + s.param->name, s.m);
      add("exp_avg_sq/" + s.param->name, s.v);
      if (!s.master.empty()) add("master/" + s.param->name, s.master);
    }
    write_safetensors(dir + "/optimizer.safetensors", items);
    return;
  }
  for (const Piece& p : pieces_) {
    const std::string suffix = p.param->name + "@" + std::to_string(p.param_begin);
    add("exp_avg/" + suffix, p.m);
    add("exp_avg_sq/" + suffix, p.v);
    if (!p.master.empty()) add("master/" + suffix, p.master);
  }
  write_safetensors(shard_file(dir, comm_.rank(), comm_.size()), items,
                    {{"world_size", std::to_string(comm_.size())}, {"zero_stage", std::to_string(stage_)}});
}

std::map<std::string, std::vector<double>> read_moments(const std::string& dir, const std::string& which,
                                                        ParamStore& params) {
  std::map<std::string, std::vector<double>> full;
  std::map<std::string, int64_t> covered;
  for (const Param& p : params.all())
    if (p.trainable) full[p.name].assign(size_t(p.numel()), 0.0), covered[p.name] = 0;
  std::vector<std::string> files;
  if (std::filesystem::exists(dir + "/optimizer.safetensors")) files.push_back(dir + "/optimizer.safetensors");
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().rfind("optimizer-shard-", 0) == 0) files.push_back(e.path().string());
  LL_CHECK(!files.empty(), "checkpoint `", dir, "` has no optimizer state (optimizer.safetensors or shards)");
  const std::string prefix = which + "/";
  for (const std::string& path : files) {
    const SafetensorsFile f(path);
    for (const std::string& key : f.names()) {
      if (key.rfind(prefix, 0) != 0) continue;
      std::string name = key.substr(prefix.size());
      int64_t begin = 0;
      if (const size_t at = name.rfind('@'); at != std::string::npos) {
        begin = std::stoll(name.substr(at + 1));
        name = name.substr(0, at);
      }
      const auto it = full.find(name);
      LL_CHECK(it != full.end(), "checkpoint `", path, "` holds moments of `", name,
               "`, which this run does not train");
      const SafetensorsEntry& e = f.entry(key);
      const int64_t n = int64_t(e.nbytes / dtype_size(e.dtype));
      LL_CHECK(begin >= 0 && begin + n <= int64_t(it->second.size()), "checkpoint `", path, "`: `", key,
               "` lies outside the parameter");
      convert_values(e.data, e.dtype, it->second.data() + begin, DType::F64, size_t(n));
      covered[name] += n;
    }
  }
  for (const auto& [name, n] : covered)
    LL_CHECK(n == int64_t(full[name].size()), "checkpoint `", dir, "`: the ", which, " moments of `", name,
             "` cover ", n, " of ", full[name].size(), " elements (a shard file is missing?)");
  return full;
}

void DistributedOptimizer::load_moments(const std::string& dir) {
  for (const char* which : {"exp_avg", "exp_avg_sq"}) {
    const auto moments = read_moments(dir, which, params_);
    const bool first = std::strcmp(which, "exp_avg") == 0;
    if (stage_ == 0) {
      for (OptimizerSlot& s : full_->slots()) upload_f64(backend_, first ? s.m : s.v, moments.at(s.param->name));
      continue;
    }
    for (const Piece& p : pieces_)
      upload_f64(backend_, first ? p.m : p.v, moments.at(p.param->name).data() + p.param_begin);
  }
  if (!masters_) return;
  // f32 masters: the checkpoint's, re-cut for this run (exact resume); or, from a checkpoint without them, the
  // widened working weights that load_checkpoint has just restored (else the first step would continue from the
  // masters of the weights held before the restore).
  if (checkpoint_holds(dir, "master")) {
    const auto masters = read_moments(dir, "master", params_);
    if (stage_ == 0) {
      for (OptimizerSlot& s : full_->slots()) upload_f64(backend_, s.master, masters.at(s.param->name));
    } else {
      for (const Piece& p : pieces_) upload_f64(backend_, p.master, masters.at(p.param->name).data() + p.param_begin);
    }
  } else if (stage_ == 0) {
    full_->sync_masters();
  } else {
    for (const Piece& p : pieces_) backend_.convert(p.master, p.value);
  }
}

}  // namespace ll
