// build/quantize: a dense Hugging Face folder (bf16 / f16 / f32) → the transformers + bitsandbytes 4-bit layout
// (io/bnb_weights.h), every Linear but the output head quantized as bitsandbytes' quantize_4bit does
// (core/quantize.h), the other tensors in the compute dtype, config.json with quantization_config, tokenizer files
// copied. train, eval and merge load the result directly.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

#include "model/quant_options.h"

namespace ll {

struct QuantizeFolderOptions {
  std::string model_name_or_path;  // dense HF folder
  std::string output_dir;          // new folder (must differ from the input)
  QuantOptions quant;              // quant type, double quantization, compute dtype (load_in_4bit is implied)
  uint64_t max_shard_bytes = 0;    // 0: one model.safetensors
};

void quantize_hf_folder(const QuantizeFolderOptions& options, std::ostream& log);

}  // namespace ll
