// The Llama definition (model/arch/llama.cpp), visible to the families that are Llama's layer with different names
// and config.json fields (Qwen2: model/arch/qwen2.cpp; Mistral: model/arch/mistral.cpp). A derived family overrides
// only its names, config.json reading/writing, validation and presets; the parameter table, activation schema and
// block are Llama's, with the family switches of ModelConfig the table and the mask read (qkv_bias, sliding_window).
#pragma once
#include "model/architecture.h"

namespace ll {

class Llama : public Architecture {
 public:
  const char* model_type() const override;
  std::vector<std::string> hf_architectures() const override;
  void read_config(const ConfigReader& r, ModelConfig& c) const override;
  nlohmann::json config_json(const ModelConfig& c) const override;
  void validate(const ModelConfig& c) const override;
  std::vector<std::pair<std::string, ModelConfig>> presets() const override;
  void check_folder_shapes(const ModelConfig& c, const std::map<std::string, FolderTensor>& w,
                           const std::string& where) const override;
  bool ignored_tensor(const std::string& name) const override;
  std::vector<ParamSpec> parameter_table(const ModelConfig& c) const override;
  std::string default_lora_targets() const override;
  std::vector<std::pair<std::string, std::string>> lora_aliases() const override;
  ActivationSchema activation_schema(const ModelConfig& c) const override;
  void forward(Block& b) const override;
  void backward(Block& b) const override;
  void final_norm_forward(Block& b) const override;
  void final_norm_backward(Block& b) const override;
  void mlp_intermediates(const Block& t) const override;
  void mlp_output(const Block& t) const override;
  void mlp_backward(const Block& t) const override;

 protected:
  // Whether the family may have a sliding window (Mistral); else ModelConfig::sliding_window must be 0.
  virtual bool may_have_sliding_window() const { return false; }
  // Validation shared by every Llama-shaped family (validate adds Llama's own: no biases).
  void validate_layer(const ModelConfig& c) const;
};

// A Llama-shaped config of these sizes (no biases, rope_theta 10000, untied).
ModelConfig llama_shape(int64_t d, int64_t f, int64_t h, int64_t hkv, int64_t layers, int64_t vocab, int64_t max_pos,
                        double eps, const char* model_type = "llama", int64_t sliding_window = 0);
// Llama-3.1/3.2's shape: vocabulary 128256, 131072 positions, rope_theta 5e5, the llama3 rope rule of `rope_factor`.
ModelConfig llama3_shape(int64_t d, int64_t f, int64_t h, int64_t hkv, int64_t layers, double rope_factor, bool tied);

}  // namespace ll
