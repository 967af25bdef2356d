// Device-memory budgeting: what a run plans to allocate, whether it fits the free memory cudaMemGetInfo reports,
// and — when it does not — a message "needs X GiB, Y free" with settings that would fit. Plain C++, tested on CPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ll {

struct DeviceMemoryNeeds {
  size_t frozen_weights = 0;     // bf16 base weights
  size_t trainable_weights = 0;  // working copies of trainable parameters
  size_t gradients = 0;          // f32 gradients of trainable parameters
  size_t optimizer = 0;          // f32 masters + Adam moments
  size_t activations = 0;        // the activation arena for (batch, seq_len, checkpointing)
  size_t workspace = 0;          // backend scratch (cuBLASLt workspace, reduction partials)
  size_t gather_slots = 0;       // ZeRO-3: the slots whole layers are gathered into (weights and gradients)
  size_t total() const {
    return frozen_weights + trainable_weights + gradients + optimizer + activations + workspace + gather_slots;
  }
};

// What the suggestions may change. Activations are taken to scale linearly with batch·seq_len (true for the
// planned arena: every tensor in it is [T, ·] or [B, H, L]), and checkpointing keeps only the layer inputs.
struct DeviceMemorySettings {
  int64_t batch = 1;
  int64_t seq_len = 0;
  int64_t checkpoint_layers = 0;  // layers this plan recomputes in backward (the first ones)
  // activations_by_checkpoint_layers[k]: the activation bytes the same run would plan with its first k layers
  // recomputed, k = 0..num_hidden_layers (empty: unknown, no checkpointing suggestion). Non-increasing in k.
  std::vector<size_t> activations_by_checkpoint_layers;
  // Whether this plan offloads the checkpointed layers' inputs to host memory (--offload_checkpoints true). When it
  // does not: the same run's device activation bytes and host bytes with the offload on, per k as above (empty:
  // unknown). When no recomputation count fits without the offload, the advice names the fewest k that fits with it.
  bool offload_checkpoints = false;
  std::vector<size_t> offloaded_activations_by_checkpoint_layers, offloaded_host_by_checkpoint_layers;
  // Whether this plan runs the MLP over row tiles (--mlp_tile_rows > 0). When it does not and tiled_mlp_rows > 0:
  // the device activation bytes and host bytes of the same run with every layer checkpointed, their inputs in host
  // memory and the MLP over tiles of tiled_mlp_rows rows — the advice when neither recomputation nor the offload
  // fits.
  int64_t mlp_tile_rows = 0;
  int64_t tiled_mlp_rows = 0;
  size_t tiled_activations = 0, tiled_host = 0;
};

// "12.3 GiB" with one decimal.
std::string format_gib(size_t bytes);

// Device memory kept free for the CUDA context and allocator slack.
constexpr size_t kDeviceMemoryHeadroom = size_t(512) << 20;

// Empty when `needs` fits into `free_bytes` minus `headroom` (CUDA context, allocator slack); otherwise one
// message: "needs X GiB (weights …, activations …), Y GiB free of Z GiB on <device>; would fit: …".
std::string device_memory_shortfall(const DeviceMemoryNeeds& needs, const DeviceMemorySettings& settings,
                                    size_t free_bytes, size_t total_bytes, const std::string& device,
                                    size_t headroom = kDeviceMemoryHeadroom);

// The message for a failed allocation inside the backend: "needs X GiB for <what>, Y GiB free of Z GiB on
// <device> (W GiB already allocated by this process)" and a hint.
std::string device_allocation_failure(size_t requested, size_t free_bytes, size_t total_bytes, size_t in_use,
                                      const std::string& device, const std::string& what);

}  // namespace ll
