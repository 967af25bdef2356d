// The start-up device-memory check of a training run: what one rank will hold (weights, trainable copies,
// gradients, optimizer state, activations) planned from the options before anything large is allocated, compared
// with what the device has free. A run that cannot fit stops here with "needs X GiB, Y free" and the settings that
// would fit, instead of failing at some allocation later.
#pragma once
#include <string>
#include <vector>

#include "core/backend.h"
#include "cuda/memory_report.h"
#include "model/model.h"
#include "util/host_memory.h"  // available_host_memory

namespace ll {

// One rank's planned bytes under `zero_stage` over `ranks` ranks, as the engine lays them out: ZeRO-2 divides the
// optimizer state (f32 Adam moments, plus f32 masters when weights are not f32); ZeRO-3 holds the shards and
// gather slots of Zero3Storage::plan_bytes (its weight shards under frozen_weights). `workspace` is left 0.
DeviceMemoryNeeds plan_rank_memory(Backend& backend, const ModelOptions& options, int zero_stage, int ranks);

// The longest sequence length, a multiple of `step` and at most `limit`, at which one rank's plan (options with
// seq_len replaced) needs at most `available_bytes`; 0 when even `step` tokens do not fit. The plan grows with the
// length, so this bisects over plans — no allocation, no step run.
int64_t longest_fitting_seq_len(Backend& backend, const ModelOptions& options, int zero_stage, int ranks,
                                size_t available_bytes, int64_t step = 4096, int64_t limit = int64_t(1) << 22);

// Bytes one rank's plan (plan_rank_memory, without workspace) may take on the device: the free memory less the
// headroom kDeviceMemoryHeadroom (the same test as check_device_memory's).
size_t plan_budget(const DeviceMemoryState& state);

// --gradient_checkpointing auto: how many layers (the first ones) this run recomputes in backward
// (options.checkpoint_layers ignored). Device backends: the fewest whose plan fits plan_budget — 0 when the plan
// without recomputation fits, num_hidden_layers when only that fits or nothing does (check_device_memory then
// stops the run with its advice). The plan shrinks as k grows, so this bisects over plans. `why` says what was
// compared ("plan without: X GiB, with k: Y GiB, budget Z GiB on <device>").
// Host backends: every layer (host memory is not checked, and recomputation keeps it bounded).
int64_t checkpoint_layers_needed(Backend& backend, const ModelOptions& options, int zero_stage, int ranks,
                                 std::string* why);

// Activation bytes of the plan with its first k layers recomputed, for k = 0..num_hidden_layers.
std::vector<size_t> activations_by_checkpoint_layers(Backend& backend, const ModelOptions& options);

// --offload_checkpoints: throws ll::Error naming the flag when `ranks_on_host` ranks' host staging of `host_bytes`
// each (MemoryPlan::host_staging) exceeds `available_bytes` (0: unknown, no check).
void check_host_memory(size_t host_bytes, int ranks_on_host, size_t available_bytes);

// Host backends (CPU ranks): throws ll::Error when `ranks_on_host` ranks' plans (plan_rank_memory each) exceed
// `available_bytes` (0: unknown, no check), naming the parts and the sizes that drive them, before anything large is
// allocated (a bad_alloc later would not say what asked for the memory). Device backends: no check here.
void check_host_backend_memory(Backend& backend, const ModelOptions& options, int zero_stage, int ranks,
                               int ranks_on_host, size_t available_bytes);

// The MLP tile the memory advice names (--mlp_tile_rows) when nothing else fits a run of more tokens than this: the
// MLP's tile buffers then take 8192 × intermediate_size × 3 elements (Llama-2-7B, bf16: 0.5 GiB).
constexpr int64_t kAdvisedMlpTileRows = 8192;

// Device backends: throws ll::Error with device_memory_shortfall's message when the plan does not fit the free
// memory (what the backend already holds counts as workspace and as free). Host backends: no check. Returns the
// plan (for printing).
DeviceMemoryNeeds check_device_memory(Backend& backend, const ModelOptions& options, int zero_stage, int ranks);

}  // namespace ll
