// The architectures this engine runs, by config.json's model_type. Adding a family is one line in registry.cpp (and
// its definition, model/arch/<family>.cpp).
#pragma once
#include <string>
#include <vector>

#include "model/architecture.h"

namespace ll {

// Every registered definition, in registry order.
const std::vector<const Architecture*>& architectures();
// Adds a definition that is not built in (tests); an already registered model_type is an error.
void register_architecture(const Architecture& arch);
// The definition for `model_type`; throws naming the type and the supported ones.
const Architecture& architecture_for(const std::string& model_type);
// The definition whose hf_architectures() lists `class_name` (e.g. LlamaForCausalLM), or null.
const Architecture* architecture_for_class(const std::string& class_name);
// "llama (LlamaForCausalLM), …": for error messages.
std::string supported_architectures();

// --model_config presets, from every definition: false when `name` is none of them.
bool model_preset(const std::string& name, ModelConfig* out);
std::vector<std::string> model_preset_names();

}  // namespace ll
