// Folding LoRA adapters into the base weights, and the merge pipeline behind build/merge:
// base HF folder + PEFT adapter folder → a complete HF folder that transformers loads without PEFT.
#pragma once
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "core/backend.h"
#include "model/config.h"
#include "model/params.h"

namespace ll {

// W ← W + (α/r)·B·A for every adapter in `params`, the product and sum in fp64 on the host and rounded once to
// the weight dtype; then B ← 0, so the store still computes the same function and save_hf_folder accepts it.
// Returns the number of projections merged.
int merge_lora(ParamStore& params, Backend& backend, const LoraConfig& lora);

// A store on `host` holding `params` dense (a 4-bit base dequantized) with the adapters merged: what a merged export
// of a 4-bit base writes, since merge_lora cannot fold an adapter into 4-bit storage (a 4-bit weight is refused there).
// `config` is the store's model configuration; `params` must be readable.
std::unique_ptr<ParamStore> dense_merged_copy(ParamStore& params, Backend& backend, const ModelConfig& config,
                                              const LoraConfig& lora, Backend& host);

struct MergeOptions {
  std::string base_model;  // HF folder (config.json + safetensors)
  std::string peft_model;  // adapter folder (adapter_config.json, adapter_model.safetensors, …)
  std::string save_path;   // output HF folder (must differ from both inputs)
  uint64_t max_shard_bytes = 0;        // 0: one model.safetensors
  std::string dtype = "auto";          // bf16 | f16 | f32 | auto (the base's torch_dtype; bf16 when it has none)
  std::string add_pad_token = "auto";  // true | false | auto (pad when the adapter's embedding or longlora.json
                                       // vocabulary is the base's + 1)
  // The RoPE factor recorded in config.json: rope_scaling_factor when > 0; else from context_size (LongLoRA's
  // rule, derive_rope_factor) when > 0; else the adapter's longlora.json; else an error saying what to pass.
  double rope_scaling_factor = 0;
  int64_t context_size = 0;
  std::string backend = "cpu";  // holds the model while merging (cpu: fp32, ~4 bytes per parameter of host memory)
};

// Runs the merge, printing one line per step to `log`. Throws ll::Error on any inconsistency.
void merge_adapter_folder(const MergeOptions& options, std::ostream& log);

}  // namespace ll
