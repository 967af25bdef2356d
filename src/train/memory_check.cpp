#include "train/memory_check.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "model/params.h"
#include "model/registry.h"
#include "mpi/zero3.h"
#include "util/error.h"

namespace ll {

namespace {
size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }
}  // namespace

DeviceMemoryNeeds plan_rank_memory(Backend& backend, const ModelOptions& options, int zero_stage, int ranks) {
  LL_CHECK(zero_stage == 0 || zero_stage == 2 || zero_stage == 3, "ZeRO stage must be 0, 2 or 3, got ", zero_stage);
  LL_CHECK(ranks >= 1, "memory plan: ranks must be >= 1, got ", ranks);
  const MemoryPlan plan = Model::plan_memory(backend, options);
  const DTypePolicy dt = backend.dtypes();
  const size_t N = size_t(ranks);

  int64_t trainable_elems = 0;
  ParamStore shapes(backend, options.config, options.lora, options.trainable, /*external_storage=*/true);
  for (const Param& p : shapes.all())
    if (p.trainable) trainable_elems += p.value.numel();
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
  // ZeRO-3: the storage's own layout, planned without allocating (its weight shards hold trainable and frozen
  // elements together).
  const Zero3Storage::PlannedBytes z = Zero3Storage::plan_bytes(backend, shapes, ranks);
  n.frozen_weights = z.weight_shards;
  n.gradients = z.grad_shards;
  n.gather_slots = z.staging;
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

int64_t checkpoint_layers_needed(Backend& backend, const ModelOptions& options, int zero_stage, int ranks,
                                 std::string* why) {
  const int64_t layers = options.config.num_hidden_layers;
  DeviceMemoryState state;
  if (!backend.device_memory(&state)) {
    if (why) *why = "host backend";
    return layers;
  }
  const size_t budget = plan_budget(state);
  auto need = [&](int64_t k) {
    ModelOptions o = options;
    o.checkpoint_layers = k;
    return plan_rank_memory(backend, o, zero_stage, ranks).total();
  };
  const size_t without = need(0);
  int64_t chosen = 0;
  if (without > budget) {
    // need(k) is non-increasing in k: bisect for the first k that fits (layers when none does).
    int64_t lo = 0, hi = layers;  // need(lo) > budget; hi fits or is the last resort
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      (need(mid) <= budget ? hi : lo) = mid;
    }
    chosen = hi;
  }
  if (why) {
    *why = str_cat("plan without: ", format_gib(without));
    if (chosen > 0) {
      const size_t with = need(chosen);
      *why += str_cat(", with ", chosen, ": ", format_gib(with), with > budget ? " (does not fit either)" : "");
    }
    *why += str_cat(", budget ", format_gib(budget), " on ", state.device);
  }
  return chosen;
}

std::vector<size_t> activations_by_checkpoint_layers(Backend& backend, const ModelOptions& options) {
  std::vector<size_t> bytes;
  for (int64_t k = 0; k <= options.config.num_hidden_layers; ++k) {
    ModelOptions o = options;
    o.checkpoint_layers = k;
    bytes.push_back(Model::plan_memory(backend, o).activations);
  }
  return bytes;
}

void check_host_memory(size_t host_bytes, int ranks_on_host, size_t available_bytes) {
  if (host_bytes == 0 || available_bytes == 0) return;
  const size_t all = host_bytes * size_t(std::max(ranks_on_host, 1));
  LL_CHECK(all <= available_bytes, "--offload_checkpoints true: the offloaded layer inputs need ",
           format_gib(host_bytes), " of host memory",
           ranks_on_host > 1 ? str_cat(" per rank (", format_gib(all), " for the ", ranks_on_host,
                                       " ranks on this host)")
                             : std::string(),
           ", but only ", format_gib(available_bytes),
           " is available (MemAvailable); checkpoint fewer layers (--gradient_checkpointing), shorten "
           "--model_max_length, or set --offload_checkpoints false");
}

