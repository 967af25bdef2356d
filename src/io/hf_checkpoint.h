// Hugging Face model folders: loading safetensors weights (single file or sharded with an index) into a ParamStore,
// and writing a complete folder (config.json, weights, index, tokenizer files) that transformers loads.
// See shared/reference/formats.md §A1 (names, shapes, index) and §A2 (safetensors).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/backend.h"
#include "io/hf_config.h"
#include "model/params.h"

namespace ll {

struct HfLoadOptions {
  // LongLoRA's [PAD] token: when the folder's vocabulary is V and the model was built with V + 1, row V of the
  // embedding and of the LM head becomes the mean of rows [0, V) (smart_tokenizer_and_embedding_resize).
  bool add_pad_token = false;
};

struct HfLoadReport {
  std::vector<std::string> files;    // weight files read, in order
  int64_t tensors = 0;               // parameters loaded
  std::vector<std::string> ignored;  // tensors of the folder the model does not use (rotary_emb.inv_freq, tied lm_head)
  bool padded = false;               // a [PAD] row was appended
};

// Loads every base weight of `params` (LoRA adapters are left untouched) from the folder `dir`:
// `model.safetensors`, else `model.safetensors.index.json` with its shards (validated: every needed weight mapped,
// every mapped file present and holding what the map says). BF16/F16/F32/F64 are converted to the backend's weight
// dtype; shapes must match exactly. Unknown tensors are an error, except the architecture's ignored buffers (Llama:
// `*.rotary_emb.inv_freq`) and the output head of a tied model (`lm_head.weight`), which are ignored. A folder with
// only PyTorch `.bin` pickles is refused with a conversion hint.
// `params` must have been built from this folder's config (read_hf_config), vocab + 1 with add_pad_token.
HfLoadReport load_hf_weights(const std::string& dir, ParamStore& params, Backend& backend,
                             const HfLoadOptions& options = {});

struct HfSaveOptions {
  DType dtype = DType::BF16;        // BF16, F16 or F32 (also written as config.json's torch_dtype)
  // 0: one model.safetensors; else shards of at most this many tensor bytes (a larger tensor gets a shard of its
  // own), with model.safetensors.index.json — or one model.safetensors when everything fits, as transformers does.
  uint64_t max_shard_bytes = 0;
  std::string copy_tokenizer_from;  // folder whose tokenizer files and generation_config.json are copied ("" = none)
  HfConfigInfo info;                // special token ids carried into config.json
  // 4-bit weights (a --load_in_4bit store): true writes them in the bitsandbytes layout with config.json's
  // quantization_config (io/bnb_weights.h; build/quantize); false writes every weight dense, dequantized.
  bool keep_4bit = false;
};

struct HfSaveReport {
  std::vector<std::string> weight_files;  // in the order written
  std::vector<std::string> copied;        // tokenizer / generation-config files copied
  uint64_t total_bytes = 0;               // tensor bytes (the index's metadata.total_size)
};

// Writes the base weights of `params` (HF names, no LoRA tensors) as a complete HF folder `dir` (created if needed).
// Refuses a store whose LoRA B matrices are non-zero: merge them first (merge_lora) or they would be lost.
// Atomicity: every file is written to a temporary name and renamed. An existing config.json is removed first and
// written last (after weights, index and tokenizer files), so a folder that has a config.json is complete, also
// when an earlier save is overwritten. Weight files of an earlier save that the new layout does not use (a single
// model.safetensors vs shards, shards of another count, a stale index) are deleted before config.json is written.
HfSaveReport save_hf_folder(const std::string& dir, ParamStore& params, Backend& backend, const ModelConfig& config,
                            const HfSaveOptions& options);

// "model-00002-of-00005.safetensors", as transformers names shards.
std::string hf_shard_name(int index, int count);

}  // namespace ll
