#include "model/weight_format.h"

#include "util/error.h"

namespace ll {

DType weight_storage_dtype(const ModelConfig& config, ParamRole role, bool trainable, DType compute,
                           const std::string& name) {
  if (!config.load_in_4bit || !quantized_role(role)) return compute;
  LL_CHECK(!trainable, "`", name, "` is a linear weight of a 4-bit base (--load_in_4bit / the folder's "
           "quantization_config), which stays frozen; train adapters (--low_rank_training true) and leave "
           "linear weights out of --trainable_params");
  return config.base_weight_format;
}

}  // namespace ll
