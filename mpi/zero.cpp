#include "mpi/zero.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/safetensors.h"
#include "tensor_host.h"

namespace ll {

namespace {

Tensor range(const Tensor& flat, int64_t offset, int64_t count) {
  return Tensor(static_cast<char*>(flat.data) + offset * int64_t(dtype_size(flat.dtype)), flat.dtype, flat.device,
                {count});
}

std::string shard_file(const std::string& dir, int rank, int world) {
  return dir + "/optimizer-shard-" + std::to_string(rank) + "-of-" + std::to_string(world) + ".safetensors";
}

}  // namespace

DistributedOptimizer::DistributedOptimizer(Backend& backend, ParamStore& params, Comm& comm,
                                           const AdamWConfig& config, int stage, Zero3Storage* zero3)
    : backend_(backend), params_(params), comm_(comm), config_(config), stage_(stage), zero3_(zero3) {
  LL_CHECK(stage == 0 || stage == 2 || stage == 3, "ZeRO stage ", stage, " does not exist (0, 2 or 3)");
  LL_CHECK((stage == 3) == (zero3 != nullptr), "ZeRO-3 needs its parameter storage, and only ZeRO-3 has one");
  if (stage == 0) {
    full_ = std::make_unique<AdamW>(backend, params, config);
    return;
  }
  const DTypePolicy dt = backend.dtypes();
  LL_CHECK(dt.weight == dt.grad, "ZeRO-", stage, ": weights stored as ", dtype_name(dt.weight),
           " need fp32 master shards, which arrive with the NCCL path; this backend keeps ", dtype_name(dt.grad));
  arena_ = std::make_unique<Arena>(backend, "zero shard state");
  struct Planned {
    Param* param;
    int64_t param_begin, count;
    Tensor value, grad;        // stage 3: the storage's shards
    int64_t shard_offset = 0;  // stage 2: where the piece's gradient sits in the reduced shard
  };
  std::vector<Planned> planned;
  Arena::Handle grad_handle;
  if (stage == 2) {
    const Tensor flat = params.flat_grads();
    counts_ = even_split(flat.numel(), comm.size());
    const int64_t lo = split_offset(counts_, comm.rank()), n = counts_[comm.rank()];
    grad_handle = arena_->reserve(dt.grad, {std::max<int64_t>(n, 1)});
    for (Param& p : params.all()) {
      if (!p.trainable) continue;
      LL_CHECK(params.trainable_offset(p) == params.grad_offset(p), "ZeRO-2: weight and gradient arenas differ "
                                                                    "in layout at `", p.name, "`");
      const int64_t b = std::max(lo, params.grad_offset(p)), e = std::min(lo + n, params.grad_offset(p) + p.numel());
      if (b < e) planned.push_back({&p, b - params.grad_offset(p), e - b, range(params.flat_trainable(), b, e - b), {},
                                    b - lo});
    }
  } else {
    for (const Zero3Storage::Segment& s : zero3->segments())
      planned.push_back({s.param, s.param_begin, s.count, s.value, s.grad, 0});
  }
  std::vector<std::pair<Arena::Handle, Arena::Handle>> moments;
  for (const Planned& p : planned)
    moments.push_back({arena_->reserve(dt.grad, {p.count}), arena_->reserve(dt.grad, {p.count})});
  arena_->commit();
  if (stage == 2) shard_grad_ = range(arena_->tensor(grad_handle), 0, counts_[comm.rank()]);
  for (size_t i = 0; i < planned.size(); ++i) {
    const Planned& p = planned[i];
    const Tensor grad = stage == 2 ? range(shard_grad_, p.shard_offset, p.count) : p.grad;
    pieces_.push_back({p.param, p.param_begin, p.count, p.value, grad, arena_->tensor(moments[i].first),
                       arena_->tensor(moments[i].second), !p.param->is_norm()});
  }
}

DistributedOptimizer::~DistributedOptimizer() = default;

void DistributedOptimizer::set_steps_taken(int64_t s) {
  if (full_) full_->set_steps_taken(s);
  step_ = s;
}

size_t DistributedOptimizer::state_bytes() const { return full_ ? full_->state_bytes() : arena_->bytes(); }

std::vector<Tensor> DistributedOptimizer::local_grads() const {
  if (stage_ == 2) return {shard_grad_};
  return zero3_->grad_shards();
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
  // Stage 3 gradients were reduce-scattered (summed) during backward; stage 2 reduces them now.
  if (stage_ == 2) comm_.reduce_scatter_sum(shard_grad_, params_.flat_grads(), counts_);
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
  for (const Piece& p : pieces_) {
    const AdamWStep st{lr, config_.beta1, config_.beta2, config_.eps, p.decay ? config_.weight_decay : 0.0, step_};
    backend_.adamw_step(p.value, Tensor(), p.grad, p.m, p.v, st);
  }
  if (stage_ == 2) comm_.all_gather_in_place(params_.flat_trainable(), counts_);
}

void DistributedOptimizer::save_moments(const std::string& dir) {
  std::vector<std::vector<unsigned char>> keep;
  std::vector<SafetensorsWriteItem> items;
  auto add = [&](const std::string& name, const Tensor& t) {
    keep.emplace_back(t.nbytes());
    backend_.copy_to_host(keep.back().data(), t);
    items.push_back({name, t.dtype, {t.numel()}, keep.back().data()});
  };
  if (stage_ == 0) {
    if (comm_.rank() != 0) return;
    for (const OptimizerSlot& s : full_->slots()) {
      add("exp_avg/" + s.param->name, s.m);
      add("exp_avg_sq/" + s.param->name, s.v);
    }
    write_safetensors(dir + "/optimizer.safetensors", items);
    return;
  }
  for (const Piece& p : pieces_) {
    const std::string suffix = p.param->name + "@" + std::to_string(p.param_begin);
    add("exp_avg/" + suffix, p.m);
    add("exp_avg_sq/" + suffix, p.v);
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
  // load_checkpoint has just restored the working weights: widen them into the f32 masters (bf16 backends, stage 0),
  // or the first step would continue from the masters of the weights held before the restore.
  if (stage_ == 0) full_->sync_masters();
}

}  // namespace ll
