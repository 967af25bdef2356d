#include "train/optimizer.h"

#include <cmath>

namespace ll {

AdamW::AdamW(Backend& backend, ParamStore& params, const AdamWConfig& config)
    : backend_(backend), config_(config), arena_(std::make_unique<Arena>(backend, "optimizer state")) {
  const DTypePolicy dt = backend.dtypes();
  // A backend storing weights below fp32 needs fp32 masters initialised by a widening copy; that op arrives
  // with the CUDA backend, so such backends are refused here rather than silently training in bf16.
  LL_CHECK(dt.weight == dt.grad, "AdamW: backend `", backend.name(), "` stores weights as ", dtype_name(dt.weight),
           " and gradients as ", dtype_name(dt.grad), "; fp32 master weights are not implemented yet");
  struct Handles {
    Arena::Handle m, v;
  };
  std::vector<Handles> handles;
  for (Param& p : params.all()) {
    if (!p.trainable) continue;
    Handles h;
    h.m = arena_->reserve(dt.grad, p.shape);
    h.v = arena_->reserve(dt.grad, p.shape);
    handles.push_back(h);
    slots_.push_back({&p, {}, {}, {}, !p.is_norm()});
  }
  arena_->commit();
  for (size_t i = 0; i < slots_.size(); ++i) {
    slots_[i].m = arena_->tensor(handles[i].m);
    slots_[i].v = arena_->tensor(handles[i].v);
  }
}

double AdamW::grad_norm() {
  double total = 0;
  for (OptimizerSlot& s : slots_) total += backend_.sum_squares(s.param->grad);
  return std::sqrt(total);
}

double AdamW::clip_grad_norm(double max_norm) {
  const double norm = grad_norm();
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) {
    const double coef = max_norm / (norm + 1e-6);
    for (OptimizerSlot& s : slots_) backend_.scale(s.param->grad, coef);
  }
  return norm;
}

void AdamW::step(double lr) {
  ++step_;
  for (OptimizerSlot& s : slots_) {
    AdamWStep st{lr, config_.beta1, config_.beta2, config_.eps, s.decay ? config_.weight_decay : 0.0, step_};
    backend_.adamw_step(s.param->value, s.master, s.param->grad, s.m, s.v, st);
  }
}

}  // namespace ll
