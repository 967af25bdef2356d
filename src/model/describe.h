// A model's architecture in words, for build/info and logs: family, sizes, attention, position encoding, block form
// and parameter count, all from the ModelConfig and its definition's parameter table.
#pragma once
#include <string>

#include "model/config.h"

namespace ll {

// One "key: value" line per fact (e.g. "model_type: gpt_neox (GPTNeoXForCausalLM)", "rotary: 2 of 8 head dims").
std::string describe_model(const ModelConfig& c);

// The RoPE rule the engine rotates with: "linear scaling (position interpolation) factor F", or for a llama3 config
// the composed rule, "llama3 factor F·f, ... (config.json's factor F × linear factor f)" (build/info, build/train).
std::string describe_rope(const ModelConfig& c);

}  // namespace ll
