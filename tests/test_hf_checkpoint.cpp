// Hugging Face folders: config.json parsing and writing, weight loading and saving (single, sharded, dtypes, the
// [PAD] row), the errors users meet, and parity with transformers on a folder it saved (scripts/make_hf_fixtures.py).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <set>

#include "hf_test_util.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/param_select.h"
#include "core/tensor_host.h"
#include "util/files.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

Json llama2_json() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
    "num_attention_heads": 4, "num_hidden_layers": 3, "vocab_size": 32000, "rms_norm_eps": 1e-05,
    "max_position_embeddings": 4096, "torch_dtype": "float16", "bos_token_id": 1, "eos_token_id": 2,
    "rope_scaling": null, "hidden_act": "silu", "pretraining_tp": 1})");
}

using test::error_of;

// ---- config.json ----------------------------------------------------------------------------------------------

TEST(HfConfig, Llama2StyleDefaults) {
  const HfConfig h = parse_hf_config(llama2_json(), "config.json");
  EXPECT_EQ(h.model.hidden_size, 64);
  EXPECT_EQ(h.model.intermediate_size, 172);
  EXPECT_EQ(h.model.num_key_value_heads, 4) << "absent num_key_value_heads defaults to num_attention_heads";
  EXPECT_EQ(h.model.num_hidden_layers, 3);
  EXPECT_EQ(h.model.vocab_size, 32000);
  EXPECT_EQ(h.model.norm_eps, 1e-5);
  EXPECT_EQ(h.model.rope_theta, 10000.0) << "absent rope_theta (transformers < 4.33) defaults to 10000";
  EXPECT_EQ(h.model.rope_scaling_factor, 1.0);
  EXPECT_EQ(h.model.max_position_embeddings, 4096);
  EXPECT_FALSE(h.model.tie_word_embeddings);
  EXPECT_EQ(h.info.model_type, "llama");
  EXPECT_EQ(h.info.torch_dtype, "float16");
  EXPECT_FALSE(h.info.has_rope_scaling);
  EXPECT_EQ(h.info.special_token_ids, Json({{"bos_token_id", 1}, {"eos_token_id", 2}}));

  Json only_arch = llama2_json();
  only_arch.erase("model_type");
  EXPECT_EQ(parse_hf_config(only_arch, "c").info.model_type, "");
}

TEST(HfConfig, EveryRopeScalingForm) {
  struct Case {
    const char* patch;
    double factor, theta;
  } cases[] = {
      {R"({"rope_scaling": {"type": "linear", "factor": 8.0}})", 8, 10000},
      {R"({"rope_scaling": {"rope_type": "linear", "factor": 4}})", 4, 10000},
      {R"({"rope_scaling": {"type": "linear", "rope_type": "linear", "factor": 2.0}})", 2, 10000},
      {R"({"rope_scaling": {"rope_type": "default"}, "rope_theta": 500000.0})", 1, 500000},
      {R"({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}})", 2, 500000},
      {R"({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}})", 1, 10000},
      {R"({"rope_parameters": {"type": "linear", "rope_type": "linear", "factor": 3.0, "rope_theta": 10000.0},
           "rope_scaling": {"type": "linear", "factor": 3.0}, "rope_theta": 10000.0})", 3, 10000},
  };
  for (const Case& c : cases) {
    Json j = llama2_json();
    j.merge_patch(Json::parse(c.patch));
    const HfConfig h = parse_hf_config(j, "config.json");
    EXPECT_EQ(h.model.rope_scaling_factor, c.factor) << c.patch;
    EXPECT_EQ(h.model.rope_theta, c.theta) << c.patch;
    EXPECT_TRUE(h.info.has_rope_scaling) << c.patch;
  }
}

