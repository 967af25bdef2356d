// build/train's flags (LongLoRA's fine-tune.py / supervised-fine-tune.py names) bound to a TrainOptions, each
// numeric one with the range of values it accepts. The binary parses them; run_training checks an options struct
// filled in code against the same ranges (check_train_option_ranges), so a range is declared once, here.
#pragma once
#include "train/trainer.h"
#include "util/flags.h"

namespace ll {

void add_train_flags(Flags& flags, TrainOptions& o);

// Throws ll::Error naming the first option outside its flag's range (or NaN/inf), the value and the range.
void check_train_option_ranges(const TrainOptions& o);

}  // namespace ll
