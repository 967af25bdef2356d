// The transformers + bitsandbytes 4-bit folder layout, read and written. A 4-bit Linear `P` is stored as
//   P.weight                                U8 [(numel+1)/2, 1]  the packed codes (element 2j in byte j's high nibble)
//   P.weight.absmax                         F32 [blocks], or U8 [blocks] with double quantization
//   P.weight.quant_map                      F32 [16]             the code book's values
//   P.weight.nested_absmax                  F32 [nested blocks]  (double quantization only)
//   P.weight.nested_quant_map               F32 [256]            the dynamic map (double quantization only)
//   P.weight.quant_state.bitsandbytes__nf4  U8 [bytes]           UTF-8 JSON {"quant_type", "blocksize", "dtype",
//                                                                "shape", "nested_blocksize", "nested_dtype",
//                                                                "nested_offset"} (`__fp4` for fp4)
// and config.json carries quantization_config {quant_method: "bitsandbytes", load_in_4bit: true, …}. In memory the
// same values live in core/dtype.h's quant_layout (one tensor per weight).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "io/param_io.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace ll {

struct HfWeightFiles;

// The shape of the folder's tensor `name` as the model sees it: a bitsandbytes 4-bit weight's (from its quant_state
// JSON), else the stored one.
std::vector<int64_t> bnb_logical_shape(const HfWeightFiles& files, const std::string& name);

// Whether `name` is one of the tensors stored beside a 4-bit `….weight` (absmax, quant_map, nested_*, quant_state.*).
bool is_bnb_companion(const std::string& name);

// Finds a tensor by name in the folder (null when absent).
using TensorLookup = std::function<const SafetensorsEntry*(const std::string& name)>;

// The 4-bit weight `name` (its U8 `….weight` entry and companions) as quant_layout bytes of `format` for a parameter of
// logical `shape`. Missing or inconsistent parts, a different quant type, block size or shape: errors naming `where`
// (the file) and the tensor.
std::vector<uint8_t> read_bnb_weight(const TensorLookup& lookup, const std::string& name, DType format,
                                     const std::vector<int64_t>& shape, const std::string& where);

// The format a bitsandbytes 4-bit weight `name` is stored in (from its quant_state tensor), or F32 when `name` has no
// quant_state (a dense tensor).
DType bnb_stored_format(const TensorLookup& lookup, const std::string& name, const std::string& where);

// Appends the tensors of a 4-bit weight `name` (layout bytes `data` of `format`, logical `shape`) to `out`.
// `compute_dtype` is the quant_state's "dtype" (bfloat16, float16, float32).
void append_bnb_weight(const std::string& name, DType format, const std::vector<int64_t>& shape, const uint8_t* data,
                       const std::string& compute_dtype, HostTensors& out);

// config.json's quantization_config for a 4-bit base (what transformers' BitsAndBytesConfig.to_dict writes).
nlohmann::json bnb_quantization_config(DType format, const std::string& compute_dtype,
                                       const std::vector<std::string>& skip_modules);
// Reads config.json's quantization_config into config.load_in_4bit / base_weight_format; anything but bitsandbytes
// 4-bit (8-bit, another quant_method, an unknown quant type) is an error naming the field and `where`.
void parse_bnb_quantization_config(const nlohmann::json& qc, ModelConfig& config, const std::string& where);

}  // namespace ll
