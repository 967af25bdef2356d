#include "io/hf_config.h"

#include "io/bnb_weights.h"
#include "io/config_checks.h"
#include "io/hf_weight_files.h"
#include "io/json_util.h"
#include "model/config_json.h"
#include "model/registry.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {

using Json = nlohmann::json;

namespace {

// The registered architecture config.json names: model_type, or a class of `architectures` when it has none.
const Architecture& find_architecture(const ConfigReader& r, HfConfigInfo& info) {
  info.model_type = r.get_string("model_type");
  const Json* classes = r.field("architectures");
  if (classes && !classes->is_array())
    r.fail_field(str_cat("`architectures` must be a list of class names, got ", classes->dump()));
  const Architecture* arch = nullptr;
  if (!info.model_type.empty()) {
    for (const Architecture* a : architectures())
      if (info.model_type == a->model_type()) arch = a;
  } else if (classes) {
    for (const Json& name : *classes)
      if (!arch && name.is_string()) arch = architecture_for_class(name.get<std::string>());
  }
  if (!arch)
    r.fail_field(str_cat("`model_type` is \"", info.model_type, "\" and `architectures` is ",
                         classes ? classes->dump() : std::string("absent"),
                         "; supported architectures: ", supported_architectures()));
  return *arch;
}

// parse_hf_config without the size limits (read_hf_config first compares the sizes with the folder's tensors, whose
// message says more when a field is wrong).
HfConfig parse_fields(const Json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": config.json must be a JSON object, got a JSON ", j.type_name());
  const ConfigReader r(j, where);
  HfConfig out;
  const Architecture& arch = find_architecture(r, out.info);
  ModelConfig& c = out.model;
  c.model_type = arch.model_type();
  arch.read_config(r, c);
  out.info.has_rope_scaling = r.has("rope_scaling") || r.has("rope_parameters");
  out.info.torch_dtype = r.get_string("torch_dtype");
  if (out.info.torch_dtype.empty()) out.info.torch_dtype = r.get_string("dtype");
  if (const Json* qc = r.field("quantization_config")) parse_bnb_quantization_config(*qc, c, where);
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"})
    if (const Json* v = r.field(key)) out.info.special_token_ids[key] = *v;
  try {
    c.validate();
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  return out;
}

}  // namespace

HfConfig parse_hf_config(const Json& j, const std::string& where) {
  HfConfig config = parse_fields(j, where);
  check_config_size(config.model, where);
  return config;
}

HfConfig read_hf_config(const std::string& path) {
  const bool folder = is_directory(path);
  const std::string file = folder ? path + "/config.json" : path;
  LL_CHECK(path_exists(file), "no config.json at `", file, "` (expected a Hugging Face model folder)");
  HfConfig config = parse_fields(read_json_file(file), file);
  // Before anything is sized from it: the sizes must be those of the folder's tensors.
  if (folder && has_hf_weight_files(path)) check_config_matches_weights(config.model, open_hf_weight_files(path), file);
  check_config_size(config.model, file);
  return config;
}

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    default: break;
  }
  fail("torch_dtype: ", dtype_name(t), " is not a weight dtype");
}

Json hf_config_json(const ModelConfig& c, DType dtype, const HfConfigInfo& info) {
  c.validate();
  Json j = architecture_for(c.model_type).config_json(c);
  j["torch_dtype"] = torch_dtype_name(dtype);
  for (const auto& [key, value] : info.special_token_ids.items()) j[key] = value;
  return j;
}

void write_hf_config(const std::string& path, const ModelConfig& c, DType dtype, const HfConfigInfo& info) {
  write_file_atomic(path, hf_config_json(c, dtype, info).dump(2) + "\n");
}

}  // namespace ll