TEST(HfConfig, ReadsTheFolderTransformersSaved) {
  const std::string dir = test::hf_tiny_dir();
  ASSERT_FALSE(dir.empty()) << "tests/fixtures/hf_tiny is committed; run from the repository root";
  const HfConfig h = read_hf_config(dir);  // transformers 5 form: rope_parameters, `dtype`
  EXPECT_EQ(h.model.rope_scaling_factor, 2.0);
  EXPECT_EQ(h.model.num_key_value_heads, 2);
  EXPECT_EQ(h.model.norm_eps, 1e-6);
  EXPECT_EQ(h.info.torch_dtype, "float32");
  EXPECT_EQ(h.info.special_token_ids.count("pad_token_id"), 0u) << "null ids are dropped";
}

TEST(HfConfig, ErrorsNameTheField) {
  struct Case {
    const char* patch;
    const char* expected;
  } cases[] = {
      {R"({"model_type": "falcon", "architectures": ["FalconForCausalLM"]})", "model_type"},
      {R"({"rope_scaling": {"type": "dynamic", "factor": 2.0}})", "\"dynamic\""},
      {R"({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})", "\"yarn\""},
      {R"({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0}})",
       "`rope_parameters.low_freq_factor` is missing"},
      {R"({"rope_scaling": {"type": "linear"}})", "rope_scaling.factor"},
      {R"({"rope_scaling": {"type": "linear", "rope_type": "dynamic", "factor": 2}})", "must agree"},
      {R"({"rope_scaling": {"type": "linear", "factor": 2}, "rope_parameters": {"rope_type": "linear", "factor": 4}})",
       "disagree"},
      {R"({"head_dim": 32})", "head_dim"},
      {R"({"hidden_size": null})", "`hidden_size` is missing"},
      {R"({"rms_norm_eps": null})", "`rms_norm_eps` is missing"},
      {R"({"max_position_embeddings": null})", "`max_position_embeddings` is missing"},
      {R"({"hidden_size": "64"})", "`hidden_size` must be an integer"},
      {R"({"hidden_act": "gelu"})", "hidden_act"},
      {R"({"attention_bias": true})", "attention_bias"},
      {R"({"num_key_value_heads": 3})", "num_key_value_heads"},
      {R"({"tie_word_embeddings": "no"})", "tie_word_embeddings"},
  };
  for (const Case& c : cases) {
    Json j = llama2_json();
    j.merge_patch(Json::parse(c.patch));  // a null in the patch removes the key
    const std::string msg = error_of([&] { parse_hf_config(j, "my/config.json"); });
    EXPECT_NE(msg.find(c.expected), std::string::npos) << c.patch << "\n  gave: " << msg;
    EXPECT_NE(msg.find("my/config.json"), std::string::npos) << "errors name the file: " << msg;
    EXPECT_EQ(msg.find("failed at"), std::string::npos) << "no source location for a user's mistake: " << msg;
  }
}

TEST(HfConfig, WriterRecordsRopeScalingAndRoundTrips) {
  test::TempDir dir;
  ModelConfig c = test::tiny_llama();
  c.rope_scaling_factor = 8.0;
  c.rope_theta = 500000.0;
  HfConfigInfo info;
  info.special_token_ids = {{"bos_token_id", 1}, {"eos_token_id", 2}};
  write_hf_config(dir / "config.json", c, DType::BF16, info);
  const Json j = Json::parse(read_text_file(dir / "config.json"));
  EXPECT_EQ(j.at("rope_scaling"), Json({{"type", "linear"}, {"factor", 8.0}})) << "exactly {type, factor}";
  EXPECT_EQ(j.at("torch_dtype"), "bfloat16");
  EXPECT_EQ(j.at("architectures"), Json({"LlamaForCausalLM"}));
  EXPECT_EQ(j.at("model_type"), "llama");
  EXPECT_EQ(j.at("eos_token_id"), 2);
  const HfConfig back = read_hf_config(dir.path());
  EXPECT_EQ(back.model.hidden_size, c.hidden_size);
  EXPECT_EQ(back.model.intermediate_size, c.intermediate_size);
  EXPECT_EQ(back.model.num_key_value_heads, c.num_key_value_heads);
  EXPECT_EQ(back.model.num_hidden_layers, c.num_hidden_layers);
  EXPECT_EQ(back.model.vocab_size, c.vocab_size);
  EXPECT_EQ(back.model.norm_eps, c.norm_eps);
  EXPECT_EQ(back.model.rope_theta, c.rope_theta);
  EXPECT_EQ(back.model.rope_scaling_factor, 8.0);
  EXPECT_EQ(back.model.max_position_embeddings, c.max_position_embeddings);
  EXPECT_EQ(back.info.special_token_ids, info.special_token_ids);

  c.rope_scaling_factor = 1.0;
  EXPECT_TRUE(hf_config_json(c, DType::F32).at("rope_scaling").is_null());
}

