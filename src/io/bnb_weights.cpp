#include "io/bnb_weights.h"

#include <cstring>

#include "core/quantize.h"
#include "core/tensor.h"
#include "io/hf_weight_files.h"
#include "util/error.h"
#include "util/strings.h"

namespace ll {

namespace {

using Json = nlohmann::json;

const char* const kSuffixes[] = {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                                 ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"};

// The entry `name`, checked to be `dtype` with `count` elements.
const SafetensorsEntry& part(const TensorLookup& lookup, const std::string& name, DType dtype, int64_t count,
                             const std::string& where) {
  const SafetensorsEntry* e = lookup(name);
  LL_CHECK(e != nullptr, where, ": the 4-bit weight needs tensor `", name, "`, which the folder does not have");
  int64_t n = 1;
  for (int64_t d : e->shape) n *= d;
  LL_CHECK(e->dtype == dtype && n == count, where, ": tensor `", name, "` is ", safetensors_dtype_name(e->dtype), " ",
           shape_text(e->shape), "; expected ", safetensors_dtype_name(dtype), " with ", count, " elements");
  return *e;
}

// The quant_state tensor `state_name` (bitsandbytes' UTF-8 JSON, in U8) parsed; errors start with `where`.
Json quant_state(const SafetensorsEntry& s, const std::string& state_name, const std::string& where) {
  LL_CHECK(s.dtype == DType::U8, where, ": tensor `", state_name, "` must be U8 (UTF-8 JSON)");
  try {
    return Json::parse(std::string(static_cast<const char*>(s.data), s.nbytes));
  } catch (const std::exception& e) {
    fail(where, ": tensor `", state_name, "` is not bitsandbytes' quant_state JSON: ", e.what());
  }
}

}  // namespace

std::vector<int64_t> bnb_logical_shape(const HfWeightFiles& files, const std::string& name) {
  const SafetensorsEntry& e = files.where.at(name)->entry(name);
  if (e.dtype != DType::U8) return e.shape;
  for (const char* type : {"nf4", "fp4"}) {
    const std::string state_name = name + ".quant_state.bitsandbytes__" + type;
    const auto it = files.where.find(state_name);
    if (it == files.where.end()) continue;
    const Json state = quant_state(it->second->entry(state_name), state_name, it->second->path());
    try {
      return state.at("shape").get<std::vector<int64_t>>();
    } catch (const std::exception& ex) {
      fail(it->second->path(), ": tensor `", state_name, "`: the quant_state has no list of integers `shape`: ",
           ex.what());
    }
  }
  return e.shape;
}

bool is_bnb_companion(const std::string& name) {
  if (name.find(".weight.") == std::string::npos) return false;
  for (const char* s : kSuffixes)
    if (ends_with(name, s)) return true;
  return false;
}

std::vector<uint8_t> read_bnb_weight(const TensorLookup& lookup, const std::string& name, DType format,
                                     const std::vector<int64_t>& shape, const std::string& where) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const QuantLayout l = quant_layout(format, n);
  const std::string type = quant_type_name(format);
  // The quant_state JSON first: it says what the other parts are.
  const std::string state_name = name + ".quant_state.bitsandbytes__" + type;
  const SafetensorsEntry* state_entry = lookup(state_name);
  if (state_entry == nullptr) {
    const std::string other = name + ".quant_state.bitsandbytes__" + (is_nf4(format) ? "fp4" : "nf4");
    LL_CHECK(lookup(other) == nullptr, where, ": `", name, "` is quantized as ", is_nf4(format) ? "fp4" : "nf4",
             " (tensor `", other, "`) but the model expects ", type, " (config.json's quantization_config / "
             "--bnb_4bit_quant_type)");
    fail(where, ": the 4-bit weight needs tensor `", state_name, "`, which the folder does not have");
  }
  const Json state = quant_state(*state_entry, state_name, where);
  auto field = [&](const char* key) -> const Json& {
    LL_CHECK(state.is_object() && state.contains(key), where, ": `", state_name, "` has no field `", key, "`");
    return state.at(key);
  };
  LL_CHECK(field("quant_type") == type, where, ": `", state_name, "`: quant_type ", field("quant_type").dump(),
           ", expected \"", type, "\"");
  LL_CHECK(field("blocksize") == kQuantBlock, where, ": `", state_name, "`: blocksize ", field("blocksize").dump(),
           "; this engine reads blocksize ", kQuantBlock, " (bitsandbytes' default for 4-bit weights)");
  LL_CHECK(field("shape") == Json(shape), where, ": `", state_name, "`: shape ", field("shape").dump(),
           ", but the model's `", name, "` is ", shape_text(shape));
  const bool dq = state.contains("nested_offset");
  LL_CHECK(dq == is_double_quantized(format), where, ": `", name, "` is stored ",
           dq ? "with" : "without", " double quantization, but the model expects ", dtype_name(format),
           " (config.json's bnb_4bit_use_double_quant / --bnb_4bit_use_double_quant)");

