#include "mpi/zero.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/safetensors.h"
#include "tensor_host.h"

namespace ll {

namespace {

// A 1-D view of `count` elements of a flat tensor starting at `offset`.
Tensor range(const Tensor& flat, int64_t offset, int64_t count) {
  return Tensor(static_cast<char*>(flat.data) + offset * int64_t(dtype_size(flat.dtype)), flat.dtype, flat.device,
                {count});
}

std::string shard_file(const std::string& dir, int rank, int world) {
  return dir + "/optimizer-shard-" + std::to_string(rank) + "-of-" + std::to_string(world) + ".safetensors";
}

}  // namespace

DistributedOptimizer::DistributedOptimizer(Backend& backend, ParamStore& params, Comm& comm,
                                           const AdamWConfig& config, int stage)
    : backend_(backend), params_(params), comm_(comm), config_(config), stage_(stage) {
  LL_CHECK(stage == 0 || stage == 2, "ZeRO stage ", stage, " is not implemented here (0 and 2 are)");
  if (stage == 0) {
    full_ = std::make_unique<AdamW>(backend, params, config);
    return;
  }
  const DTypePolicy dt = backend.dtypes();
  LL_CHECK(dt.weight == dt.grad, "ZeRO-2: weights stored as ", dtype_name(dt.weight), " need fp32 master shards, "
                                 "which arrive with the NCCL path; this backend keeps ", dtype_name(dt.grad));
  const Tensor flat = params.flat_grads();
  counts_ = even_split(flat.numel(), comm.size());
  shard_begin_ = split_offset(counts_, comm.rank());
  const int64_t n = counts_[comm.rank()], shard_end = shard_begin_ + n;
  arena_ = std::make_unique<Arena>(backend, "zero-2 shard");
  const auto hg = arena_->reserve(dt.grad, {std::max<int64_t>(n, 1)});
  const auto hm = arena_->reserve(dt.grad, {std::max<int64_t>(n, 1)});
  const auto hv = arena_->reserve(dt.grad, {std::max<int64_t>(n, 1)});
  arena_->commit();
  shard_grad_ = range(arena_->tensor(hg), 0, n);
  shard_m_ = range(arena_->tensor(hm), 0, n);
  shard_v_ = range(arena_->tensor(hv), 0, n);
  for (Param& p : params.all()) {
    if (!p.trainable) continue;
    LL_CHECK(params.trainable_offset(p) == params.grad_offset(p), "ZeRO-2: weight and gradient arenas differ in "
                                                                  "layout at `", p.name, "`");
    const int64_t b = std::max(shard_begin_, params.grad_offset(p));
    const int64_t e = std::min(shard_end, params.grad_offset(p) + p.numel());
    if (b < e) segments_.push_back({&p, b, e, !p.is_norm()});
  }
}

DistributedOptimizer::~DistributedOptimizer() = default;

int64_t DistributedOptimizer::steps_taken() const { return full_ ? full_->steps_taken() : step_; }
void DistributedOptimizer::set_steps_taken(int64_t s) {
  if (full_) full_->set_steps_taken(s);
  step_ = s;
}
size_t DistributedOptimizer::state_bytes() const { return full_ ? full_->state_bytes() : arena_->bytes(); }

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
  comm_.reduce_scatter_sum(shard_grad_, params_.flat_grads(), counts_);
  backend_.scale(shard_grad_, inv_world);
  const double norm = std::sqrt(comm_.all_reduce_sum(backend_.sum_squares(shard_grad_)));
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) backend_.scale(shard_grad_, max_norm / (norm + 1e-6));
  return norm;
}

void DistributedOptimizer::step(double lr) {
  if (stage_ == 0) {
    full_->step(lr);
    return;
  }
  ++step_;
  const Tensor weights = params_.flat_trainable();
  for (const Segment& s : segments_) {
    const int64_t n = s.end - s.begin, local = s.begin - shard_begin_;
    const AdamWStep st{lr, config_.beta1, config_.beta2, config_.eps, s.decay ? config_.weight_decay : 0.0, step_};
    backend_.adamw_step(range(weights, s.begin, n), Tensor(), range(shard_grad_, local, n), range(shard_m_, local, n),
                        range(shard_v_, local, n), st);
  }
  comm_.all_gather_in_place(params_.flat_trainable(), counts_);
}

