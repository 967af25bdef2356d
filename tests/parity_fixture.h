// Reading the parity fixtures of scripts/make_{neox,mistral,family}_fixtures.py (the same layout): their token
// tensors, the model options their metadata describe, and the logits of the HF folders saved beside them.
#pragma once
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "core/tensor_host.h"
#include "hf_test_util.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/param_select.h"
#include "test_util.h"

namespace ll::test {

inline std::vector<int32_t> ids_of(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsEntry& e = f.entry(name);
  EXPECT_EQ(e.dtype, DType::I32) << name;
  std::vector<int32_t> out(e.nbytes / 4);
  std::memcpy(out.data(), e.data, e.nbytes);
  return out;
}

// A fixture's input_ids with the batch and sequence length of their shape.
inline std::vector<int32_t> fixture_ids(const SafetensorsFile& f, int64_t& batch, int64_t& seq) {
  const std::vector<int64_t>& shape = f.entry("input_ids").shape;
  batch = shape[0], seq = shape[1];
  return ids_of(f, "input_ids");
}

// The logits of the HF folder `dir` (its config.json and weights) on `ids`.
inline std::vector<double> folder_logits(Backend& backend, const std::string& dir, const std::vector<int32_t>& ids,
                                         int64_t batch, int64_t seq) {
  ModelOptions o;
  o.config = read_hf_config(dir).model;
  o.batch = batch, o.seq_len = seq;
  Model model(backend, o);
  load_hf_weights(dir, model.params(), backend);
  return model.logits(ids.data());
}

// The model the fixture describes: its config.json as our loader reads a folder's, plus the case's training set-up.
inline ModelOptions options_of(const SafetensorsFile& f) {
  ModelOptions o;
  o.config = parse_hf_config(nlohmann::json::parse(f.metadata().at("config")), "fixture config").model;
  const std::vector<int64_t>& shape = f.entry("input_ids").shape;
  o.batch = shape[0], o.seq_len = shape[1];
  const nlohmann::json c = nlohmann::json::parse(f.metadata().at("case"));
  if (c.empty()) return o;
  const std::string attention = c.at("attention");
  o.attention.use_s2 = attention != "full";
  o.attention.variant = attention == "s2_roll" ? S2Variant::Roll : S2Variant::LeakFree;
  if (o.attention.use_s2) o.attention.group_ratio = double(c.at("s2_group_size").get<int64_t>()) / double(o.seq_len);
  o.lora.rank = c.at("lora_rank");
  o.lora.alpha = c.at("lora_alpha");
  std::string targets;
  for (const auto& t : c.at("lora_targets")) targets += t.get<std::string>() + ",";
  if (o.lora.enabled()) o.lora.targets = parse_lora_targets(targets, o.config);
  for (const auto& t : c.at("trainable")) {
    if (t == "all") o.trainable.all = true;
    else o.trainable.names.push_back(t);
  }
  return o;
}

// The check every transformers parity case makes: the model has the fixture's tensors (the file's names starting with
// one of `weight_prefixes`) and its trainable set (the file's grad/ names: peft's LoRA modules and LongLoRA's
// substring rule, or all); with the fixture's weights, its logits, loss and every trainable gradient are the
// fixture's within `tolerance`.
inline void expect_model_matches_fixture(Model& model, Backend& backend, const SafetensorsFile& file,
                                         const std::vector<std::string>& weight_prefixes, double tolerance) {
  std::set<std::string> file_params, file_grads, model_params, model_trainable;
  for (const std::string& n : file.names()) {
    if (n.rfind("grad/", 0) == 0) {
      file_grads.insert(n.substr(5));
      continue;
    }
    for (const std::string& prefix : weight_prefixes)
      if (n.rfind(prefix, 0) == 0) file_params.insert(n);
  }
  for (const Param& p : model.params().all()) {
    model_params.insert(p.name);
    if (p.trainable) model_trainable.insert(p.name);
  }
  ASSERT_EQ(model_params, file_params);
  ASSERT_EQ(model_trainable, file_grads);

  for (Param& p : model.params().all()) upload_f64(backend, p.value, file_values(file.entry(p.name)));
  const std::vector<int32_t> tokens = ids_of(file, "input_ids"), targets = ids_of(file, "targets");
  EXPECT_LT(rel_error(model.logits(tokens.data()), file_values(file.entry("logits"))), tolerance) << "logits";
  model.params().zero_grads();
  const LossResult r = model.forward_backward(tokens.data(), targets.data());
  const double ref_loss = file_values(file.entry("loss"))[0];
  EXPECT_NEAR(r.mean(), ref_loss, tolerance * ref_loss) << "loss";
  for (Param& p : model.params().all()) {
    if (!p.trainable) continue;
    EXPECT_LT(rel_error(download_f64(backend, p.grad), file_values(file.entry("grad/" + p.name))), tolerance)
        << "gradient of " << p.name;
  }
}

}  // namespace ll::test
