#include "cuda/memory_report.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <vector>

namespace ll {

std::string format_gib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", double(bytes) / double(size_t(1) << 30));
  return buf;
}

std::string device_memory_shortfall(const DeviceMemoryNeeds& n, const DeviceMemorySettings& s, size_t free_bytes,
                                    size_t total_bytes, const std::string& device, size_t headroom) {
  const size_t usable = free_bytes > headroom ? free_bytes - headroom : 0;
  if (n.total() <= usable) return "";
  std::ostringstream os;
  os << "needs " << format_gib(n.total()) << " (frozen weights " << format_gib(n.frozen_weights)
     << ", trainable weights " << format_gib(n.trainable_weights) << ", gradients " << format_gib(n.gradients)
     << ", optimizer " << format_gib(n.optimizer) << ", activations " << format_gib(n.activations) << ", workspace "
     << format_gib(n.workspace) << (n.gather_slots ? ", ZeRO-3 gather slots " + format_gib(n.gather_slots) : "")
     << "), " << format_gib(free_bytes) << " free of " << format_gib(total_bytes) << " on "
     << device << " (" << format_gib(headroom) << " kept for the CUDA context)";

  const size_t fixed = n.total() - n.activations;
  std::vector<std::string> fits;
  if (fixed >= usable) {
    os << "; the weights and optimizer state alone (" << format_gib(fixed)
       << ") do not fit: shard them over more GPUs (ZeRO-3) or use a card with more memory";
    return os.str();
  }
  const size_t room = usable - fixed;
  const int64_t tokens = s.batch * s.seq_len;
  // The fewest recomputed layers (more than this plan's) whose activations fit.
  const std::vector<size_t>& by_k = s.activations_by_checkpoint_layers;
  const int64_t layers = int64_t(by_k.size()) - 1;
  const bool more_recomputation = layers > 0 && s.checkpoint_layers < layers;
  const size_t all_recomputed = more_recomputation ? by_k.back() : 0;
  bool recomputation_fits = false;
  if (more_recomputation)
    for (int64_t k = s.checkpoint_layers + 1; k <= layers; ++k)
      if (by_k[size_t(k)] <= room) {
        recomputation_fits = true;
        fits.push_back(k == layers ? "--gradient_checkpointing true (all " + std::to_string(layers) +
                                         " layers checkpointed, activations " + format_gib(by_k[size_t(k)]) + ")"
                                   : "--gradient_checkpointing " + std::to_string(k) + " (" + std::to_string(k) +
                                         " of " + std::to_string(layers) + " layers checkpointed, activations " +
                                         format_gib(by_k[size_t(k)]) + ")");
        break;
      }
  // Recomputation alone does not fit: offloading the checkpointed layers' inputs to host memory may.
  const std::vector<size_t>& off = s.offloaded_activations_by_checkpoint_layers;
  const std::vector<size_t>& off_host = s.offloaded_host_by_checkpoint_layers;
  bool offload_fits = false;
  if (!s.offload_checkpoints && !recomputation_fits && off.size() == off_host.size())
    for (int64_t k = std::max<int64_t>(s.checkpoint_layers, 1); k < int64_t(off.size()); ++k)
      if (off[size_t(k)] <= room) {
        offload_fits = true;
        const int64_t all = int64_t(off.size()) - 1;
        fits.push_back("--gradient_checkpointing " + (k == all ? std::string("true") : std::to_string(k)) +
                       " --offload_checkpoints true (" + std::to_string(k) + " of " + std::to_string(all) +
                       " layers checkpointed, their inputs in host memory: activations " + format_gib(off[size_t(k)]) +
                       " on the device, " + format_gib(off_host[size_t(k)]) + " of host memory)");
        break;
      }
  // Neither fits: the MLP over row tiles (with everything recomputed and offloaded) may.
  if (s.mlp_tile_rows == 0 && s.tiled_mlp_rows > 0 && !recomputation_fits && !offload_fits &&
      s.tiled_activations <= room)
    fits.push_back("--gradient_checkpointing true --offload_checkpoints true --mlp_tile_rows " +
                   std::to_string(s.tiled_mlp_rows) + " (every layer checkpointed, their inputs in host memory, the "
                   "MLP over tiles of " + std::to_string(s.tiled_mlp_rows) + " tokens: activations " +
                   format_gib(s.tiled_activations) + " on the device, " + format_gib(s.tiled_host) +
                   " of host memory)");
  if (tokens > 0 && n.activations > 0) {
    // Largest token count at the same per-token activation cost.
    const double per_token = double(n.activations) / double(tokens);
    const int64_t max_tokens = int64_t(double(room) / per_token);
    if (s.batch > 1 && max_tokens >= s.seq_len)
      fits.push_back("--per_device_train_batch_size " + std::to_string(max_tokens / s.seq_len));
    else if (max_tokens >= 1) {
      const int64_t max_len = max_tokens / s.batch;
      if (max_len >= 1) fits.push_back("--model_max_length " + std::to_string(max_len) + " or less");
    }
    if (all_recomputed > 0) {
      const double per_token_ckpt = double(all_recomputed) / double(tokens);
      const int64_t ckpt_tokens = int64_t(double(room) / per_token_ckpt);
      if (ckpt_tokens / s.batch > max_tokens / s.batch && ckpt_tokens / s.batch >= 1 && all_recomputed > room)
        fits.push_back("--gradient_checkpointing true with --model_max_length " +
                       std::to_string(ckpt_tokens / s.batch) + " or less");
    }
  }
  if (fits.empty()) {
    os << "; no setting of this run fits: use a card with more memory or shard over more GPUs";
  } else {
    os << "; would fit: ";
    for (size_t i = 0; i < fits.size(); ++i) os << (i ? ", or " : "") << fits[i];
  }
  return os.str();
}

std::string device_allocation_failure(size_t requested, size_t free_bytes, size_t total_bytes, size_t in_use,
                                      const std::string& device, const std::string& what) {
  std::ostringstream os;
  os << "out of device memory: needs " << format_gib(requested) << " for " << what << ", " << format_gib(free_bytes)
     << " free of " << format_gib(total_bytes) << " on " << device << " (" << format_gib(in_use)
     << " already allocated by this process). Reduce --model_max_length or --per_device_train_batch_size, or turn "
        "on --gradient_checkpointing; the memory plan printed at start-up shows where the bytes go";
  return os.str();
}

}  // namespace ll
