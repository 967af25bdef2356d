// Hugging Face `config.json` for Llama models: parsing into LlamaConfig (every published rope_scaling form) and
// writing one that transformers loads (with rope_scaling recorded, which LongLoRA's own merge forgets).
// See shared/reference/formats.md §A1.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "tensor.h"

namespace ll {

// What config.json says beyond the architecture.
struct HfConfigInfo {
  std::string model_type;         // "llama" ("" when only `architectures` named LlamaForCausalLM)
  std::string torch_dtype;        // `torch_dtype`, or transformers 5's `dtype`; "" when absent
  bool has_rope_scaling = false;  // a non-null rope_scaling / rope_parameters carried a scaling type (even "default")
  // bos/eos/pad_token_id exactly as found (int or list), only the keys present and non-null; written back verbatim.
  nlohmann::json special_token_ids = nlohmann::json::object();
};

struct HfConfig {
  LlamaConfig model;
  HfConfigInfo info;
};

// Parses a config.json object; `where` names the file in errors. Requires model_type "llama" or architectures
// containing LlamaForCausalLM; the size fields, rms_norm_eps and max_position_embeddings; defaults
// num_key_value_heads to num_attention_heads, rope_theta to 10000, tie_word_embeddings to false. RoPE scaling may be
// null, {"type"|"rope_type": "linear"|"default", "factor": F}, or transformers 5's rope_parameters (which may also
// carry rope_theta); any other type (dynamic, yarn, llama3, longrope, …) is an error naming it. Sizes beyond what
// this engine can hold are errors naming the fields (check_config_size).
HfConfig parse_hf_config(const nlohmann::json& j, const std::string& where);
// `path` is a model folder (reads path/config.json) or the file itself. A folder's config must match the shapes of
// its safetensors tensors when it has some (check_config_matches_weights), so nothing is sized from a wrong field.
HfConfig read_hf_config(const std::string& path);

// "bfloat16" / "float16" / "float32" (the spelling of `torch_dtype`).
const char* torch_dtype_name(DType t);
// The config.json transformers would write for `c` (keys sorted, LlamaForCausalLM, model_type llama), with
// `torch_dtype` = dtype, rope_scaling {"type": "linear", "factor": F} when F != 1 (null otherwise), and the special
// token ids of `info` when given.
nlohmann::json hf_config_json(const LlamaConfig& c, DType dtype, const HfConfigInfo& info = {});
// Writes hf_config_json(...) to `path` atomically (2-space indent, trailing newline).
void write_hf_config(const std::string& path, const LlamaConfig& c, DType dtype, const HfConfigInfo& info = {});

}  // namespace ll
