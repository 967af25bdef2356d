#include "model/quant_options.h"

#include "core/quantize.h"
#include "util/error.h"
#include "util/flags.h"
#include "core/dtype_names.h"

namespace ll {

void add_quant_flags(Flags& flags, QuantOptions& q) {
  flags.add("load_in_4bit", &q.load_in_4bit,
            "QLoRA: store every linear weight of the base except the output head in 4 bits (bitsandbytes' format, "
            "quantized on load; a bitsandbytes 4-bit folder loads as such without it); needs "
            "--low_rank_training true");
  flags.add("bnb_4bit_quant_type", &q.bnb_4bit_quant_type, "4-bit code book: nf4 (LongLoRA's QLoRA) or fp4");
  flags.add("bnb_4bit_use_double_quant", &q.bnb_4bit_use_double_quant,
            "quantize the per-block absmax again (8 bits, blocks of 256): 0.127 instead of 0.5 bit per weight");
  flags.add("bnb_4bit_compute_dtype", &q.bnb_4bit_compute_dtype,
            "bfloat16, float16 or float32: accepted for transformers command lines; the backend's dtype computes "
            "(CUDA bf16, CPU f32)");
}

DType compute_dtype(const QuantOptions& q) {
  const std::optional<DType> t = float_dtype_named(q.bnb_4bit_compute_dtype);
  LL_CHECK(t.has_value(), "--bnb_4bit_compute_dtype: `", q.bnb_4bit_compute_dtype,
           "` is not a compute dtype; expected bfloat16, float16 or float32");
  return *t;
}

void apply_quant_options(const QuantOptions& q, bool low_rank_training, ModelConfig& config) {
  compute_dtype(q);  // validated here, used by the folder writer (build/quantize)
  const DType format = quant_format(q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, "--bnb_4bit_quant_type");
  if (q.load_in_4bit) {
    LL_CHECK(!config.load_in_4bit || config.base_weight_format == format, "--load_in_4bit: the model folder is "
             "already quantized as ", dtype_name(config.base_weight_format), " but --bnb_4bit_quant_type / "
             "--bnb_4bit_use_double_quant ask for ", dtype_name(format), "; drop the flags or load a dense folder");
    config.load_in_4bit = true;
    config.base_weight_format = format;
  }
  LL_CHECK(!config.load_in_4bit || low_rank_training,
           "--low_rank_training false with a 4-bit base (--load_in_4bit or a bitsandbytes folder): 4-bit linear "
           "weights are frozen, so full fine-tuning cannot train them; use --low_rank_training true (QLoRA) or a "
           "dense model");
}

}  // namespace ll