  std::vector<uint8_t> out(l.bytes, 0);
  const SafetensorsEntry& codes = part(lookup, name, DType::U8, (n + 1) / 2, where);
  std::memcpy(out.data() + l.codes, codes.data, size_t((n + 1) / 2));
  const SafetensorsEntry& qmap = part(lookup, name + ".quant_map", DType::F32, 16, where);
  LL_CHECK(std::memcmp(qmap.data, quant_code_values(format), 16 * sizeof(float)) == 0, where, ": `", name,
           ".quant_map` is not bitsandbytes' ", type, " code book");
  if (!dq) {
    const SafetensorsEntry& a = part(lookup, name + ".absmax", DType::F32, l.blocks, where);
    std::memcpy(out.data() + l.absmax, a.data, 4 * size_t(l.blocks));
    return out;
  }
  LL_CHECK(field("nested_blocksize") == kNestedQuantBlock, where, ": `", state_name, "`: nested_blocksize ",
           field("nested_blocksize").dump(), ", expected ", kNestedQuantBlock);
  LL_CHECK(field("nested_offset").is_number(), where, ": `", state_name, "`: nested_offset must be a number");
  const SafetensorsEntry& a = part(lookup, name + ".absmax", DType::U8, l.blocks, where);
  const SafetensorsEntry& nested = part(lookup, name + ".nested_absmax", DType::F32, l.nested_blocks, where);
  const SafetensorsEntry& nmap = part(lookup, name + ".nested_quant_map", DType::F32, 256, where);
  LL_CHECK(std::memcmp(nmap.data, dynamic_map_values(), 256 * sizeof(float)) == 0, where, ": `", name,
           ".nested_quant_map` is not bitsandbytes' signed dynamic map");
  std::memcpy(out.data() + l.absmax, a.data, size_t(l.blocks));
  std::memcpy(out.data() + l.nested, nested.data, 4 * size_t(l.nested_blocks));
  const float offset = float(field("nested_offset").get<double>());
  std::memcpy(out.data() + l.offset, &offset, 4);
  return out;
}

DType bnb_stored_format(const TensorLookup& lookup, const std::string& name, const std::string& where) {
  for (const char* type : {"nf4", "fp4"}) {
    const std::string state_name = name + ".quant_state.bitsandbytes__" + type;
    const SafetensorsEntry* s = lookup(state_name);
    if (s == nullptr) continue;
    const Json state = quant_state(*s, state_name, where);
    return quant_format(type, state.is_object() && state.contains("nested_offset"), where + ": `" + state_name + "`");
  }
  return DType::F32;
}

void append_bnb_weight(const std::string& name, DType format, const std::vector<int64_t>& shape, const uint8_t* data,
                       const std::string& compute_dtype, HostTensors& out) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const QuantLayout l = quant_layout(format, n);
  auto add = [&](const std::string& tensor, DType dtype, std::vector<int64_t> dims, const void* src, size_t bytes) {
    out.buffers.emplace_back(static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes);
    out.items.push_back({tensor, dtype, std::move(dims), out.buffers.back().data()});
  };
  const bool dq = is_double_quantized(format);
  add(name, DType::U8, {(n + 1) / 2, 1}, data + l.codes, size_t((n + 1) / 2));
  if (dq) {
    add(name + ".absmax", DType::U8, {l.blocks}, data + l.absmax, size_t(l.blocks));
    add(name + ".nested_absmax", DType::F32, {l.nested_blocks}, data + l.nested, 4 * size_t(l.nested_blocks));
    add(name + ".nested_quant_map", DType::F32, {256}, dynamic_map_values(), 256 * sizeof(float));
  } else {
    add(name + ".absmax", DType::F32, {l.blocks}, data + l.absmax, 4 * size_t(l.blocks));
  }
  add(name + ".quant_map", DType::F32, {16}, quant_code_values(format), 16 * sizeof(float));
  // QuantState.as_dict(packed=True)'s JSON, key order and separators as Python's json.dumps writes them.
  const std::string type = quant_type_name(format);
  std::string state = "{\"quant_type\": \"" + type + "\", \"blocksize\": " + std::to_string(kQuantBlock) +
                      ", \"dtype\": " + Json(compute_dtype).dump() + ", \"shape\": [";
  for (size_t i = 0; i < shape.size(); ++i) state += (i ? ", " : "") + std::to_string(shape[i]);
  state += "]";
  if (dq) {
    float offset;
    std::memcpy(&offset, data + l.offset, 4);
    state += ", \"nested_blocksize\": " + std::to_string(kNestedQuantBlock) +
             ", \"nested_dtype\": \"float32\", \"nested_offset\": " + Json(double(offset)).dump();
  }
  state += "}";
  add(name + ".quant_state.bitsandbytes__" + type, DType::U8, {int64_t(state.size())}, state.data(), state.size());
}

