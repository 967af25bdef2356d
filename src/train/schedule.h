// Learning-rate schedules with Hugging Face's definitions (transformers.optimization). The rate used by the
// optimizer step that follows `completed` optimizer steps is base_lr · factor(completed), exactly as a
// LambdaLR stepped after every optimizer step: with warmup, the very first update uses rate 0.
#pragma once
#include <cstdint>
#include <string>

namespace ll {

enum class LrSchedule { Constant, ConstantWithWarmup, Linear, Cosine };

LrSchedule parse_lr_schedule(const std::string& name);  // "constant", "constant_with_warmup", "linear", "cosine"
const char* lr_schedule_name(LrSchedule s);

struct ScheduleConfig {
  LrSchedule kind = LrSchedule::ConstantWithWarmup;
  double base_lr = 2e-5;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;  // num_training_steps (linear and cosine decay to 0 there)
};

double lr_factor(const ScheduleConfig& c, int64_t completed);
inline double lr_at(const ScheduleConfig& c, int64_t completed) { return c.base_lr * lr_factor(c, completed); }

}  // namespace ll
