#include "model/architecture.h"

#include "util/error.h"

namespace ll {

bool has_mlp_tiles(const ActivationSchema& schema) {
  for (const auto* list : {&schema.saved, &schema.scratch})
    for (const TensorSpec& s : *list)
      if (s.mlp_tile) return true;
  return false;
}

// A definition that marks no mlp_tile tensor never calls Block::mlp_forward / mlp_backward (the model refuses
// mlp_tile_rows > 0 for it first); reaching a default hook is a definition bug.
namespace {
[[noreturn]] void no_mlp_hook(const Architecture& arch, const char* hook) {
  fail("model_type \"", arch.model_type(), "\" does not express its MLP as row tiles (Architecture::", hook, ")");
}
}  // namespace
void Architecture::mlp_intermediates(const Block&) const { no_mlp_hook(*this, "mlp_intermediates"); }
void Architecture::mlp_output(const Block&) const { no_mlp_hook(*this, "mlp_output"); }
void Architecture::mlp_backward(const Block&) const { no_mlp_hook(*this, "mlp_backward"); }

const char* param_role_name(ParamRole role) {
  switch (role) {
    case ParamRole::Embedding: return "embedding";
    case ParamRole::Norm: return "norm";
    case ParamRole::NormBias: return "norm bias";
    case ParamRole::Linear: return "linear";
    case ParamRole::Bias: return "bias";
    case ParamRole::OutputHead: return "output head";
    case ParamRole::LoraA: return "LoRA A";
    case ParamRole::LoraB: return "LoRA B";
  }
  return "?";
}

RopeParams rope_params(const ModelConfig& c) {
  RopeParams p{c.rope_theta, c.rope_scaling_factor, c.rotary_dims};
  if (c.rope_llama3.enabled()) {
    p.llama3 = c.rope_llama3;
    p.llama3.factor *= c.rope_scaling_factor;
    p.factor = 1.0;
  }
  return p;
}

std::string ParamSpec::module() const { return name.substr(0, name.rfind('.')); }

void Architecture::check_folder_shapes(const ModelConfig& c, const std::map<std::string, FolderTensor>& tensors,
                                       const std::string& where) const {
  ModelConfig one_layer = c;  // the sizes may be untrusted: never build a table of num_hidden_layers layers here
  one_layer.num_hidden_layers = 1;
  for (const ParamSpec& s : parameter_table(one_layer)) {
    const auto it = tensors.find(s.name);
    if (!s.tied_to.empty() || it == tensors.end() || it->second.shape.size() != s.shape.size()) continue;
    if (it->second.shape != s.shape)
      fail(where, ": the sizes do not match the weights: `", s.name, "` is ", shape_text(it->second.shape), " in ",
           it->second.file, " but this config describes ", shape_text(s.shape), "; is config.json from another model?");
  }
}

}  // namespace ll