Json bnb_quantization_config(DType format, const std::string& compute_dtype,
                             const std::vector<std::string>& skip_modules) {
  return {{"quant_method", "bitsandbytes"},
          {"_load_in_4bit", true},  // BitsAndBytesConfig.to_dict writes its private fields too
          {"_load_in_8bit", false},
          {"load_in_4bit", true},
          {"load_in_8bit", false},
          {"bnb_4bit_quant_type", quant_type_name(format)},
          {"bnb_4bit_use_double_quant", is_double_quantized(format)},
          {"bnb_4bit_compute_dtype", compute_dtype},
          {"bnb_4bit_quant_storage", "uint8"},
          {"llm_int8_skip_modules", skip_modules.empty() ? Json(nullptr) : Json(skip_modules)},
          {"llm_int8_threshold", 6.0},
          {"llm_int8_has_fp16_weight", false},
          {"llm_int8_enable_fp32_cpu_offload", false}};
}

void parse_bnb_quantization_config(const Json& qc, ModelConfig& config, const std::string& where) {
  LL_CHECK(qc.is_object(), where, ": quantization_config must be an object");
  const std::string method = qc.value("quant_method", std::string("bitsandbytes"));
  LL_CHECK(method == "bitsandbytes", where, ": quantization_config.quant_method `", method,
           "` is not supported; this engine reads bitsandbytes 4-bit folders (or dense ones)");
  LL_CHECK(!qc.value("load_in_8bit", false), where,
           ": quantization_config.load_in_8bit: 8-bit bitsandbytes weights are not supported; use a dense or 4-bit "
           "folder");
  if (!qc.value("load_in_4bit", false)) return;
  const std::string storage = qc.value("bnb_4bit_quant_storage", std::string("uint8"));
  LL_CHECK(storage == "uint8", where, ": quantization_config.bnb_4bit_quant_storage `", storage,
           "` is not supported; expected uint8");
  config.load_in_4bit = true;
  config.base_weight_format = quant_format(qc.value("bnb_4bit_quant_type", std::string("fp4")),
                                           qc.value("bnb_4bit_use_double_quant", false),
                                           where + ": quantization_config.bnb_4bit_quant_type");
}

}  // namespace ll
