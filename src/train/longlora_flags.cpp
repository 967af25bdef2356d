#include "train/longlora_flags.h"

#include <algorithm>
#include <cctype>

#include "train/deepspeed_config.h"
#include "util/error.h"
#include "util/flags.h"
#include "util/strings.h"

namespace ll {

namespace {

// Accepted for LongLoRA's command lines, without effect here: why, in one line.
struct IgnoredFlag {
  const char* name;
  const char* why;
};
const IgnoredFlag kIgnored[] = {
    {"use_flash_attn", "attention is always this engine's own fused kernel (flash attention on the GPU)"},
    {"tf32", "matrix products run in bf16 on the GPU and fp32 on the CPU; TF32 is never used"},
    {"cache_dir", "models are read from local folders; nothing is downloaded or cached"},
    {"per_device_eval_batch_size", "no evaluation runs during training (evaluate with build/eval perplexity)"},
};

bool ends_with_json(const std::string& path) {
  const std::string lower = to_lower(path);
  return ends_with(lower, ".json") || ends_with(lower, ".jsonl");
}

}  // namespace

void add_longlora_script_flags(Flags& flags, LongLoraScriptFlags& s) {
  flags.add("bf16", &s.bf16,
            "Hugging Face's bf16: true trains in bf16 on the GPU (the CUDA backend: bf16 weights and activations, "
            "fp32 master weights); the CPU backend trains in fp32 and says so");
  flags.add("deepspeed", &s.deepspeed,
            "a DeepSpeed JSON config (LongLoRA's ds_configs/stage2.json, stage3.json): ZeRO stage, offload, bf16 and "
            "scheduler read from it; what cannot be honoured is an error");
  flags.add("evaluation_strategy", &s.evaluation_strategy,
            "Hugging Face's evaluation_strategy: only no (there is no evaluation set during training)");
  flags.add("eval_strategy", &s.evaluation_strategy, "the newer name of --evaluation_strategy");
  flags.add("optim", &s.optim, "optimizer: adamw_torch (LongLoRA's), adamw_torch_fused or adamw_hf, all AdamW");
  flags.add("model_type", &s.model_type,
            "fine-tune.py's llama or gpt-neox; the architecture comes from config.json, gpt-neox selects "
            "LongLoRA's NeoX S2 (--s2_variant roll) unless --s2_variant is given");
  flags.add("use_full_attn", &s.use_full_attn, "fine-tune.py: full causal attention instead of S2-Attn "
                                               "(--use_s2attn false)");
  for (const IgnoredFlag& f : kIgnored) flags.add_ignored(f.name, f.why);
}

std::vector<std::string> apply_longlora_script_flags(const LongLoraScriptFlags& s, const Flags& flags,
                                                     TrainOptions& o) {
  std::vector<std::string> notes = flags.notes();
  // supervised-fine-tune.py's --data_path is LongAlpaca's JSON: a JSON data path means SFT.
  if (!o.data_path.empty() && o.sft_data_path.empty() && ends_with_json(o.data_path)) {
    notes.push_back(str_cat("--data_path ", o.data_path, ": a JSON data path means supervised fine-tuning, as "
                            "supervised-fine-tune.py (read as --sft_data_path)"));
    o.sft_data_path = o.data_path;
    o.data_path.clear();
  }
  DeepSpeedSettings ds;
  if (!s.deepspeed.empty()) ds = apply_deepspeed_config(s.deepspeed, flags, o, &notes);
  const bool bf16_given = flags.was_set("bf16");
  LL_CHECK(!(bf16_given && ds.bf16_set && ds.bf16 != s.bf16), "--bf16 ", s.bf16 ? "true" : "false",
           " disagrees with bf16.enabled ", ds.bf16 ? "true" : "false", " in --deepspeed `", s.deepspeed,
           "`; set it to \"auto\"");
  const bool bf16 = bf16_given ? s.bf16 : ds.bf16;
  if (bf16_given || ds.bf16_set) {
    if (o.device == "cpu" && bf16)
      notes.push_back("--bf16 true: the CPU backend trains in fp32 (bf16 applies on the GPU, --device cuda)");
    LL_CHECK(o.device == "cpu" || bf16, "--bf16 false: the CUDA backend trains in bf16 (fp32 master weights); fp32 "
                                        "training runs on --device cpu");
  }
  if (s.evaluation_strategy != "no")
    fail("--evaluation_strategy ", s.evaluation_strategy,
         ": build/train has no evaluation set; use no (LongLoRA's value) and evaluate with build/eval perplexity");
  if (flags.was_set("evaluation_strategy") || flags.was_set("eval_strategy"))
    notes.push_back("--evaluation_strategy no: ignored; training never evaluates (build/eval perplexity does)");
  if (s.optim != "adamw_torch" && s.optim != "adamw_torch_fused" && s.optim != "adamw_hf")
    fail("--optim ", s.optim, ": only AdamW is implemented (adamw_torch, adamw_torch_fused or adamw_hf)");
  if (!s.model_type.empty()) {
    LL_CHECK(s.model_type == "llama" || s.model_type == "gpt-neox", "--model_type: expected llama or gpt-neox "
             "(fine-tune.py's values), got `", s.model_type, "`");
    if (s.model_type == "gpt-neox" && !flags.was_set("s2_variant")) {
      o.s2_variant = "roll";
      notes.push_back("--model_type gpt-neox: LongLoRA's NeoX S2-Attn (--s2_variant roll)");
    }
  }
  if (s.use_full_attn) {
    LL_CHECK(!(flags.was_set("use_s2attn") && o.use_s2attn), "--use_full_attn true contradicts --use_s2attn true");
    o.use_s2attn = false;
  }
  return notes;
}

}  // namespace ll
