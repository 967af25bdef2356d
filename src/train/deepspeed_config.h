// `--deepspeed ds_configs/stage2.json`: a DeepSpeed JSON config, as LongLoRA's commands pass it to the Hugging Face
// Trainer, read into TrainOptions. What it decides here: the ZeRO stage (zero_optimization.stage: 0, 2 or 3), the
// stage-2 gradient bucket (reduce_bucket_size), bf16 (bf16.enabled), train_batch_size (checked against the world size
// at set-up), the learning-rate schedule (a "scheduler"
// section replaces --lr_scheduler_type, as the Trainer lets DeepSpeed's scheduler run: WarmupDecayLR, WarmupLR).
// Values DeepSpeed takes from the Trainer ("auto") follow the flags; a number must agree with its flag, as the
// Trainer requires. What this engine cannot do is an error naming the file and the key: ZeRO stage 1, fp16,
// optimizer or parameter offload to the CPU from a GPU (on --device cpu everything is in host memory already),
// NVMe offload, optimizers other than AdamW, other schedulers. Performance knobs (overlap_comm, bucket sizes of
// other stages, prefetch sizes) do not change results and are left to the engine.
#pragma once
#include <string>
#include <vector>

#include "train/trainer.h"

namespace ll {

class Flags;

struct DeepSpeedSettings {
  bool bf16_set = false, bf16 = false;  // bf16.enabled given as true/false (not "auto")
};

// Applies the config at `path` to `o` (flags the user set explicitly must agree with it: `flags` tells which);
// appends the lines to print to `notes`. Throws ll::Error naming the file for a missing, unreadable or malformed
// config and for a setting that cannot be honoured.
DeepSpeedSettings apply_deepspeed_config(const std::string& path, const Flags& flags, TrainOptions& o,
                                         std::vector<std::string>* notes);

// DeepSpeed's rule for a numeric train_batch_size (o.deepspeed_train_batch_size, read by apply_deepspeed_config):
// it equals micro batch × gradient accumulation × world size. Called at set-up, once the world size is known;
// throws ll::Error naming the file, the field, the three factors and the world size.
void check_deepspeed_train_batch_size(const TrainOptions& o, int64_t world_size);

}  // namespace ll
