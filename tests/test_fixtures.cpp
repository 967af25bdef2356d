// Parity with an independent implementation: scripts/make_fixtures.py (a PyTorch twin written from the
// same math, S2 built the way LongLoRA's code builds it) wrote weights, inputs, logits, loss and gradients.
// Both CPU backends must reproduce them: fp32 within 1e-4 relative error per tensor (seen: ~3e-7), fp64 within 2e-7
// (the fixtures are fp64 results rounded to fp32).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <set>

#include "cpu/cpu_backend.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/param_select.h"
#include "core/tensor_host.h"
#include "test_util.h"

namespace ll {
namespace {

std::vector<double> read_values(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsEntry& e = f.entry(name);
  size_t n = 1;
  for (int64_t d : e.shape) n *= size_t(d);
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (e.dtype == DType::F32) {
      float v;
      std::memcpy(&v, static_cast<const char*>(e.data) + 4 * i, 4);
      out[i] = v;
    } else if (e.dtype == DType::I32) {
      int32_t v;
      std::memcpy(&v, static_cast<const char*>(e.data) + 4 * i, 4);
      out[i] = v;
    } else {
      ADD_FAILURE() << name << ": unexpected dtype " << dtype_name(e.dtype);
    }
  }
  return out;
}

std::vector<int32_t> read_ids(const SafetensorsFile& f, const std::string& name) {
  const std::vector<double> v = read_values(f, name);
  return std::vector<int32_t>(v.begin(), v.end());
}

ModelOptions options_from(const nlohmann::json& j) {
  ModelOptions o;
  o.config.hidden_size = j.at("hidden_size");
  o.config.intermediate_size = j.at("intermediate_size");
  o.config.num_attention_heads = j.at("num_attention_heads");
  o.config.num_key_value_heads = j.at("num_key_value_heads");
  o.config.num_hidden_layers = j.at("num_hidden_layers");
  o.config.vocab_size = j.at("vocab_size");
  o.config.norm_eps = j.at("rms_norm_eps");
  o.config.rope_theta = j.at("rope_theta");
  o.config.rope_scaling_factor = j.at("rope_scaling_factor");
  o.config.tie_word_embeddings = j.at("tie_word_embeddings");
  o.batch = j.at("batch");
  o.seq_len = j.at("seq_len");
  const std::string attention = j.at("attention");
  o.attention.use_s2 = attention != "full";
  o.attention.variant = attention == "s2_roll" ? S2Variant::Roll : S2Variant::LeakFree;
  if (o.attention.use_s2) o.attention.group_ratio = double(j.at("s2_group_size").get<int64_t>()) / double(o.seq_len);
  o.lora.rank = j.at("lora_rank");
  o.lora.alpha = j.at("lora_alpha");
  std::string targets;
  for (const auto& t : j.at("lora_targets")) targets += t.get<std::string>() + ",";
  o.lora.targets = parse_lora_targets(targets, o.config);
  for (const auto& t : j.at("trainable")) {
    const std::string s = t;
    if (s == "all") o.trainable.all = true;
    if (s == "embed" || s == "norm" || s == "lm_head") o.trainable.names.push_back(s);
  }
  return o;
}

struct FixtureCase {
  const char* name;
  const char* backend;
  double tolerance;
};

class FixtureParity : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(FixtureParity, LogitsLossAndEveryGradient) {
  const FixtureCase c = GetParam();
  const std::string dir = test::fixtures_dir();
  ASSERT_FALSE(dir.empty()) << "tests/fixtures/*.safetensors are committed; run the tests from the repository root";
  const SafetensorsFile file(dir + "/" + c.name + ".safetensors");
  const nlohmann::json cfg = nlohmann::json::parse(file.metadata().at("config"));
  const ModelOptions o = options_from(cfg);

  std::unique_ptr<Backend> backend = create_backend(c.backend);
  Model model(*backend, o);
  EXPECT_EQ(model.mask().kind, cfg.at("attention") == "full"  ? MaskKind::Causal
                               : cfg.at("attention") == "s2"  ? MaskKind::S2
                                                              : MaskKind::S2Roll);

  // Same parameter names both ways, same trainable set both ways.
  std::set<std::string> file_params, file_grads;
  for (const std::string& n : file.names()) {
    if (n.rfind("grad/", 0) == 0) file_grads.insert(n.substr(5));
    else if (n.rfind("model.", 0) == 0 || n.rfind("lm_head.", 0) == 0) file_params.insert(n);
  }
  std::set<std::string> model_params, model_trainable;
  for (const Param& p : model.params().all()) {
    model_params.insert(p.name);
    if (p.trainable) model_trainable.insert(p.name);
  }
  ASSERT_EQ(model_params, file_params);
  ASSERT_EQ(model_trainable, file_grads);

  for (Param& p : model.params().all()) upload_f64(*backend, p.value, read_values(file, p.name));
  const std::vector<int32_t> tokens = read_ids(file, "input_ids"), targets = read_ids(file, "targets");

  EXPECT_LT(test::rel_error(model.logits(tokens.data()), read_values(file, "logits")), c.tolerance) << "logits";
  model.params().zero_grads();
  const LossResult r = model.forward_backward(tokens.data(), targets.data());
  const double ref_loss = read_values(file, "loss")[0];
  EXPECT_NEAR(r.mean(), ref_loss, c.tolerance * std::abs(ref_loss)) << "loss";
  for (Param& p : model.params().all()) {
    if (!p.trainable) continue;
    EXPECT_LT(test::rel_error(download_f64(*backend, p.grad), read_values(file, "grad/" + p.name)), c.tolerance)
        << "gradient of " << p.name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    PyTorchTwin, FixtureParity,
    ::testing::Values(FixtureCase{"mha_full", "cpu", 1e-4}, FixtureCase{"gqa_pi2_full", "cpu", 1e-4},
                      FixtureCase{"gqa_s2", "cpu", 1e-4}, FixtureCase{"gqa_s2_roll", "cpu", 1e-4},
                      FixtureCase{"lora_s2", "cpu", 1e-4}, FixtureCase{"tied_full", "cpu", 1e-4},
                      FixtureCase{"mha_full", "cpu-f64", 2e-7}, FixtureCase{"gqa_pi2_full", "cpu-f64", 2e-7},
                      FixtureCase{"gqa_s2", "cpu-f64", 2e-7}, FixtureCase{"gqa_s2_roll", "cpu-f64", 2e-7},
                      FixtureCase{"lora_s2", "cpu-f64", 2e-7}, FixtureCase{"tied_full", "cpu-f64", 2e-7}),
    [](const auto& info) {
      std::string s = std::string(info.param.name) + "_" + info.param.backend;
      for (char& ch : s)
        if (ch == '-') ch = '_';
      return s;
    });

TEST(FixtureParity, VariantsReallyDiffer) {
  // Guards against fixtures that would pass trivially: the S2 variants and full attention disagree.
  const std::string dir = test::fixtures_dir();
  ASSERT_FALSE(dir.empty());
  const SafetensorsFile full(dir + "/gqa_pi2_full.safetensors"), s2(dir + "/gqa_s2.safetensors"),
      roll(dir + "/gqa_s2_roll.safetensors");
  EXPECT_GT(test::rel_error(read_values(s2, "logits"), read_values(full, "logits")), 1e-2);
  EXPECT_GT(test::rel_error(read_values(roll, "logits"), read_values(s2, "logits")), 1e-3);
}

}  // namespace
}  // namespace ll
