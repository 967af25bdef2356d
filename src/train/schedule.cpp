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

double lr_factor(const ScheduleConfig& c, int64_t step) {
  const double s = double(step), w = double(c.warmup_steps), n = double(c.total_steps);
  if (c.kind == LrSchedule::Constant) return 1.0;
  if (step < c.warmup_steps) return s / std::max(1.0, w);
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
