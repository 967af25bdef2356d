#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace ll {

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "constant_with_warmup") return LrSchedule::ConstantWithWarmup;
  if (name == "linear") return LrSchedule::Linear;
  if (name == "cosine") return LrSchedule::Cosine;
  fail("--lr_scheduler_type: unknown schedule `", name, "`; expected constant, constant_with_warmup, linear or cosine");
}

const char* lr_schedule_name(LrSchedule s) {
  switch (s) {
    case LrSchedule::Constant: return "constant";
    case LrSchedule::ConstantWithWarmup: return "constant_with_warmup";
    case LrSchedule::Linear: return "linear";
    case LrSchedule::Cosine: return "cosine";
  }
  return "?";
}

WarmupShape parse_warmup_shape(const std::string& name) {
  if (name == "linear") return WarmupShape::Linear;
  if (name == "deepspeed_log") return WarmupShape::DeepSpeedLog;
  if (name == "deepspeed_linear") return WarmupShape::DeepSpeedLinear;
  fail("--lr_warmup_type: unknown warmup `", name, "`; expected linear, deepspeed_log or deepspeed_linear");
}

double lr_factor(const ScheduleConfig& c, int64_t step) {
  const bool deepspeed = c.warmup != WarmupShape::Linear;
  const int64_t warmup = deepspeed ? std::max<int64_t>(2, c.warmup_steps) : c.warmup_steps;
  const double s = double(step), w = double(warmup), n = double(c.total_steps);
  if (c.kind == LrSchedule::Constant) return 1.0;
  if (step < warmup) {
    if (c.warmup == WarmupShape::DeepSpeedLog) return std::log(s + 1.0) / std::log(w);
    return s / std::max(1.0, w);
  }
  switch (c.kind) {
    case LrSchedule::ConstantWithWarmup: return 1.0;
    case LrSchedule::Linear: return std::max(0.0, (n - s) / std::max(1.0, n - w));
    case LrSchedule::Cosine: {
      const double progress = (s - w) / std::max(1.0, n - w);
      return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
    }
    default: return 1.0;
  }
}

}  // namespace ll
