// Hugging Face `config.json`: parsing into a ModelConfig and writing one that transformers loads. Generic: the
// architecture is found by model_type (or `architectures`) in the registry, and its definition reads and writes its
// own fields (Llama: every published rope_scaling form; rope_scaling recorded on write, which LongLoRA's own merge
// forgets). See shared/reference/formats.md §A1.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "core/tensor.h"

namespace ll {

// What config.json says beyond the architecture.
struct HfConfigInfo {
  std::string model_type;         // as written ("" when only `architectures` named the class, e.g. LlamaForCausalLM)
  std::string torch_dtype;        // `torch_dtype`, or transformers 5's `dtype`; "" when absent
  bool has_rope_scaling = false;  // a non-null rope_scaling / rope_parameters carried a scaling type (even "default")
  // bos/eos/pad_token_id exactly as found (int or list), only the keys present and non-null; written back verbatim.
  nlohmann::json special_token_ids = nlohmann::json::object();
};

struct HfConfig {
  ModelConfig model;
  HfConfigInfo info;
};

// Parses a config.json object; `where` names the file in errors. The architecture is the registered one whose
// model_type equals `model_type`, or (when model_type is absent) whose class is listed in `architectures`; anything
// else is an error naming the supported ones. Its definition reads the fields (Llama: the size fields, rms_norm_eps
// and max_position_embeddings required; num_key_value_heads defaults to num_attention_heads, rope_theta to 10000,
// tie_word_embeddings to false; RoPE scaling null, {"type"|"rope_type": "linear"|"default", "factor": F}, or
// transformers 5's rope_parameters — any other type is an error naming it), then the config is validated. Sizes
// beyond what this engine can hold are errors naming the fields (check_config_size).
HfConfig parse_hf_config(const nlohmann::json& j, const std::string& where);
// `path` is a model folder (reads path/config.json) or the file itself. A folder's config must match the shapes of
// its safetensors tensors when it has some (check_config_matches_weights), so nothing is sized from a wrong field.
HfConfig read_hf_config(const std::string& path);

// "bfloat16" / "float16" / "float32" (the spelling of `torch_dtype`).
const char* torch_dtype_name(DType t);
// The config.json transformers would write for `c` (keys sorted; the architecture's fields — Llama: LlamaForCausalLM,
// rope_scaling {"type": "linear", "factor": F} when F != 1, null otherwise), with `torch_dtype` = dtype and the special
// token ids of `info` when given.
nlohmann::json hf_config_json(const ModelConfig& c, DType dtype, const HfConfigInfo& info = {});
// Writes hf_config_json(...) to `path` atomically (2-space indent, trailing newline).
void write_hf_config(const std::string& path, const ModelConfig& c, DType dtype, const HfConfigInfo& info = {});

}  // namespace ll