void DistributedOptimizer::save_moments(const std::string& dir) {
  if (stage_ == 0) {
    if (comm_.rank() != 0) return;
    std::vector<std::vector<unsigned char>> keep;
    std::vector<SafetensorsWriteItem> items;
    for (const OptimizerSlot& s : full_->slots())
      for (auto [prefix, t] : {std::pair{"exp_avg/", &s.m}, {"exp_avg_sq/", &s.v}}) {
        keep.emplace_back(t->nbytes());
        backend_.copy_to_host(keep.back().data(), *t);
        items.push_back({prefix + s.param->name, t->dtype, t->dims(), keep.back().data()});
      }
    write_safetensors(dir + "/optimizer.safetensors", items);
    return;
  }
  std::vector<unsigned char> m(shard_m_.nbytes()), v(shard_v_.nbytes());
  backend_.copy_to_host(m.data(), shard_m_);
  backend_.copy_to_host(v.data(), shard_v_);
  const int64_t n = counts_[comm_.rank()];
  write_safetensors(shard_file(dir, comm_.rank(), comm_.size()),
                    {{"exp_avg", shard_m_.dtype, {n}, m.data()}, {"exp_avg_sq", shard_v_.dtype, {n}, v.data()}},
                    {{"offset", std::to_string(shard_begin_)},
                     {"total", std::to_string(params_.flat_grads().numel())},
                     {"world_size", std::to_string(comm_.size())}});
}

// One moment over the whole flat gradient arena, assembled from whatever form the checkpoint holds.
std::vector<double> DistributedOptimizer::read_full_moment(const std::string& dir, const char* which) {
  const int64_t total = params_.flat_grads().numel();
  std::vector<double> full(total, 0.0);
  const std::string per_param = dir + "/optimizer.safetensors";
  if (std::filesystem::exists(per_param)) {
    const SafetensorsFile f(per_param);
    for (Param& p : params_.all()) {
      if (!p.trainable) continue;
      const std::string name = std::string(which) + "/" + p.name;
      LL_CHECK(f.contains(name), "checkpoint `", per_param, "` has no `", name, "`");
      const SafetensorsEntry& e = f.entry(name);
      LL_CHECK(int64_t(e.nbytes / dtype_size(e.dtype)) == p.numel(), "checkpoint `", per_param, "`: `", name,
               "` has the wrong size");
      convert_values(e.data, e.dtype, full.data() + params_.grad_offset(p), DType::F64, size_t(p.numel()));
    }
    return full;
  }
  int world = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("optimizer-shard-", 0) == 0) ++world;
  }
  LL_CHECK(world > 0, "checkpoint `", dir, "` has no optimizer state (optimizer.safetensors or shards)");
  for (int r = 0; r < world; ++r) {
    const std::string path = shard_file(dir, r, world);
    LL_CHECK(std::filesystem::exists(path), "checkpoint `", dir, "` is missing `", path, "` of its ", world,
             " optimizer shards");
    const SafetensorsFile f(path);
    const int64_t offset = std::stoll(f.metadata().at("offset"));
    LL_CHECK(std::stoll(f.metadata().at("total")) == total, "checkpoint shard `", path, "` covers ",
             f.metadata().at("total"), " elements; this model's gradient arena has ", total);
    const SafetensorsEntry& e = f.entry(which);
    const int64_t n = int64_t(e.nbytes / dtype_size(e.dtype));
    LL_CHECK(offset >= 0 && offset + n <= total, "checkpoint shard `", path, "` lies outside the arena");
    convert_values(e.data, e.dtype, full.data() + offset, DType::F64, size_t(n));
  }
  return full;
}

void DistributedOptimizer::load_moments(const std::string& dir) {
  for (const char* which : {"exp_avg", "exp_avg_sq"}) {
    const std::vector<double> full = read_full_moment(dir, which);
    const bool first = std::strcmp(which, "exp_avg") == 0;
    if (stage_ == 0) {
      for (OptimizerSlot& s : full_->slots())
        upload_f64(backend_, first ? s.m : s.v, full.data() + params_.grad_offset(*s.param));
    } else {
      upload_f64(backend_, first ? shard_m_ : shard_v_, full.data() + shard_begin_);
    }
  }
}

}  // namespace ll
