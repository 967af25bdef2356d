#include "train/epoch_steps.h"

#include <algorithm>
#include <cmath>

namespace ll {

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

int64_t steps_for_epochs(double epochs, int64_t rows_per_epoch, int64_t rows_per_step) {
  return std::max<int64_t>(1, int64_t(std::ceil(epochs * double(rows_per_epoch) / double(rows_per_step))));
}

int64_t hf_trainer_steps_for_epochs(double epochs, int64_t rows_per_epoch, int64_t per_device_batch,
                                    int64_t accumulation, int64_t world_size) {
  // The per-rank dataloader's length (drop_last false: the last batch may be short), then its updates per epoch.
  const int64_t batches = ceil_div(rows_per_epoch, per_device_batch * world_size);
  const int64_t updates_per_epoch = std::max<int64_t>(ceil_div(batches, accumulation), 1);
  return int64_t(std::ceil(epochs * double(updates_per_epoch)));
}

}  // namespace ll