// find_nonfinite: the first NaN/±inf in every dtype, across its 4096-element chunks, at unaligned addresses; the
// largest finite values and subnormals are finite.
TEST(FindNonfinite, FirstNanOrInfInEveryDtypeAnywhere) {
  const double inf = std::numeric_limits<double>::infinity();
  for (DType dt : {DType::F64, DType::F32, DType::BF16, DType::F16}) {
    const size_t n = 9000, size = dtype_size(dt);
    const double largest = dt == DType::F16 ? 65504.0 : dt == DType::BF16 ? 3.3895313892515355e38
                           : dt == DType::F32 ? double(std::numeric_limits<float>::max())
                                              : std::numeric_limits<double>::max();
    std::vector<double> values(n);
    for (size_t i = 0; i < n; ++i) values[i] = i % 3 == 0 ? largest : i % 3 == 1 ? -largest : 1e-40;
    std::vector<unsigned char> buffer(n * size + 1);
    unsigned char* unaligned = buffer.data() + 1;
    convert_values(values.data(), DType::F64, unaligned, dt, n);
    EXPECT_EQ(find_nonfinite(unaligned, dt, n), n) << dtype_name(dt);
    for (size_t at : {size_t(0), size_t(4095), size_t(4096), size_t(8999)}) {
      for (double bad : {std::nan(""), inf, -inf}) {
        std::vector<unsigned char> copy = buffer;
        convert_values(&bad, DType::F64, copy.data() + 1 + at * size, dt, 1);
        if (at > 0) convert_values(&bad, DType::F64, copy.data() + 1 + (n - 1) * size, dt, 1);  // a later one too
        EXPECT_EQ(find_nonfinite(copy.data() + 1, dt, n), at) << dtype_name(dt) << " " << bad << " at " << at;
      }
    }
  }
  const int32_t ids[] = {-1, 0x7FFFFFFF};
  EXPECT_EQ(find_nonfinite(ids, DType::I32, 2), 2u);
}

// ---- weights ----------------------------------------------------------------------------------------------------

class HfCheckpoint : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend_ = create_backend("cpu");
  test::TempDir dir_;

  std::unique_ptr<ParamStore> store(const ModelConfig& c, const LoraConfig& lora = {}) {
    return std::make_unique<ParamStore>(*backend_, c, lora, TrainableConfig{});
  }
  std::vector<double> values(Param& p) { return download_f64(*backend_, p.value); }
  // A saved random model and its store.
  std::unique_ptr<ParamStore> saved(const std::string& dir, const HfSaveOptions& o, const ModelConfig& c) {
    auto s = store(c);
    test::fill_params(*s, *backend_, 7);
    save_hf_folder(dir, *s, *backend_, c, o);
    return s;
  }
  void expect_identical(ParamStore& a, ParamStore& b) {
    for (Param& p : a.all()) EXPECT_EQ(values(p), values(b.get(p.name))) << p.name;
  }
};

TEST_F(HfCheckpoint, SingleFileF32RoundTripIsBitIdentical) {
  HfSaveOptions o;
  o.dtype = DType::F32;
  auto a = saved(dir_.path(), o, test::tiny_llama());
  EXPECT_TRUE(path_exists(dir_ / "model.safetensors"));
  EXPECT_FALSE(path_exists(dir_ / "model.safetensors.index.json"));
  const HfConfig h = read_hf_config(dir_.path());
  EXPECT_EQ(h.info.torch_dtype, "float32");
  auto b = store(h.model);
  const HfLoadReport r = load_hf_weights(dir_.path(), *b, *backend_);
  EXPECT_EQ(r.tensors, int64_t(a->all().size()));
  expect_identical(*a, *b);
}

