#include "model/config_json.h"

#include "util/error.h"

namespace ll {

using Json = nlohmann::json;

const Json* ConfigReader::field(const char* key) const {
  auto it = j_.find(key);
  return it == j_.end() || it->is_null() ? nullptr : &*it;
}

void ConfigReader::fail_field(const std::string& message) const { fail(where_, ": ", message); }

int64_t ConfigReader::get_int(const char* key, std::optional<int64_t> fallback) const {
  const Json* v = field(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail(where_, ": required field `", key, "` is missing");
  }
  if (!v->is_number_integer()) fail(where_, ": `", key, "` must be an integer, got ", v->dump());
  return v->get<int64_t>();
}

double ConfigReader::get_number(const char* key, std::optional<double> fallback) const {
  const Json* v = field(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail(where_, ": required field `", key, "` is missing");
  }
  if (!v->is_number()) fail(where_, ": `", key, "` must be a number, got ", v->dump());
  return v->get<double>();
}

bool ConfigReader::get_bool(const char* key, bool fallback) const {
  const Json* v = field(key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) fail(where_, ": `", key, "` must be true or false, got ", v->dump());
  return v->get<bool>();
}

std::string ConfigReader::get_string(const char* key) const {
  const Json* v = field(key);
  if (v == nullptr) return "";
  if (!v->is_string()) fail(where_, ": `", key, "` must be a string, got ", v->dump());
  return v->get<std::string>();
}

namespace {

// One rope_scaling / rope_parameters object: its linear factor ("linear"; 1 for "default" and "llama3"), its llama3
// parameters ("llama3"), and rope_theta if it has one.
struct RopeSpec {
  double factor = 1.0;
  RopeLlama3 llama3;
  std::optional<double> theta;
  bool operator==(const RopeSpec& o) const { return factor == o.factor && llama3 == o.llama3; }
};

constexpr const char* kSupportedRopeTypes =
    "supported: \"default\" (none), \"linear\" (position interpolation, as LongLoRA uses) and \"llama3\" (Llama-3.1's "
    "per-frequency scaling)";

std::string describe(const RopeSpec& s) {
  if (s.llama3.enabled()) return describe_rope_llama3(s.llama3);
  return str_cat("linear factor ", s.factor);
}

RopeSpec parse_rope(const Json& obj, const std::string& name, const std::string& where) {
  if (!obj.is_object()) fail(where, ": `", name, "` must be an object or null, got ", obj.dump());
  const ConfigReader r(obj, where);
  const std::string type = r.get_string("type"), rope_type = r.get_string("rope_type");
  if (!type.empty() && !rope_type.empty() && type != rope_type)
    fail(where, ": `", name, "` has `type` \"", type, "\" but `rope_type` \"", rope_type, "\"; they must agree");
  const std::string kind = rope_type.empty() ? type : rope_type;
  if (kind.empty()) fail(where, ": `", name, "` has neither `rope_type` nor `type` (", kSupportedRopeTypes, ")");
  RopeSpec spec;
  const ConfigReader named(obj, where + " (" + name + ")");
  if (r.has("rope_theta")) spec.theta = named.get_number("rope_theta");
  if (kind == "default") return spec;
  if (kind != "linear" && kind != "llama3")
    fail(where, ": `", name, "` type \"", kind, "\" is not supported; ", kSupportedRopeTypes);
  if (!r.has("factor")) fail(where, ": `", name, ".factor` is missing (", kind, " scaling needs a factor)");
  const double factor = named.get_number("factor");
  if (kind == "linear") {
    spec.factor = factor;
    return spec;
  }
  for (const char* key : {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
    if (!r.has(key)) fail(where, ": `", name, ".", key, "` is missing (llama3 scaling needs it)");
  spec.llama3.factor = factor;
  spec.llama3.low_freq_factor = named.get_number("low_freq_factor");
  spec.llama3.high_freq_factor = named.get_number("high_freq_factor");
  spec.llama3.original_max_position_embeddings = named.get_int("original_max_position_embeddings");
  check_rope_llama3(spec.llama3, where + ": `" + name + "`");
  return spec;
}

}  // namespace

void read_rope_scaling(const ConfigReader& r, ModelConfig& c, const char* theta_key) {
  const std::string& where = r.where();
  c.rope_theta = r.get_number(theta_key, 10000.0);
  std::optional<RopeSpec> scaling, parameters;
  if (const Json* v = r.field("rope_scaling")) scaling = parse_rope(*v, "rope_scaling", where);
  if (const Json* v = r.field("rope_parameters")) parameters = parse_rope(*v, "rope_parameters", where);
  if (scaling && parameters && !(*scaling == *parameters))
    fail(where, ": `rope_scaling` (", describe(*scaling), ") and `rope_parameters` (", describe(*parameters),
         ") disagree");
  for (const auto* spec : {&scaling, &parameters}) {
    if (!*spec) continue;
    c.rope_scaling_factor = (*spec)->factor;
    c.rope_llama3 = (*spec)->llama3;
    if ((*spec)->theta) {
      if (r.has(theta_key) && *(*spec)->theta != c.rope_theta)
        fail(where, ": `", theta_key, "` (", c.rope_theta, ") and the rope_theta inside the RoPE parameters (",
             *(*spec)->theta, ") disagree");
      c.rope_theta = *(*spec)->theta;
    }
  }
}

}  // namespace ll
