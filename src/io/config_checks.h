// config.json against what can exist, checked before a model is built so that an absurd or mistyped size is an
// error naming the field and its value instead of an allocation failure (bad_alloc, "out of memory") that names
// nothing: sizes this engine can hold at all, the shapes of the folder's tensors, and the memory the weights will
// live in.
#pragma once
#include <string>

#include "core/backend.h"
#include "io/hf_weight_files.h"
#include "model/config.h"

namespace ll {

// The most parameters a config may describe: 5× the largest Llama (Llama-3.1-405B). Counted from the architecture's
// parameter table of one layer, so a table of an absurd number of layers is never built.
constexpr long double kMaxModelParameters = 2e12L;

// Throws naming `where`, the field(s) and the parameter count when vocab_size does not fit a 32-bit token id or the
// sizes describe more than kMaxModelParameters parameters.
void check_config_size(const ModelConfig& config, const std::string& where);

// Throws naming `where`, the tensor (shape and file) and, where the architecture's definition says, the field and its
// value when config.json disagrees with the folder's tensors (Architecture::check_folder_shapes; Llama: vocab_size
// and hidden_size from embed_tokens and lm_head, num_hidden_layers from the layer indices present, hidden_size /
// num_key_value_heads / intermediate_size from layer 0's q_proj, k_proj, gate_proj). Tensors that are absent are left
// to the loader, which names every missing one.
void check_config_matches_weights(const ModelConfig& config, const HfWeightFiles& weights, const std::string& where);

// Throws naming `where`, the dominant size fields and the bytes when the model's parameters (base and LoRA) in the
// backend's weight dtype exceed the memory they will live in: the device's total memory, or for host backends the
// host memory available now (MemAvailable). No check when that memory is unknown.
void check_weights_fit_memory(const ModelConfig& config, const LoraConfig& lora, const Backend& backend,
                              const std::string& where);

}  // namespace ll
