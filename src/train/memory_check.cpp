#include "train/memory_check.h"

#include <algorithm>
#include <map>

#include "model/params.h"
#include "util/error.h"

namespace ll {

namespace {
size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }
size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }
}  // namespace

DeviceMemoryNeeds plan_rank_memory(Backend& backend, const ModelOptions& options, int zero_stage, int ranks) {
  LL_CHECK(zero_stage == 0 || zero_stage == 2 || zero_stage == 3, "ZeRO stage must be 0, 2 or 3, got ", zero_stage);
  LL_CHECK(ranks >= 1, "memory plan: ranks must be >= 1, got ", ranks);
  const MemoryPlan plan = LlamaModel::plan_memory(backend, options);
  const DTypePolicy dt = backend.dtypes();
  const size_t N = size_t(ranks);

  int64_t trainable_elems = 0;
  const ParamStore shapes(backend, options.config, options.lora, options.trainable, /*external_storage=*/true);
  // ZeRO-3 gather slots: per group (each layer, and the embedding/final-norm/LM-head group) its weights and the
  // gradients of its trainable parameters.
  std::map<int, std::pair<size_t, size_t>> group_bytes;  // layer (−1: outer group) → (weights, grads)
  std::map<int, int64_t> group_trainable;                 // layer → trainable elements
  for (const Param& p : shapes.all()) {
    const int64_t n = p.value.numel();
    auto& g = group_bytes[p.layer];
    g.first += aligned(size_t(n) * dtype_size(dt.weight));
    if (p.trainable) {
      trainable_elems += n;
      group_trainable[p.layer] += n;
      g.second += aligned(size_t(n) * dtype_size(dt.grad));
    }
  }
  const size_t per_trainable = 2 * sizeof(float) + (dt.weight == DType::F32 ? 0 : sizeof(float));
  const size_t optimizer = size_t(trainable_elems) * per_trainable;

  DeviceMemoryNeeds n;
  n.activations = plan.activations;
  if (zero_stage < 3) {
    n.frozen_weights = plan.frozen_weights;
    n.trainable_weights = plan.trainable_weights;
    n.gradients = plan.gradients;
    n.optimizer = zero_stage == 2 ? ceil_div(optimizer, N) : optimizer;
    return n;
  }
  size_t layer_weights = 0, layer_grads = 0;
  for (const auto& [layer, wg] : group_bytes)
    if (layer >= 0) layer_weights = std::max(layer_weights, wg.first), layer_grads = std::max(layer_grads, wg.second);
  const auto outer = group_bytes.count(-1) ? group_bytes.at(-1) : std::pair<size_t, size_t>{0, 0};
  n.frozen_weights = ceil_div(plan.frozen_weights, N) + 2 * layer_weights + outer.first;
  n.trainable_weights = ceil_div(plan.trainable_weights, N);
  n.gradients = ceil_div(plan.gradients, N) + 2 * layer_grads + outer.second;
  if (dt.act == dt.grad) {  // f32 backends: each slot keeps a buffer for its reduction in flight (one rank's share)
    int64_t max_group = 1;
    for (const auto& [layer, elems] : group_trainable) max_group = std::max(max_group, elems);
    n.gradients += 3 * aligned(ceil_div(size_t(max_group), N) * dtype_size(dt.grad));
  }
  n.optimizer = ceil_div(optimizer, N);
  return n;
}

int64_t longest_fitting_seq_len(Backend& backend, const ModelOptions& options, int zero_stage, int ranks,
                                size_t available_bytes, int64_t step, int64_t limit) {
  LL_CHECK(step > 0 && limit >= step, "longest_fitting_seq_len: step ", step, " and limit ", limit);
  auto fits = [&](int64_t units) {
    ModelOptions o = options;
    o.seq_len = units * step;
    return plan_rank_memory(backend, o, zero_stage, ranks).total() <= available_bytes;
  };
  int64_t lo = 0, hi = limit / step + 1;  // fits(lo) (0: nothing), !fits(hi) (assumed past the limit)
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo * step;
}

size_t plan_budget(const DeviceMemoryState& state) {
  return state.free_bytes > kDeviceMemoryHeadroom ? state.free_bytes - kDeviceMemoryHeadroom : 0;
}

bool checkpointing_needed(Backend& backend, const ModelOptions& options, int zero_stage, int ranks, std::string* why) {
  DeviceMemoryState state;
  if (!backend.device_memory(&state)) {
    if (why) *why = "host backend";
    return true;
  }
  ModelOptions without = options;
  without.checkpointing = false;
  const size_t need = plan_rank_memory(backend, without, zero_stage, ranks).total();
  if (why)
    *why = str_cat("without it the run needs ", format_gib(need), " of ", format_gib(plan_budget(state)),
                   " available on ", state.device);
  return need > plan_budget(state);
}

DeviceMemoryNeeds check_device_memory(Backend& backend, const ModelOptions& options, int zero_stage, int ranks) {
  DeviceMemoryNeeds needs = plan_rank_memory(backend, options, zero_stage, ranks);
  DeviceMemoryState state;
  if (!backend.device_memory(&state)) return needs;
  needs.workspace = state.in_use_bytes;
  DeviceMemorySettings settings;
  settings.batch = options.batch;
  settings.seq_len = options.seq_len;
  settings.checkpointing = options.checkpointing;
  if (!options.checkpointing) {
    ModelOptions ckpt = options;
    ckpt.checkpointing = true;
    settings.activations_with_checkpointing = LlamaModel::plan_memory(backend, ckpt).activations;
  }
  // What the backend already holds is part of the run (workspace) and of the memory it may use.
  const std::string shortfall = device_memory_shortfall(needs, settings, state.free_bytes + state.in_use_bytes,
                                                        state.total_bytes, state.device);
  LL_CHECK(shortfall.empty(), "this run does not fit in device memory: ", shortfall);
  return needs;
}

}  // namespace ll
