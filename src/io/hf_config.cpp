#include "io/hf_config.h"

#include <optional>

#include "io/config_checks.h"
#include "io/hf_weight_files.h"
#include "io/json_util.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {
namespace {

using Json = nlohmann::json;

const Json* field(const Json& j, const char* key) { return json_field(j, key); }

int64_t get_int(const Json& j, const char* key, const std::string& where, std::optional<int64_t> fallback = {}) {
  const Json* v = field(j, key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail(where, ": required field `", key, "` is missing");
  }
  if (!v->is_number_integer()) fail(where, ": `", key, "` must be an integer, got ", v->dump());
  return v->get<int64_t>();
}

double get_number(const Json& j, const char* key, const std::string& where, std::optional<double> fallback = {}) {
  const Json* v = field(j, key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail(where, ": required field `", key, "` is missing");
  }
  if (!v->is_number()) fail(where, ": `", key, "` must be a number, got ", v->dump());
  return v->get<double>();
}

bool get_bool(const Json& j, const char* key, const std::string& where, bool fallback) {
  const Json* v = field(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) fail(where, ": `", key, "` must be true or false, got ", v->dump());
  return v->get<bool>();
}

std::string get_string(const Json& j, const char* key, const std::string& where) {
  const Json* v = field(j, key);
  if (v == nullptr) return "";
  if (!v->is_string()) fail(where, ": `", key, "` must be a string, got ", v->dump());
  return v->get<std::string>();
}

void check_architecture(const Json& j, const std::string& where, HfConfigInfo& info) {
  info.model_type = get_string(j, "model_type", where);
  bool causal_lm = false;
  if (const Json* a = field(j, "architectures")) {
    if (!a->is_array()) fail(where, ": `architectures` must be a list of class names, got ", a->dump());
    for (const Json& name : *a) causal_lm = causal_lm || name == "LlamaForCausalLM";
  }
  const bool llama = info.model_type == "llama" || (info.model_type.empty() && causal_lm);
  if (!llama) {
    fail(where, ": `model_type` is \"", info.model_type, "\" and `architectures` is ",
         field(j, "architectures") ? field(j, "architectures")->dump() : std::string("absent"),
         "; only Llama checkpoints (model_type \"llama\" / LlamaForCausalLM) are supported");
  }
  const std::string act = get_string(j, "hidden_act", where);
  if (!act.empty() && act != "silu") fail(where, ": `hidden_act` is \"", act, "\"; Llama's MLP needs \"silu\"");
  for (const char* key : {"attention_bias", "mlp_bias"})
    if (get_bool(j, key, where, false)) fail(where, ": `", key, "` is true; Llama-2 has no biases and neither does this engine");
}

// One rope_scaling / rope_parameters object: its type ("linear" or "default") and factor, and rope_theta if it has one.
struct RopeSpec {
  double factor = 1.0;
  std::optional<double> theta;
};

RopeSpec parse_rope(const Json& obj, const std::string& name, const std::string& where) {
  if (!obj.is_object()) fail(where, ": `", name, "` must be an object or null, got ", obj.dump());
  const std::string type = get_string(obj, "type", where), rope_type = get_string(obj, "rope_type", where);
  if (!type.empty() && !rope_type.empty() && type != rope_type)
    fail(where, ": `", name, "` has `type` \"", type, "\" but `rope_type` \"", rope_type, "\"; they must agree");
  const std::string kind = rope_type.empty() ? type : rope_type;
  if (kind.empty()) fail(where, ": `", name, "` has neither `rope_type` nor `type` (expected \"linear\" or \"default\")");
  RopeSpec spec;
  if (field(obj, "rope_theta")) spec.theta = get_number(obj, "rope_theta", where + " (" + name + ")");
  if (kind == "default") return spec;
  if (kind != "linear") {
    fail(where, ": `", name, "` type \"", kind,
         "\" is not supported; only linear position interpolation (\"linear\", as LongLoRA uses) or none");
  }
  if (!field(obj, "factor")) fail(where, ": `", name, ".factor` is missing (linear scaling needs a factor)");
  spec.factor = get_number(obj, "factor", where + " (" + name + ")");
  return spec;
}

void parse_rope_fields(const Json& j, const std::string& where, LlamaConfig& c, HfConfigInfo& info) {
  c.rope_theta = get_number(j, "rope_theta", where, 10000.0);
  std::optional<RopeSpec> scaling, parameters;
  if (const Json* v = field(j, "rope_scaling")) scaling = parse_rope(*v, "rope_scaling", where);
  if (const Json* v = field(j, "rope_parameters")) parameters = parse_rope(*v, "rope_parameters", where);
  info.has_rope_scaling = scaling || parameters;
  if (scaling && parameters && scaling->factor != parameters->factor) {
    fail(where, ": `rope_scaling.factor` (", scaling->factor, ") and `rope_parameters.factor` (", parameters->factor,
         ") disagree");
  }
  for (const auto* spec : {&scaling, &parameters}) {
    if (!*spec) continue;
    c.rope_scaling_factor = (*spec)->factor;
    if ((*spec)->theta) {
      if (field(j, "rope_theta") && *(*spec)->theta != c.rope_theta)
        fail(where, ": `rope_theta` (", c.rope_theta, ") and the rope_theta inside the RoPE parameters (",
             *(*spec)->theta, ") disagree");
      c.rope_theta = *(*spec)->theta;
    }
  }
}

// parse_hf_config without the size limits (read_hf_config first compares the sizes with the folder's tensors, whose
// message says more when a field is wrong).
HfConfig parse_fields(const Json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": config.json must be a JSON object, got a JSON ", j.type_name());
  HfConfig out;
  check_architecture(j, where, out.info);
  LlamaConfig& c = out.model;
  c.hidden_size = get_int(j, "hidden_size", where);
  c.intermediate_size = get_int(j, "intermediate_size", where);
  c.num_attention_heads = get_int(j, "num_attention_heads", where);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", where, c.num_attention_heads);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", where);
  c.vocab_size = get_int(j, "vocab_size", where);
  c.rms_norm_eps = get_number(j, "rms_norm_eps", where);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", where);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", where, false);
  parse_rope_fields(j, where, c, out.info);
  if (field(j, "head_dim")) {
    const int64_t head_dim = get_int(j, "head_dim", where);
    if (c.num_attention_heads > 0 && head_dim != c.hidden_size / c.num_attention_heads)
      fail(where, ": `head_dim` is ", head_dim, " but hidden_size / num_attention_heads = ", c.hidden_size, " / ",
           c.num_attention_heads, "; this engine needs head_dim = hidden_size / num_attention_heads");
  }
  out.info.torch_dtype = get_string(j, "torch_dtype", where);
  if (out.info.torch_dtype.empty()) out.info.torch_dtype = get_string(j, "dtype", where);
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"})
    if (const Json* v = field(j, key)) out.info.special_token_ids[key] = *v;
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
    case DType::I32: break;
  }
  fail("torch_dtype: ", dtype_name(t), " is not a weight dtype");
}

Json hf_config_json(const LlamaConfig& c, DType dtype, const HfConfigInfo& info) {
  c.validate();
  Json j = Json::object();  // std::map-backed: keys come out sorted, as transformers writes them
  j["architectures"] = {"LlamaForCausalLM"};
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["head_dim"] = c.head_dim();
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = c.intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["mlp_bias"] = false;
  j["model_type"] = "llama";
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["pretraining_tp"] = 1;
  j["rms_norm_eps"] = c.rms_norm_eps;
  // Exactly {type, factor}: transformers 4.31–4.42 reject any other key in rope_scaling.
  j["rope_scaling"] = c.rope_scaling_factor != 1.0 ? Json{{"type", "linear"}, {"factor", c.rope_scaling_factor}} : Json();
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = torch_dtype_name(dtype);
  j["use_cache"] = true;
  j["vocab_size"] = c.vocab_size;
  for (const auto& [key, value] : info.special_token_ids.items()) j[key] = value;
  return j;
}

void write_hf_config(const std::string& path, const LlamaConfig& c, DType dtype, const HfConfigInfo& info) {
  write_file_atomic(path, hf_config_json(c, dtype, info).dump(2) + "\n");
}

}  // namespace ll
