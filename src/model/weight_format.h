// Which dtype each parameter is stored in: the one place that says which tensors a 4-bit base (QLoRA) quantizes.
// bitsandbytes' rule as transformers applies it: every Linear except the output head (tied or not: the head is an
// OutputHead row, never a Linear); embeddings, norms and biases stay in the compute dtype. It reads only the
// architecture's parameter roles, so it holds for every family.
#pragma once
#include <string>

#include "core/dtype.h"
#include "model/architecture.h"
#include "model/config.h"

namespace ll {

// The storage dtype of a parameter of `role` (its trainability given) under `config`, where `compute` is the
// backend's weight dtype. A trainable Linear of a 4-bit base is an error naming `name` (a 4-bit weight is frozen:
// only adapters, embeddings and norms train on it).
DType weight_storage_dtype(const ModelConfig& config, ParamRole role, bool trainable, DType compute,
                           const std::string& name);

// Whether a parameter of this role is quantized by a 4-bit base.
inline bool quantized_role(ParamRole role) { return role == ParamRole::Linear; }

}  // namespace ll
