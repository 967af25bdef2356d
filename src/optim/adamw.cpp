#include "optim/adamw.h"

#include <cmath>

namespace ll {

AdamW::AdamW(Backend& backend, ParamStore& params, const AdamWConfig& config)
    : backend_(backend), config_(config), arena_(std::make_unique<Arena>(backend, "optimizer state")) {
  const DTypePolicy dt = backend.dtypes();
  // Weights stored below the gradient precision (bf16 vs f32) train through f32 masters.
  has_masters_ = dt.weight != dt.grad;
  LL_CHECK(!has_masters_ || dt.grad == DType::F32, "AdamW: backend `", backend.name(), "` stores weights as ",
           dtype_name(dt.weight), " and gradients as ", dtype_name(dt.grad), "; masters are kept in f32, so the "
           "gradients must be f32 too");
  struct Handles {
    Arena::Handle m, v, master;
  };
  std::vector<Handles> handles;
  for (Param& p : params.all()) {
    if (!p.trainable) continue;
    Handles h;
    h.m = arena_->reserve(dt.grad, p.shape);
    h.v = arena_->reserve(dt.grad, p.shape);
    if (has_masters_) h.master = arena_->reserve(DType::F32, p.shape);
    handles.push_back(h);
    slots_.push_back({&p, {}, {}, {}, weight_decay_applies(p)});
  }
  arena_->commit();
  for (size_t i = 0; i < slots_.size(); ++i) {
    slots_[i].m = arena_->tensor(handles[i].m);
    slots_[i].v = arena_->tensor(handles[i].v);
    if (has_masters_) slots_[i].master = arena_->tensor(handles[i].master);
  }
  sync_masters();
}

void AdamW::sync_masters() {
  for (OptimizerSlot& s : slots_)
    if (!s.master.empty()) backend_.convert(s.master, s.param->value);
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
