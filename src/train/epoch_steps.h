// --num_train_epochs as a number of optimizer steps, ours and the Hugging Face Trainer's.
//
// Ours: every step reads rows_per_step full rows (batch × accumulation × ranks) and the last batch of an epoch wraps
// into the next (train/data.h: no padding rows, no short steps), so a run of E epochs takes ⌈E · rows /
// rows_per_step⌉ steps (at least 1): exactly E passes over the data, rounded up to a whole step.
//
// The Trainer instead ends every epoch with a short step (its last accumulation takes the leftover batches, the last
// batch the leftover rows), so it counts ⌈E · max(⌈batches / accumulation⌉, 1)⌉ steps with batches =
// ⌈rows / (batch × ranks)⌉ per rank. The two agree whenever an epoch is a whole number of steps and for one epoch
// or less; otherwise the Trainer runs a few more (shorter) steps. The difference is deliberate: full steps keep
// every update the same size and make resume a row position; build/train prints both counts when they differ.
#pragma once
#include <cstdint>

namespace ll {

// Ours: max(1, ⌈epochs · rows_per_epoch / rows_per_step⌉).
int64_t steps_for_epochs(double epochs, int64_t rows_per_epoch, int64_t rows_per_step);

// The Hugging Face Trainer's max_steps for num_train_epochs (transformers 5.x, Trainer.set_initial_training_values;
// transformers 4.x before the short last step rounded the updates per epoch down instead of up).
int64_t hf_trainer_steps_for_epochs(double epochs, int64_t rows_per_epoch, int64_t per_device_batch,
                                    int64_t accumulation, int64_t world_size);

}  // namespace ll
