// build/train's share of LongLoRA's command lines beyond TrainOptions' own flags: the flags of fine-tune.py,
// supervised-fine-tune.py (-qlora) and of Hugging Face's TrainingArguments that LongLoRA's README passes. One table
// (longlora_flags.cpp): each is mapped onto TrainOptions, or accepted and ignored with a printed line saying why;
// a value this engine cannot honour is an error saying so.
#pragma once
#include <string>
#include <vector>

#include "train/trainer.h"

namespace ll {

class Flags;

struct LongLoraScriptFlags {
  bool bf16 = false;                        // TrainingArguments.bf16
  std::string deepspeed;                    // a DeepSpeed JSON config (train/deepspeed_config.h)
  std::string evaluation_strategy = "no";   // (also eval_strategy, its newer name)
  std::string optim = "adamw_torch";        // fine-tune.py's default
  std::string model_type;                   // fine-tune.py: llama (default) or gpt-neox
  bool use_full_attn = false;               // fine-tune.py: full attention instead of S2-Attn
};

void add_longlora_script_flags(Flags& flags, LongLoraScriptFlags& s);

// Maps the script flags given onto `o` (after Flags::parse); returns the lines to print once (rank 0): the
// ignored flags' notes (Flags::notes) and what each mapping decided. Throws ll::Error for a value that cannot be
// honoured.
std::vector<std::string> apply_longlora_script_flags(const LongLoraScriptFlags& s, const Flags& flags,
                                                     TrainOptions& o);

}  // namespace ll