TEST_F(HfCheckpoint, ShardedRoundTripWithIndex) {
  for (bool tied : {false, true}) {
    test::TempDir dir;
    HfSaveOptions o;
    o.dtype = DType::F32;
    o.max_shard_bytes = 4096;
    auto a = saved(dir.path(), o, test::tiny_llama(11, tied));
    const Json index = Json::parse(read_text_file(dir / "model.safetensors.index.json"));
    std::set<std::string> shard_files;
    for (const auto& [name, file] : index.at("weight_map").items()) shard_files.insert(file.get<std::string>());
    EXPECT_GE(shard_files.size(), 3u);
    EXPECT_TRUE(shard_files.count(hf_shard_name(1, int(shard_files.size()))));
    uint64_t total = 0;
    for (const std::string& f : shard_files) {
      const SafetensorsFile file(dir / f);
      EXPECT_EQ(file.metadata().at("format"), "pt");
      for (const std::string& n : file.names()) {
        total += file.entry(n).nbytes;
        EXPECT_EQ(index["weight_map"][n], f);
      }
    }
    EXPECT_EQ(index.at("metadata").at("total_size").get<uint64_t>(), total);
    EXPECT_EQ(index["weight_map"].size(), a->all().size());
    EXPECT_EQ(index["weight_map"].contains("lm_head.weight"), !tied);
    auto b = store(read_hf_config(dir.path()).model);
    load_hf_weights(dir.path(), *b, *backend_);
    expect_identical(*a, *b);
  }
}

TEST_F(HfCheckpoint, HalfPrecisionRoundTripsEqualRoundedValues) {
  for (DType dt : {DType::BF16, DType::F16}) {
    test::TempDir dir;
    HfSaveOptions o;
    o.dtype = dt;
    auto a = saved(dir.path(), o, test::tiny_llama());
    EXPECT_EQ(read_hf_config(dir.path()).info.torch_dtype, dt == DType::BF16 ? "bfloat16" : "float16");
    EXPECT_EQ(SafetensorsFile(dir / "model.safetensors").entry("model.norm.weight").dtype, dt);
    auto b = store(read_hf_config(dir.path()).model);
    load_hf_weights(dir.path(), *b, *backend_);
    for (Param& p : a->all()) {
      std::vector<double> expected = values(p);
      for (double& v : expected)
        v = dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(float(v))) : f16_to_f32(f32_to_f16(float(v)));
      EXPECT_EQ(values(b->get(p.name)), expected) << p.name << " " << dtype_name(dt);
    }
  }
}

