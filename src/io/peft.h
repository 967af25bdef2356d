// PEFT LoRA adapter folders, as PEFT writes them and as LongLoRA extends them. See shared/reference/formats.md §A3.
//
//   adapter_config.json          peft_type LORA, r, lora_alpha, target_modules, modules_to_save, … (written with only
//                                the keys LongLoRA's released adapters have, so every PEFT version loads it)
//   adapter_model.safetensors    base_model.model.<HF name>: LoRA A/B (`…q_proj.lora_A.weight` [r, in], `lora_B`
//                                [out, r]) and the modules_to_save weights (`base_model.model.model.embed_tokens.weight`,
//                                `…layers.N.input_layernorm.weight`, `…model.norm.weight`) — the names PEFT 0.21 writes
//                                and loads (checked with peft: ModulesToSaveWrapper's state dict has no infix)
//   trainable_params.safetensors LongLoRA's plain names for the same trainable embed/norm (`model.embed_tokens.weight`,
//                                …), the safetensors form of its trainable_params.bin
//   trainable_params.bin         the same tensors in PyTorch's format (io/torch_file.h), for LongLoRA's eval.py and
//                                merge script, which torch.load it into the model (strict=False); never read here.
//                                Both trainable_params files are written on every save, empty when only LoRA trains.
//   longlora.json                what PEFT has no field for: the training RoPE factor, context and vocabulary. A side
//                                file rather than an extra adapter_config.json key: peft 0.21 warns about unknown keys
//                                there ("Unexpected keyword arguments … upgrade PEFT"), and some older versions pass
//                                the JSON straight to LoraConfig(**kwargs), which would reject them.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "model/config.h"
#include "model/params.h"

namespace ll {

// The parts of adapter_config.json this engine uses.
struct AdapterConfig {
  LoraConfig lora;  // r, lora_alpha, lora_dropout; target_modules resolved to canonical target names (param_select.h)
  std::string base_model_name_or_path;
  std::vector<std::string> modules_to_save;  // as written (PEFT suffix-matches them against module names)
  std::vector<std::string> saved;            // the HF names of the base weights modules_to_save selects
};

// longlora.json.
struct LongLoraRecord {
  double rope_scaling_factor = 1.0;  // linear position-interpolation factor the adapter was trained with
  int64_t model_max_length = 0;      // training context length (0 = unknown)
  int64_t vocab_size = 0;            // vocabulary trained with, e.g. 32001 with LongLoRA's [PAD] (0 = unknown)
};

struct AdapterSaveOptions {
  std::string base_model_name_or_path;
  DType dtype = DType::F32;             // tensor dtype in both safetensors files
  std::optional<LongLoraRecord> record;  // written to longlora.json when set
};

struct AdapterSaveReport {
  std::vector<std::string> files;
  int64_t lora_tensors = 0, base_tensors = 0;
};

// Writes the LoRA tensors of `params` and every trainable base weight (embeddings / norms / output head) into `dir`
// (created if needed; each file atomic, adapter_config.json last). target_modules are the canonical names of the
// adapted linears, modules_to_save the shortest entries selecting exactly the trained modules (Llama: "embed_tokens",
// "norm", "lm_head"). `lora` must be the configuration `params` was built with. A store that trains the projections
// themselves (full fine-tuning) is refused: save an HF folder.
AdapterSaveReport save_adapter(const std::string& dir, ParamStore& params, Backend& backend, const LoraConfig& lora,
                               const AdapterSaveOptions& options = {});

// Reads and checks dir/adapter_config.json for a base model of configuration `base` (its architecture's modules).
// Requires peft_type "LORA", r, lora_alpha and target_modules (a list of names matched like PEFT: equal to, or a
// dotted suffix of, a module name; or a regex string full-matched against names such as
// model.layers.0.self_attn.q_proj). Rejects what would change the math or that this engine cannot express: use_dora,
// use_rslora, non-empty rank_pattern / alpha_pattern, fan_in_fan_out, bias other than "none", layers_to_transform, a
// target set covering only some layers, modules_to_save selecting anything but embeddings, norms and output heads.
AdapterConfig read_adapter_config(const std::string& dir, const ModelConfig& base);
// dir/longlora.json, or nothing when the folder has none (e.g. LongLoRA's own releases).
std::optional<LongLoraRecord> read_longlora_record(const std::string& dir);
// Rows of the token embedding (of a `base` model's architecture) the folder saves (adapter_model or
// trainable_params), 0 when it saves none: the vocabulary to build the model with before load_adapter.
int64_t adapter_embedding_rows(const std::string& dir, const ModelConfig& base);

struct AdapterLoadReport {
  std::vector<std::string> files;
  int64_t lora_tensors = 0;
  std::vector<std::string> base;  // base weights replaced (embeddings / norms / output head)
};

// Loads every LoRA tensor of `params` (all must be present; shapes exact) and every base weight the folder saves,
// from adapter_model.safetensors (PEFT names) and trainable_params.safetensors (LongLoRA names; a weight in both
// must be byte-identical). Converts to the backend's weight dtype. `params` must have been built with
// read_adapter_config(dir, base).lora and the right vocabulary (adapter_embedding_rows). `.bin` pickles are refused
// with a conversion hint.
AdapterLoadReport load_adapter(const std::string& dir, ParamStore& params, Backend& backend);

}  // namespace ll
