#include "model/registry.h"

#include "util/error.h"

namespace ll {

// Each family's definition (model/arch/<family>.cpp).
const Architecture& llama_architecture();
const Architecture& gpt_neox_architecture();
const Architecture& mistral_architecture();
const Architecture& qwen2_architecture();

namespace {
std::vector<const Architecture*>& registered() {
  static std::vector<const Architecture*> all = {
      &llama_architecture(),
      &gpt_neox_architecture(),
      &mistral_architecture(),
      &qwen2_architecture(),
  };
  return all;
}
}  // namespace

const std::vector<const Architecture*>& architectures() { return registered(); }

void register_architecture(const Architecture& arch) {
  for (const Architecture* a : registered())
    LL_ASSERT(std::string(a->model_type()) != arch.model_type(), "architecture registry: model_type \"",
              arch.model_type(), "\" is registered already");
  registered().push_back(&arch);
}

std::string supported_architectures() {
  std::string s;
  for (const Architecture* a : architectures()) {
    s += str_cat(s.empty() ? "" : ", ", a->model_type(), " (");
    const std::vector<std::string> classes = a->hf_architectures();
    for (size_t i = 0; i < classes.size(); ++i) s += (i ? ", " : "") + classes[i];
    s += ")";
  }
  return s;
}

const Architecture& architecture_for(const std::string& model_type) {
  for (const Architecture* a : architectures())
    if (model_type == a->model_type()) return *a;
  fail("model_type \"", model_type, "\" is not supported; supported architectures: ", supported_architectures());
}

const Architecture* architecture_for_class(const std::string& class_name) {
  for (const Architecture* a : architectures())
    for (const std::string& c : a->hf_architectures())
      if (c == class_name) return a;
  return nullptr;
}

bool model_preset(const std::string& name, ModelConfig* out) {
  for (const Architecture* a : architectures())
    for (const auto& [preset, config] : a->presets())
      if (preset == name) {
        *out = config;
        return true;
      }
  return false;
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const Architecture* a : architectures())
    for (const auto& preset : a->presets()) names.push_back(preset.first);
  return names;
}

}  // namespace ll
