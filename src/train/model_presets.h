// Built-in model shapes for --model_config (random initialisation): the demo model and Llama-2's sizes.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace ll {

// Returns false when `name` is not a preset.
bool model_preset(const std::string& name, LlamaConfig* out);
std::vector<std::string> model_preset_names();

}  // namespace ll