TEST_F(HfCheckpoint, PadTokenRowIsTheMeanOfTheOthers) {
  HfSaveOptions o;
  o.dtype = DType::F32;
  auto a = saved(dir_.path(), o, test::tiny_llama(11));
  auto b = store(test::tiny_llama(12));
  const std::string msg = error_of([&] { load_hf_weights(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("add_pad_token"), std::string::npos) << msg;
  const HfLoadReport r = load_hf_weights(dir_.path(), *b, *backend_, {/*add_pad_token=*/true});
  EXPECT_TRUE(r.padded);
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    const std::vector<double> old = values(a->get(name)), now = values(b->get(name));
    const int64_t D = 16;
    for (int64_t d = 0; d < D; ++d) {
      double mean = 0;
      for (int64_t row = 0; row < 11; ++row) mean += old[size_t(row * D + d)];
      mean /= 11;
      EXPECT_EQ(now[size_t(11 * D + d)], double(float(mean))) << name << " column " << d;
    }
    EXPECT_EQ(std::vector<double>(now.begin(), now.begin() + 11 * D), old) << name << ": existing rows unchanged";
  }
}

TEST_F(HfCheckpoint, MissingTensorAndWrongShapeAreNamed) {
  HfSaveOptions o;
  o.dtype = DType::F32;
  auto a = saved(dir_.path(), o, test::tiny_llama());
  ModelConfig wider = test::tiny_llama();
  wider.intermediate_size = 32;
  auto b = store(wider);
  std::string msg = error_of([&] { load_hf_weights(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[24,16]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[32,16]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;

  ModelConfig deeper = test::tiny_llama();
  deeper.num_hidden_layers = 3;
  auto c = store(deeper);
  msg = error_of([&] { load_hf_weights(dir_.path(), *c, *backend_); });
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.2.self_attn.q_proj.weight"), std::string::npos) << msg;

  ModelConfig shallower = test::tiny_llama();
  shallower.num_hidden_layers = 1;
  auto d = store(shallower);
  msg = error_of([&] { load_hf_weights(dir_.path(), *d, *backend_); });
  EXPECT_NE(msg.find("does not use"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.1."), std::string::npos) << msg;
}

// NaN/inf in a weight file used to load silently and give `perplexity -nan`, exit 0: the loader names the file, the
// tensor, the element and the value, in every dtype, also on the [PAD]-row path.
TEST_F(HfCheckpoint, NonFiniteWeightsAreRefusedAtLoadNamingFileTensorAndElement) {
  const double inf = std::numeric_limits<double>::infinity();
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (double bad : {std::nan(""), inf, -inf}) {
      test::TempDir dir;
      HfSaveOptions o;
      o.dtype = dt;
      saved(dir.path(), o, test::tiny_llama());
      const std::string file = dir / "model.safetensors";
      test::poison_tensor(file, "model.layers.1.mlp.down_proj.weight", 24 + 5, bad);  // row 1, column 5
      auto b = store(test::tiny_llama());
      const std::string msg = error_of([&] { load_hf_weights(dir.path(), *b, *backend_); });
      EXPECT_EQ(msg.find(file + ": `model.layers.1.mlp.down_proj.weight` holds " + (std::isnan(bad) ? "nan" : bad > 0 ? "inf" : "-inf") +
                         " at [1,5] of [16,24] (" + dtype_name(dt) + "); weights must be finite"),
                0u)
          << msg;
    }
  }
  HfSaveOptions o;
  o.dtype = DType::F32;
  saved(dir_.path(), o, test::tiny_llama(11));
  test::poison_tensor(dir_ / "model.safetensors", "lm_head.weight", 3, std::nan(""));
  auto padded = store(test::tiny_llama(12));
  const std::string msg = error_of([&] { load_hf_weights(dir_.path(), *padded, *backend_, {/*add_pad_token=*/true}); });
  EXPECT_NE(msg.find("`lm_head.weight` holds nan at [0,3]"), std::string::npos) << msg;
}

// Nothing non-finite is written: a NaN weight, or a finite one that F16 cannot hold, stops the save naming the
// tensor, before any weight file exists.
TEST_F(HfCheckpoint, SavingRefusesNonFiniteWeightsAndOverflowingConversions) {
  auto a = store(test::tiny_llama());
  test::fill_params(*a, *backend_, 7);
  std::vector<double> v = values(a->get("model.norm.weight"));
  v[2] = std::nan("");
  upload_f64(*backend_, a->get("model.norm.weight").value, v);
  HfSaveOptions o;
  o.dtype = DType::BF16;
  std::string msg = error_of([&] { save_hf_folder(dir_ / "nan", *a, *backend_, test::tiny_llama(), o); });
  EXPECT_NE(msg.find("model.safetensors: `model.norm.weight` holds nan at [2] of [16] (f32); refusing to write"),
            std::string::npos) << msg;
  EXPECT_FALSE(path_exists(dir_ / "nan/model.safetensors"));

  v[2] = 1e6;  // finite, beyond F16's 65504
  upload_f64(*backend_, a->get("model.norm.weight").value, v);
  o.dtype = DType::F16;
  msg = error_of([&] { save_hf_folder(dir_ / "f16", *a, *backend_, test::tiny_llama(), o); });
  EXPECT_NE(msg.find("`model.norm.weight` converted to `f16` holds inf at [2] of [16] (f16); the value is finite in "
                     "f32 but beyond the range of f16"),
            std::string::npos) << msg;
  EXPECT_FALSE(path_exists(dir_ / "f16/model.safetensors"));
  o.dtype = DType::BF16;  // bf16 holds it
  EXPECT_NO_THROW(save_hf_folder(dir_ / "bf16", *a, *backend_, test::tiny_llama(), o));
}

TEST_F(HfCheckpoint, IndexErrors) {
  HfSaveOptions o;
  o.dtype = DType::F32;
  o.max_shard_bytes = 4096;
  auto a = saved(dir_.path(), o, test::tiny_llama());
  const std::string index_path = dir_ / "model.safetensors.index.json";
  const Json index = Json::parse(read_text_file(index_path));
  auto b = store(test::tiny_llama());

  Json dropped = index;  // a needed weight unmapped
  dropped["weight_map"].erase("model.norm.weight");
  write_file_atomic(index_path, dropped.dump());
  std::string msg = error_of([&] { load_hf_weights(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("missing 1 weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.norm.weight"), std::string::npos) << msg;

  Json moved = index;  // mapped to a shard that does not hold it
  const std::string elsewhere = moved["weight_map"]["model.embed_tokens.weight"];
  moved["weight_map"]["model.norm.weight"] = elsewhere;
  write_file_atomic(index_path, moved.dump());
  msg = error_of([&] { load_hf_weights(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("has no tensor of that name"), std::string::npos) << msg;

  Json escaping = index;  // path traversal
  escaping["weight_map"]["model.norm.weight"] = "../model.safetensors";
  write_file_atomic(index_path, escaping.dump());
  msg = error_of([&] { load_hf_weights(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("not a plain file name"), std::string::npos) << msg;

  write_file_atomic(index_path, index.dump());
  const std::string shard = index["weight_map"]["model.norm.weight"];
  fs::remove(dir_ / shard);
  msg = error_of([&] { load_hf_weights(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find(shard), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST_F(HfCheckpoint, IgnoresRotaryBuffersAndTiedHeadButNotStrangers) {
  auto a = store(test::tiny_llama(11, /*tied=*/true));
  test::fill_params(*a, *backend_, 3);
  std::vector<std::vector<float>> data;
  std::vector<SafetensorsWriteItem> items;
  for (Param& p : a->all()) {
    const std::vector<double> v = values(p);
    data.emplace_back(v.begin(), v.end());
    items.push_back({p.name, DType::F32, p.shape, data.back().data()});
  }
  std::vector<float> inv_freq(2, 1.0f), head(11 * 16, 0.5f), stray(4, 0.0f);
  items.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {2}, inv_freq.data()});
  items.push_back({"lm_head.weight", DType::F32, {11, 16}, head.data()});
  write_safetensors(dir_ / "model.safetensors", items);
  auto b = store(test::tiny_llama(11, true));
  const HfLoadReport r = load_hf_weights(dir_.path(), *b, *backend_);
  EXPECT_EQ(r.ignored.size(), 2u);
  expect_identical(*a, *b);

  items.push_back({"model.layers.0.self_attn.q_proj.bias", DType::F32, {4}, stray.data()});
  write_safetensors(dir_ / "model.safetensors", items);
  const std::string msg = error_of([&] { load_hf_weights(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("model.layers.0.self_attn.q_proj.bias"), std::string::npos) << msg;
}

TEST_F(HfCheckpoint, PickleOnlyFolderIsRefusedWithAConversionHint) {
  write_file_atomic(dir_ / "pytorch_model.bin", std::string("\x80\x02}q\x00.", 6));
  write_file_atomic(dir_ / "config.json", llama2_json().dump());
  auto b = store(test::tiny_llama());
  const std::string msg = error_of([&] { load_hf_weights(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("pytorch_model.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("safe_serialization=True"), std::string::npos) << msg;
  fs::remove(dir_ / "pytorch_model.bin");
  EXPECT_NE(error_of([&] { load_hf_weights(dir_.path(), *b, *backend_); }).find("no model.safetensors"),
            std::string::npos);
}

TEST_F(HfCheckpoint, RefusesToDropUnmergedAdapters) {
  LoraConfig lora;
  lora.rank = 2;
  lora.targets = parse_lora_targets("q,v", test::tiny_llama());
  auto a = store(test::tiny_llama(), lora);
  test::fill_params(*a, *backend_, 5);
  const std::string msg = error_of([&] { save_hf_folder(dir_.path(), *a, *backend_, test::tiny_llama(), {}); });
  EXPECT_NE(msg.find("lora_B"), std::string::npos) << msg;
  EXPECT_NE(msg.find("merge"), std::string::npos) << msg;
  EXPECT_FALSE(path_exists(dir_ / "config.json"));
}

TEST_F(HfCheckpoint, CopiesTokenizerFilesAndRemovesStaleWeights) {
  test::TempDir source;
  const std::string spm("\x0a\x00\x01binary\xff", 10);
  write_file_atomic(source / "tokenizer.model", spm);
  write_file_atomic(source / "tokenizer_config.json", R"({"model_max_length": 4096})");
  write_file_atomic(source / "special_tokens_map.json", R"({"bos_token": "<s>"})");
  write_file_atomic(source / "generation_config.json", R"({"bos_token_id": 1})");
  HfSaveOptions o;
  o.max_shard_bytes = 2048;
  o.copy_tokenizer_from = source.path();
  auto a = saved(dir_.path(), o, test::tiny_llama());
  EXPECT_EQ(read_text_file(dir_ / "tokenizer.model"), spm);
  EXPECT_EQ(read_text_file(dir_ / "generation_config.json"), R"({"bos_token_id": 1})");
  EXPECT_FALSE(path_exists(dir_ / "tokenizer.json"));
  // Saving again as one file must not leave the shards (or an index a loader could prefer) behind.
  o.max_shard_bytes = 0;
  saved(dir_.path(), o, test::tiny_llama());
  for (const auto& e : fs::directory_iterator(dir_.path()))
    EXPECT_EQ(e.path().filename().string().rfind("model-", 0), std::string::npos) << e.path();
  EXPECT_FALSE(path_exists(dir_ / "model.safetensors.index.json"));
  for (const auto& e : fs::directory_iterator(dir_.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "left a temporary file " << e.path();
}

// ---- parity with transformers ------------------------------------------------------------------------------------

TEST(HfParity, TransformersLogits) {
  const std::string dir = test::hf_tiny_dir();
  ASSERT_FALSE(dir.empty()) << "tests/fixtures/hf_tiny is committed; run from the repository root";
  const SafetensorsFile ref(test::fixtures_dir() + "/hf_tiny_logits.safetensors");
  const SafetensorsEntry& ids_entry = ref.entry("input_ids");
  ModelOptions o;
  o.config = read_hf_config(dir).model;
  o.batch = ids_entry.shape[0];
  o.seq_len = ids_entry.shape[1];
  std::unique_ptr<Backend> backend = create_backend("cpu");
  Model model(*backend, o);
  const HfLoadReport r = load_hf_weights(dir, model.params(), *backend);
  EXPECT_EQ(r.files.size(), 3u) << "the fixture is sharded";
  std::vector<int32_t> ids(size_t(o.batch * o.seq_len));
  std::memcpy(ids.data(), ids_entry.data, ids.size() * 4);
  const double err = test::rel_error(model.logits(ids.data()), test::file_values(ref.entry("logits")));
  std::printf("HfParity: relative error of our CPU logits vs transformers: %.3g\n", err);
  EXPECT_LT(err, 1e-4);
  // Guard: the fixture's RoPE factor matters (a loader ignoring rope_parameters would fail above).
  o.config.rope_scaling_factor = 1.0;
  Model unscaled(*backend, o);
  load_hf_weights(dir, unscaled.params(), *backend);
  EXPECT_GT(test::rel_error(unscaled.logits(ids.data()), test::file_values(ref.entry("logits"))), 1e-3);
}

}  // namespace
}  // namespace ll
