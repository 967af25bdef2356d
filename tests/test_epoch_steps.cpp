// --num_train_epochs as optimizer steps: ours (full steps, batches wrap across epochs) and the Hugging Face
// Trainer's count (transformers' Trainer.set_initial_training_values: updates per epoch = max(⌈batches /
// accumulation⌉, 1) with batches = ⌈rows / (batch × world)⌉, max_steps = ⌈epochs × updates per epoch⌉).
#include <gtest/gtest.h>

#include "train/epoch_steps.h"

namespace ll {
namespace {

struct EpochCase {
  int64_t rows, batch, accum, world;
  double epochs;
  int64_t hf, ours;  // hf: worked out by hand from the Trainer's rule
};

TEST(EpochSteps, OursAndTheHuggingFaceTrainersCounts) {
  const EpochCase cases[] = {
      {10, 1, 4, 1, 1, 3, 3},        // 10 batches: 4 + 4 + 2 (short); ours 2.5 steps rounded up
      {10, 1, 4, 1, 2, 6, 5},        // two short steps; ours 20 rows in 5 full steps
      {10, 2, 1, 2, 3, 9, 8},        // 3 batches per rank, the last of 1 row
      {7, 1, 8, 1, 1, 1, 1},         // fewer batches than the accumulation: one (short) update per epoch
      {7, 1, 8, 1, 2.5, 3, 3},       // fractional epochs: ⌈2.5 × 1⌉
      {12, 1, 4, 1, 3, 9, 9},        // an epoch of whole steps: the two agree
      {100, 2, 4, 2, 0.5, 4, 4},     // half an epoch of 7 updates (25 batches per rank): ⌈3.5⌉
      {100, 2, 4, 2, 1.3, 10, 9},    // ⌈1.3 × 7⌉ = 10; ours ⌈130 / 16⌉ = 9
      {1, 1, 1, 4, 1, 1, 1},         // fewer rows than ranks: one batch each (padded), one step
      {9, 2, 2, 2, 2, 4, 3},         // 3 batches per rank: 2 updates per epoch
      {3000, 1, 8, 2, 1, 188, 188},  // LongLoRA's fine-tune command on 2 ranks, one epoch
  };
  for (const EpochCase& c : cases) {
    EXPECT_EQ(hf_trainer_steps_for_epochs(c.epochs, c.rows, c.batch, c.accum, c.world), c.hf)
        << c.rows << " rows, batch " << c.batch << ", accum " << c.accum << ", world " << c.world << ", " << c.epochs
        << " epochs";
    EXPECT_EQ(steps_for_epochs(c.epochs, c.rows, c.batch * c.accum * c.world), c.ours)
        << c.rows << " rows, batch " << c.batch << ", accum " << c.accum << ", world " << c.world << ", " << c.epochs
        << " epochs";
  }
}

}  // namespace
}  // namespace ll
