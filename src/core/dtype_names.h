// A dense float dtype by the names users and config files give it: torch's (bfloat16, float16, float32 — config.json's
// torch_dtype, bnb_4bit_compute_dtype) and the short ones (bf16, fp16 / f16, fp32 / f32). Host code only.
#pragma once
#include <optional>
#include <string>

#include "core/dtype.h"

namespace ll {

inline std::optional<DType> float_dtype_named(const std::string& name) {
  if (name == "bfloat16" || name == "bf16") return DType::BF16;
  if (name == "float16" || name == "fp16" || name == "f16") return DType::F16;
  if (name == "float32" || name == "fp32" || name == "f32") return DType::F32;
  return std::nullopt;
}

}  // namespace ll
