// AdamW over the trainable parameters of a ParamStore, with global-norm gradient clipping.
// Moments (and fp32 masters when the backend stores weights in lower precision) live in one arena laid out
// like the trainable-weight arena, so a ZeRO shard will be one slice of it. Frozen parameters have no state.
// Mixed precision (CUDA: bf16 weights, f32 gradients): each trainable parameter gets an f32 master, initialised by
// a widening copy of its working weights; the update runs on the master and the working copy is its bf16 rounding.
#pragma once
#include <memory>
#include <vector>

#include "core/backend.h"
#include "model/arena.h"
#include "model/params.h"

namespace ll {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// Hugging Face's Trainer decays every parameter except norm weights and biases.
inline bool weight_decay_applies(const Param& p) {
  return p.role != ParamRole::Norm && p.role != ParamRole::NormBias && p.role != ParamRole::Bias;
}

struct OptimizerSlot {
  Param* param;
  Tensor m, v;
  Tensor master;     // empty when the backend's weights are already the master copy
  bool decay;        // weight_decay_applies
};

class AdamW {
 public:
  AdamW(Backend& backend, ParamStore& params, const AdamWConfig& config);

  // √(Σ ‖g‖²) over all trainable gradients (deterministic); inf/NaN when any gradient is non-finite.
  double grad_norm();
  // Scales every gradient by max_norm/(norm + 1e-6) when norm > max_norm (torch.nn.utils.clip_grad_norm_).
  // Returns the norm before clipping.
  double clip_grad_norm(double max_norm);
  // One update of every trainable parameter at learning rate `lr`; increments step().
  void step(double lr);
  // Re-initialises the f32 masters from the working weights (a widening copy). The constructor does it; call it
  // again whenever the working weights are overwritten from outside (e.g. a checkpoint without masters).
  // No-op for backends whose weights are the master copy.
  void sync_masters();
  // Whether this optimizer keeps f32 masters (the backend stores weights below the gradient precision).
  bool has_masters() const { return has_masters_; }

  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  std::vector<OptimizerSlot>& slots() { return slots_; }
  size_t state_bytes() const { return arena_->bytes(); }

 private:
  Backend& backend_;
  AdamWConfig config_;
  std::unique_ptr<Arena> arena_;
  std::vector<OptimizerSlot> slots_;
  int64_t step_ = 0;
  bool has_masters_ = false;
};

}  // namespace ll
