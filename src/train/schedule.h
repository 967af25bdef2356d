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

// The warmup's shape. Linear: Hugging Face's step / warmup_steps. DeepSpeed's WarmupLR / WarmupDecayLR (what a
// `--deepspeed` config's "scheduler" section selects instead of --lr_scheduler_type) warm up over
// W = max(2, warmup_steps) steps: DeepSpeedLog (its default) by log(step + 1) / log(W), DeepSpeedLinear by step / W.
// After the warmup DeepSpeed's WarmupLR is constant_with_warmup and WarmupDecayLR is linear (max(0, (T - step) /
// max(1, T - W))).
enum class WarmupShape { Linear, DeepSpeedLog, DeepSpeedLinear };
WarmupShape parse_warmup_shape(const std::string& name);  // "linear", "deepspeed_log", "deepspeed_linear"

struct ScheduleConfig {
  LrSchedule kind = LrSchedule::ConstantWithWarmup;
  double base_lr = 2e-5;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;  // num_training_steps (linear and cosine decay to 0 there)
  WarmupShape warmup = WarmupShape::Linear;
};

double lr_factor(const ScheduleConfig& c, int64_t completed);
inline double lr_at(const ScheduleConfig& c, int64_t completed) { return c.base_lr * lr_factor(c, completed); }

}  // namespace ll
