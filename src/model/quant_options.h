// transformers' BitsAndBytesConfig as command-line flags, shared by train, eval (and the server to come):
//   --load_in_4bit true --bnb_4bit_quant_type nf4 --bnb_4bit_use_double_quant true --bnb_4bit_compute_dtype bfloat16
// Defaults are transformers' (fp4, no double quantization), so a bare --load_in_4bit true quantizes as a bare
// load_in_4bit=True does; LongLoRA's QLoRA scripts pass nf4 + double quantization.
#pragma once
#include <string>

#include "model/config.h"

namespace ll {

class Flags;

struct QuantOptions {
  bool load_in_4bit = false;
  std::string bnb_4bit_quant_type = "fp4";
  bool bnb_4bit_use_double_quant = false;
  std::string bnb_4bit_compute_dtype = "float32";  // accepted: float32, bfloat16, float16 (see apply_quant_options)
};

void add_quant_flags(Flags& flags, QuantOptions& q);

// --bnb_4bit_compute_dtype as a dtype (throws naming the flag for any other value).
DType compute_dtype(const QuantOptions& q);

// Sets config.load_in_4bit / base_weight_format from the flags (nothing when --load_in_4bit is false; a folder that is
// already 4-bit keeps its own quantization_config, which the flags must then agree with). Errors name the flag:
// an unknown quant type or compute dtype; `low_rank_training` false with a 4-bit base (its linears cannot train).
// The compute dtype is the backend's (CUDA bf16, CPU f32/f64): the flag is validated and recorded only.
void apply_quant_options(const QuantOptions& q, bool low_rank_training, ModelConfig& config);

}  // namespace ll