void check_host_backend_memory(Backend& backend, const ModelOptions& options, int zero_stage, int ranks,
                               int ranks_on_host, size_t available_bytes) {
  DeviceMemoryState state;
  if (backend.device_memory(&state) || available_bytes == 0) return;
  const DeviceMemoryNeeds n = plan_rank_memory(backend, options, zero_stage, ranks);
  const size_t all = n.total() * size_t(std::max(ranks_on_host, 1));
  if (all <= available_bytes) return;
  const ModelConfig& c = options.config;
  fail("this run needs ", format_gib(n.total()), " of host memory",
       ranks_on_host > 1 ? str_cat(" per rank (", format_gib(all), " for the ", ranks_on_host, " ranks on this host)")
                         : std::string(),
       " — frozen weights ", format_gib(n.frozen_weights), ", trainable weights ", format_gib(n.trainable_weights),
       ", gradients ", format_gib(n.gradients), ", optimizer state ", format_gib(n.optimizer), ", activations ",
       format_gib(n.activations + n.gather_slots), " (vocab_size ", c.vocab_size, ", hidden_size ", c.hidden_size,
       ", num_hidden_layers ", c.num_hidden_layers, ", ", options.batch, " × ", options.seq_len,
       " tokens per micro-batch) — but only ", format_gib(available_bytes),
       " is available (MemAvailable); use --device cuda, fewer tokens per micro-batch (--model_max_length, "
       "--per_device_train_batch_size), or more ranks with --zero_stage 3");
}

DeviceMemoryNeeds check_device_memory(Backend& backend, const ModelOptions& options, int zero_stage, int ranks) {
  DeviceMemoryNeeds needs = plan_rank_memory(backend, options, zero_stage, ranks);
  DeviceMemoryState state;
  if (!backend.device_memory(&state)) return needs;
  needs.workspace = state.in_use_bytes;
  DeviceMemorySettings settings;
  settings.batch = options.batch;
  settings.seq_len = options.seq_len;
  settings.checkpoint_layers = options.checkpoint_layers;
  settings.offload_checkpoints = options.offload_checkpoints && options.checkpoint_layers > 0;
  settings.mlp_tile_rows = options.mlp_tile_rows;
  // What the backend already holds is part of the run (workspace) and of the memory it may use.
  const size_t usable = state.free_bytes + state.in_use_bytes;
  std::string shortfall = device_memory_shortfall(needs, settings, usable, state.total_bytes, state.device);
  if (!shortfall.empty()) {
    // It does not fit: plan every recomputation count for the advice (the fewest recomputed layers that fit), and
    // with the checkpointed layers' inputs offloaded to host memory when the run does not offload them already.
    if (options.checkpoint_layers < options.config.num_hidden_layers)
      settings.activations_by_checkpoint_layers = activations_by_checkpoint_layers(backend, options);
    if (!settings.offload_checkpoints) {
      ModelOptions off = options;
      off.offload_checkpoints = true;
      for (int64_t k = 0; k <= options.config.num_hidden_layers; ++k) {
        off.checkpoint_layers = k;
        const MemoryPlan p = Model::plan_memory(backend, off);
        settings.offloaded_activations_by_checkpoint_layers.push_back(p.activations);
        settings.offloaded_host_by_checkpoint_layers.push_back(p.host_staging);
      }
    }
    // And with the MLP over row tiles too (only worth it when a tile is shorter than the micro-batch).
    if (options.mlp_tile_rows == 0 && options.batch * options.seq_len > kAdvisedMlpTileRows &&
        has_mlp_tiles(architecture_for(options.config.model_type).activation_schema(options.config))) {
      ModelOptions tiled = options;
      tiled.checkpoint_layers = options.config.num_hidden_layers;
      tiled.offload_checkpoints = true;
      tiled.mlp_tile_rows = kAdvisedMlpTileRows;
      const MemoryPlan p = Model::plan_memory(backend, tiled);
      settings.tiled_mlp_rows = kAdvisedMlpTileRows;
      settings.tiled_activations = p.activations;
      settings.tiled_host = p.host_staging;
    }
    shortfall = device_memory_shortfall(needs, settings, usable, state.total_bytes, state.device);
  }
  LL_CHECK(shortfall.empty(), "this run does not fit in device memory: ", shortfall);
  return needs;
}

}  // namespace ll
