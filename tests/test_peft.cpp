// PEFT adapter folders (write → read, PEFT's and LongLoRA's names, what is refused), merging (logits of the merged
// folder equal the LoRA model's), and the recorded interop check with transformers + peft
// (scripts/make_hf_fixtures.py --check-ours; its docstring says how to rerun it).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <set>
#include <sstream>

#include "hf_test_util.h"
#include "interop_record.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/merge.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/param_select.h"
#include "core/tensor_host.h"
#include "util/files.h"
#include "util/sha256.h"
#include "zip_test_util.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

using test::error_of;

LoraConfig lora_config(const std::string& targets, int64_t rank = 4, double alpha = 8) {
  LoraConfig l;
  l.rank = rank;
  l.alpha = alpha;
  l.targets = parse_lora_targets(targets, test::tiny_llama());
  return l;
}

// LongLoRA's released adapter_config.json (formats.md §A3), with patches applied.
Json longlora_release_config() {
  return Json::parse(R"({"auto_mapping": null, "base_model_name_or_path": "meta-llama/Llama-2-7b-hf", "bias": "none",
    "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "lora_alpha": 16, "lora_dropout": 0, "modules_to_save": null, "peft_type": "LORA",
    "r": 8, "revision": null, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "task_type": "CAUSAL_LM"})");
}

AdapterConfig read_patched(const test::TempDir& dir, const std::string& patch) {
  Json j = longlora_release_config();
  j.merge_patch(Json::parse(patch));
  write_file_atomic(dir / "adapter_config.json", j.dump());
  return read_adapter_config(dir.path(), test::tiny_llama());
}

// Whether modules_to_save selects the base weight `name` (of test::tiny_llama()).
bool saves(const AdapterConfig& c, const std::string& name) {
  return std::find(c.saved.begin(), c.saved.end(), name) != c.saved.end();
}
bool saves_all_norms(const AdapterConfig& c) {
  for (const char* n : {"model.layers.0.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
                        "model.norm.weight"})
    if (!saves(c, n)) return false;
  return true;
}

// ---- adapter_config.json ------------------------------------------------------------------------------------------

TEST(PeftConfig, ReadsLongLoraAndPeftForms) {
  test::TempDir dir;
  AdapterConfig c = read_patched(dir, "{}");
  EXPECT_EQ(c.lora.rank, 8);
  EXPECT_EQ(c.lora.alpha, 16);
  EXPECT_EQ(c.lora.scale(), 2.0);
  EXPECT_EQ(c.lora.targets, parse_lora_targets("q,k,v,o", test::tiny_llama()));
  EXPECT_TRUE(c.saved.empty());
  EXPECT_EQ(c.base_model_name_or_path, "meta-llama/Llama-2-7b-hf");

  c = read_patched(dir, R"j({"target_modules": ".*\\.(q_proj|v_proj|down_proj)", "modules_to_save": ["embed_tokens", "norm"]})j");
  EXPECT_EQ(c.lora.targets, parse_lora_targets("q,v,down", test::tiny_llama()));
  EXPECT_TRUE(saves(c, "model.embed_tokens.weight") && saves_all_norms(c) && !saves(c, "lm_head.weight"));

  c = read_patched(dir, R"({"target_modules": ["self_attn.q_proj", "mlp.up_proj"], "modules_to_save": ["lm_head"],
                            "lora_dropout": 0.05})");
  EXPECT_EQ(c.lora.targets, parse_lora_targets("q,up", test::tiny_llama()));
  EXPECT_TRUE(saves(c, "lm_head.weight") && !saves(c, "model.embed_tokens.weight"));
  EXPECT_EQ(c.lora.dropout, 0.05);

  // Trainable parameters follow LongLoRA's substring rule, so a subset of the norms is a valid selection.
  c = read_patched(dir, R"({"modules_to_save": ["input_layernorm"]})");
  EXPECT_TRUE(saves(c, "model.layers.1.input_layernorm.weight"));
  EXPECT_FALSE(saves(c, "model.layers.1.post_attention_layernorm.weight") || saves(c, "model.norm.weight"));

  // What PEFT 0.21 writes: many more keys, at their defaults.
  c = read_patched(dir, R"({"use_dora": false, "use_rslora": false, "rank_pattern": {}, "alpha_pattern": {},
                            "lora_bias": false, "exclude_modules": null, "peft_version": "0.21.2", "loftq_config": {},
                            "megatron_core": "megatron.core", "layer_replication": null})");
  EXPECT_EQ(c.lora.rank, 8);
}

TEST(PeftConfig, RejectsWhatWouldChangeTheMath) {
  test::TempDir dir;
  struct Case {
    const char* patch;
    const char* expected;
  } cases[] = {
      {R"({"use_dora": true})", "use_dora"},
      {R"({"use_rslora": true})", "use_rslora"},
      {R"({"rank_pattern": {"q_proj": 16}})", "rank_pattern"},
      {R"({"alpha_pattern": {"q_proj": 32}})", "alpha_pattern"},
      {R"({"fan_in_fan_out": true})", "fan_in_fan_out"},
      {R"({"bias": "all"})", "bias"},
      {R"({"peft_type": "IA3"})", "peft_type"},
      {R"({"task_type": "SEQ_CLS"})", "task_type"},
      {R"({"r": null})", "`r`"},
      {R"({"r": 0})", "`r`"},
      {R"({"lora_alpha": null})", "lora_alpha"},
      {R"({"target_modules": null})", "target_modules"},
      {R"({"target_modules": ["q_proj", "embed_tokens"]})", "\"embed_tokens\""},
      {R"({"target_modules": ".*layers\\.0\\..*q_proj"})", "only some layers"},
      {R"({"target_modules": "("})", "regex"},
      {R"({"layers_to_transform": [0, 1]})", "layers_to_transform"},
      {R"({"modules_to_save": ["q_proj"]})", "\"q_proj\""},  // a linear: an adapter holds no full linear
      {R"({"modules_to_save": ["mlp"]})", "\"mlp\""},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of([&] { read_patched(dir, c.patch); });
    EXPECT_NE(msg.find(c.expected), std::string::npos) << c.patch << "\n  gave: " << msg;
    EXPECT_NE(msg.find("adapter_config.json"), std::string::npos) << msg;
  }
}

// ---- adapter folders ----------------------------------------------------------------------------------------------

class PeftAdapter : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend_ = create_backend("cpu");
  test::TempDir dir_;
  LoraConfig lora_ = lora_config("q,v,gate,down");
  TrainableConfig trainable_ = TrainableConfig::parse("embed,norm");  // LongLoRA's LoRA+: embed and norms

  std::unique_ptr<ParamStore> store(const LoraConfig& lora, const TrainableConfig& t = {}, int64_t vocab = 11) {
    return std::make_unique<ParamStore>(*backend_, test::tiny_llama(vocab), lora, t);
  }
  std::vector<double> values(Param& p) { return download_f64(*backend_, p.value); }
};

TEST_F(PeftAdapter, RoundTripWithPeftAndLongLoraNames) {
  auto a = store(lora_, trainable_);
  test::fill_params(*a, *backend_, 11);
  AdapterSaveOptions o;
  o.base_model_name_or_path = "base";
  o.record = LongLoraRecord{4.0, 128, 11};
  save_adapter(dir_.path(), *a, *backend_, lora_, o);

  // PEFT's names (checked against peft 0.21.2, see peft.h) and LongLoRA's plain names.
  std::set<std::string> expected_adapter, expected_trainable;
  for (const Param& p : a->all()) {
    if (p.role == ParamRole::LoraA || p.role == ParamRole::LoraB || p.trainable)
      expected_adapter.insert("base_model.model." + p.name);
    if (p.trainable && p.role != ParamRole::LoraA && p.role != ParamRole::LoraB) expected_trainable.insert(p.name);
  }
  const SafetensorsFile adapter(dir_ / "adapter_model.safetensors"), trainable(dir_ / "trainable_params.safetensors");
  const std::vector<std::string> an = adapter.names(), tn = trainable.names();
  EXPECT_EQ(std::set<std::string>(an.begin(), an.end()), expected_adapter);
  EXPECT_EQ(std::set<std::string>(tn.begin(), tn.end()), expected_trainable);
  EXPECT_TRUE(adapter.contains("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
  EXPECT_TRUE(adapter.contains("base_model.model.model.layers.0.post_attention_layernorm.weight"));
  EXPECT_TRUE(trainable.contains("model.embed_tokens.weight"));
  EXPECT_TRUE(trainable.contains("model.norm.weight"));
  EXPECT_EQ(adapter.entry("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").shape,
            (std::vector<int64_t>{8, 4}));  // [Hkv·Dh, r]
  EXPECT_EQ(adapter.metadata().at("format"), "pt");

  const Json cfg = Json::parse(read_text_file(dir_ / "adapter_config.json"));
  EXPECT_EQ(cfg.at("peft_type"), "LORA");
  EXPECT_EQ(cfg.at("task_type"), "CAUSAL_LM");
  EXPECT_EQ(cfg.at("r"), 4);
  EXPECT_EQ(cfg.at("lora_alpha"), 8);
  EXPECT_TRUE(cfg.at("lora_alpha").is_number_integer());
  EXPECT_EQ(cfg.at("target_modules"), Json({"q_proj", "v_proj", "gate_proj", "down_proj"}));
  EXPECT_EQ(cfg.at("modules_to_save"), Json({"embed_tokens", "norm"}));
  EXPECT_EQ(cfg.at("bias"), "none");
  EXPECT_EQ(cfg.at("base_model_name_or_path"), "base");

  const AdapterConfig back = read_adapter_config(dir_.path(), test::tiny_llama());
  EXPECT_EQ(back.lora.rank, 4);
  EXPECT_EQ(back.lora.alpha, 8);
  EXPECT_EQ(back.lora.targets, lora_.targets);
  EXPECT_TRUE(saves(back, "model.embed_tokens.weight") && saves_all_norms(back) && !saves(back, "lm_head.weight"));
  const std::optional<LongLoraRecord> record = read_longlora_record(dir_.path());
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->rope_scaling_factor, 4.0);
  EXPECT_EQ(record->model_max_length, 128);
  EXPECT_EQ(adapter_embedding_rows(dir_.path(), test::tiny_llama()), 11);

  auto b = store(back.lora);  // a fresh model, frozen everywhere: loading does not need trainable flags
  test::fill_params(*b, *backend_, 99);
  const AdapterLoadReport r = load_adapter(dir_.path(), *b, *backend_);
  EXPECT_EQ(r.lora_tensors, 2 * 4 * 2);
  EXPECT_EQ(r.base.size(), expected_trainable.size());
  for (Param& p : a->all()) {
    const bool saved = p.role == ParamRole::LoraA || p.role == ParamRole::LoraB || p.trainable;
    if (saved) {
      EXPECT_EQ(values(b->get(p.name)), values(p)) << p.name;
    } else {
      EXPECT_NE(values(b->get(p.name)), values(p)) << p.name << " is not in the adapter and must stay as it was";
    }
  }
}

// An adapter holding NaN/inf is refused at load naming the file and the tensor; save_adapter never writes one.
TEST_F(PeftAdapter, NonFiniteTensorsAreRefusedOnLoadAndSave) {
  auto a = store(lora_, trainable_);
  test::fill_params(*a, *backend_, 11);
  save_adapter(dir_.path(), *a, *backend_, lora_, {});
  const std::string file = dir_ / "adapter_model.safetensors";
  test::poison_tensor(file, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", 1,
                      std::numeric_limits<double>::infinity());
  auto b = store(lora_);
  std::string msg = error_of([&] { load_adapter(dir_.path(), *b, *backend_); });
  EXPECT_EQ(msg.find(file + ": `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` holds inf at [0,1]"),
            0u) << msg;

  Param& lora_b = a->get("model.layers.1.mlp.down_proj.lora_B.weight");
  std::vector<double> v = values(lora_b);
  v.back() = std::nan("");
  upload_f64(*backend_, lora_b.value, v);
  test::TempDir out;
  msg = error_of([&] { save_adapter(out.path(), *a, *backend_, lora_, {}); });
  EXPECT_NE(msg.find("`model.layers.1.mlp.down_proj.lora_B.weight` holds nan"), std::string::npos) << msg;
  EXPECT_NE(msg.find("refusing to write non-finite weights"), std::string::npos) << msg;
  EXPECT_FALSE(path_exists(out / "adapter_model.safetensors"));
  EXPECT_FALSE(path_exists(out / "adapter_config.json"));
}

TEST_F(PeftAdapter, LongLoraStyleFolderWithOnlyTrainableParams) {
  // LongLoRA's layout: adapter_model holds only LoRA (modules_to_save null), trainable_params the embed/norms.
  auto a = store(lora_, trainable_);
  test::fill_params(*a, *backend_, 12);
  save_adapter(dir_.path(), *a, *backend_, lora_);
  std::vector<std::vector<float>> data;
  std::vector<SafetensorsWriteItem> items;
  for (Param& p : a->all()) {
    if (p.role != ParamRole::LoraA && p.role != ParamRole::LoraB) continue;
    const std::vector<double> v = values(p);
    data.emplace_back(v.begin(), v.end());
    items.push_back({"base_model.model." + p.name, DType::F32, p.shape, data.back().data()});
  }
  write_safetensors(dir_ / "adapter_model.safetensors", items);
  Json cfg = Json::parse(read_text_file(dir_ / "adapter_config.json"));
  cfg["modules_to_save"] = nullptr;
  write_file_atomic(dir_ / "adapter_config.json", cfg.dump());

  auto b = store(lora_);
  test::fill_params(*b, *backend_, 98);
  const AdapterLoadReport r = load_adapter(dir_.path(), *b, *backend_);
  EXPECT_EQ(r.base.size(), size_t(1 + 2 * 2 + 1));  // embed, 2 norms per layer, final norm
  for (const char* name : {"model.embed_tokens.weight", "model.layers.1.input_layernorm.weight", "model.norm.weight"})
    EXPECT_EQ(values(b->get(name)), values(a->get(name))) << name;
}

// LongLoRA's eval.py and merge script torch.load `trainable_params.bin` into the model (strict=False): the folder
// carries it beside trainable_params.safetensors, same names, dtypes and bytes (torch reads it: TorchFile.*).
TEST_F(PeftAdapter, TrainableParamsBinForLongLoraScripts) {
  auto a = store(lora_, trainable_);
  test::fill_params(*a, *backend_, 14);
  for (DType dtype : {DType::F32, DType::BF16}) {
    AdapterSaveOptions o;
    o.dtype = dtype;
    const AdapterSaveReport report = save_adapter(dir_.path(), *a, *backend_, lora_, o);
    EXPECT_NE(std::find(report.files.begin(), report.files.end(), "trainable_params.bin"), report.files.end());
    const SafetensorsFile st(dir_ / "trainable_params.safetensors");
    const test::ZipArchive bin = test::read_zip_file(dir_ / "trainable_params.bin");
    const std::vector<std::string> names = st.names();  // name order, as both files are written
    ASSERT_EQ(bin.entries.size(), names.size() + 3) << "data.pkl, byteorder, one record per tensor, version";
    const std::string pkl = bin.find("trainable_params/data.pkl")->data;
    const std::string storage = dtype == DType::F32 ? "ctorch\nFloatStorage\n" : "ctorch\nBFloat16Storage\n";
    size_t at = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      const SafetensorsEntry& e = st.entry(names[i]);
      const test::ZipEntry* rec = bin.find("trainable_params/data/" + std::to_string(i));
      ASSERT_NE(rec, nullptr) << names[i];
      EXPECT_EQ(rec->data, std::string(static_cast<const char*>(e.data), e.nbytes)) << names[i];
      at = pkl.find(names[i], at);  // LongLoRA's plain names (model.embed_tokens.weight, …), in the same order
      ASSERT_NE(at, std::string::npos) << names[i] << " is not in data.pkl (or out of order)";
      EXPECT_EQ(pkl.find(storage, at), pkl.find("ctorch\n", at)) << names[i] << " has another storage dtype";
    }
    EXPECT_TRUE(st.contains("model.embed_tokens.weight") && st.contains("model.layers.1.input_layernorm.weight"));
  }
}

TEST_F(PeftAdapter, LoraOnlyResaveLeavesNoStaleTrainableParams) {
  // A LoRA+ adapter, then a LoRA-only one into the same folder: loading must not bring back the first one's
  // embedding and norms, and LongLoRA's scripts must find an (empty) trainable_params.bin rather than the old one.
  auto plus = store(lora_, trainable_);
  test::fill_params(*plus, *backend_, 15);
  save_adapter(dir_.path(), *plus, *backend_, lora_);
  auto lora_only = store(lora_);
  test::fill_params(*lora_only, *backend_, 16);
  save_adapter(dir_.path(), *lora_only, *backend_, lora_);

  auto loaded = store(lora_);
  test::fill_params(*loaded, *backend_, 17);
  const std::vector<double> own_embed = values(loaded->get("model.embed_tokens.weight"));
  const AdapterLoadReport r = load_adapter(dir_.path(), *loaded, *backend_);
  EXPECT_TRUE(r.base.empty()) << "loaded stale base weights, e.g. " << r.base.front();
  EXPECT_EQ(values(loaded->get("model.embed_tokens.weight")), own_embed);
  EXPECT_EQ(values(loaded->get("model.layers.0.self_attn.q_proj.lora_A.weight")),
            values(lora_only->get("model.layers.0.self_attn.q_proj.lora_A.weight")));
  const test::ZipArchive bin = test::read_zip_file(dir_ / "trainable_params.bin");
  ASSERT_NE(bin.find("trainable_params/data.pkl"), nullptr);
  EXPECT_EQ(bin.find("trainable_params/data.pkl")->data, std::string("\x80\x02}.")) << "an empty dict";
  EXPECT_EQ(bin.entries.size(), 3u);
  EXPECT_TRUE(SafetensorsFile(dir_ / "trainable_params.safetensors").names().empty());
}

// modules_to_save selects (by PEFT's endswith rule) exactly the trained modules, and reads back as what trained.
TEST_F(PeftAdapter, ModulesToSaveSelectExactlyTheTrainedModules) {
  struct Case {
    const char* trainable;
    Json modules;
    std::vector<std::string> saved;
  } cases[] = {
      {"input_layernorm", {"input_layernorm"},
       {"model.layers.0.input_layernorm.weight", "model.layers.1.input_layernorm.weight"}},
      {"model.norm", {"model.norm"}, {"model.norm.weight"}},
      {"lm_head,post_attention", {"post_attention_layernorm", "lm_head"},
       {"model.layers.0.post_attention_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
        "lm_head.weight"}},
  };
  for (const Case& c : cases) {
    auto a = store(lora_, TrainableConfig::parse(c.trainable));
    test::fill_params(*a, *backend_, 21);
    save_adapter(dir_.path(), *a, *backend_, lora_);
    const Json written = Json::parse(read_text_file(dir_ / "adapter_config.json"));
    EXPECT_EQ(written.at("modules_to_save"), c.modules) << c.trainable;
    EXPECT_EQ(read_adapter_config(dir_.path(), test::tiny_llama()).saved, c.saved) << c.trainable;
    auto b = store(lora_);
    EXPECT_EQ(load_adapter(dir_.path(), *b, *backend_).base, c.saved) << c.trainable;
  }
  // A tied model: a trainable head is the shared embedding, saved as embed_tokens.
  auto tied =
      std::make_unique<ParamStore>(*backend_, test::tiny_llama(11, true), lora_, TrainableConfig::parse("lm_head"));
  save_adapter(dir_.path(), *tied, *backend_, lora_);
  EXPECT_EQ(Json::parse(read_text_file(dir_ / "adapter_config.json")).at("modules_to_save"), Json({"embed_tokens"}));
}

TEST_F(PeftAdapter, RefusesPicklesStaleCopiesAndMismatches) {
  auto a = store(lora_, trainable_);
  test::fill_params(*a, *backend_, 13);
  save_adapter(dir_.path(), *a, *backend_, lora_);
  auto b = store(lora_);

  // A trainable_params.safetensors that disagrees with adapter_model.safetensors.
  std::vector<float> norm(16, 2.0f);
  write_safetensors(dir_ / "trainable_params.safetensors", {{"model.norm.weight", DType::F32, {16}, norm.data()}});
  std::string msg = error_of([&] { load_adapter(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("stale"), std::string::npos) << msg;
  fs::remove(dir_ / "trainable_params.safetensors");
  fs::remove(dir_ / "trainable_params.bin");  // from here on adapter_model alone holds the embed and norms

  // A model built with another rank or other targets.
  auto wrong_rank = store(lora_config("q,v,gate,down", 2));
  msg = error_of([&] { load_adapter(dir_.path(), *wrong_rank, *backend_); });
  EXPECT_NE(msg.find("rank"), std::string::npos) << msg;
  auto fewer = store(lora_config("q,v"));
  msg = error_of([&] { load_adapter(dir_.path(), *fewer, *backend_); });
  EXPECT_NE(msg.find("gate_proj"), std::string::npos) << msg;
  // A model with another vocabulary.
  auto bigger = store(lora_, {}, 12);
  msg = error_of([&] { load_adapter(dir_.path(), *bigger, *backend_); });
  EXPECT_NE(msg.find("model.embed_tokens.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[11,16]"), std::string::npos) << msg;

  // A missing LoRA tensor.
  const SafetensorsFile full(dir_ / "adapter_model.safetensors");
  std::vector<SafetensorsWriteItem> items;
  for (const std::string& n : full.names()) {
    if (n.find("layers.1.self_attn.q_proj.lora_A") != std::string::npos) continue;
    const SafetensorsEntry& e = full.entry(n);
    items.push_back({n, e.dtype, e.shape, e.data});
  }
  write_safetensors(dir_ / "partial.safetensors", items);
  fs::rename(dir_ / "partial.safetensors", dir_ / "adapter_model.safetensors");
  msg = error_of([&] { load_adapter(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("model.layers.1.self_attn.q_proj.lora_A.weight"), std::string::npos) << msg;

  // Pickles only.
  fs::remove(dir_ / "adapter_model.safetensors");
  write_file_atomic(dir_ / "adapter_model.bin", "pickle");
  msg = error_of([&] { load_adapter(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("adapter_model.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("save_file"), std::string::npos) << msg;
  save_adapter(dir_.path(), *a, *backend_, lora_);
  fs::remove(dir_ / "trainable_params.safetensors");
  write_file_atomic(dir_ / "trainable_params.bin", "pickle");
  msg = error_of([&] { load_adapter(dir_.path(), *b, *backend_); });
  EXPECT_NE(msg.find("trainable_params.bin"), std::string::npos) << msg;

  // Full fine-tuning cannot be an adapter.
  auto full_ft = store(lora_, TrainableConfig::parse("", true));
  msg = error_of([&] { save_adapter(dir_.path(), *full_ft, *backend_, lora_); });
  EXPECT_NE(msg.find("full fine-tuning"), std::string::npos) << msg;
}

// ---- merge --------------------------------------------------------------------------------------------------------

ModelOptions tiny_options(int64_t vocab, const LoraConfig& lora, const TrainableConfig& t = {}) {
  ModelOptions o;
  o.config = test::tiny_llama(vocab);
  o.lora = lora;
  o.trainable = t;
  o.batch = 2;
  o.seq_len = 8;
  return o;
}

std::vector<int32_t> tokens(int64_t n, int64_t vocab) {
  Rng rng(5);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& x : t) x = int32_t(rng.below(uint64_t(vocab)));
  return t;
}

// Logits of a LoRA-free model loaded from an HF folder.
std::vector<double> folder_logits(Backend& backend, const std::string& dir, const std::vector<int32_t>& ids,
                                  int64_t batch, int64_t seq_len) {
  ModelOptions o;
  o.config = read_hf_config(dir).model;
  o.batch = batch;
  o.seq_len = seq_len;
  Model m(backend, o);
  load_hf_weights(dir, m.params(), backend);
  return m.logits(ids.data());
}

TEST(Merge, MergedFolderGivesTheLoraModelsLogits) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  const LoraConfig lora = lora_config("q,k,v,o,gate,up,down");
  Model model(*backend, tiny_options(11, lora, TrainableConfig::parse("embed,norm")));
  test::fill_params(model.params(), *backend, 21);  // B ≠ 0: the adapters change the function
  const std::vector<int32_t> ids = tokens(16, 11);
  const std::vector<double> with_lora = model.logits(ids.data());

  test::TempDir dir;
  EXPECT_EQ(merge_lora(model.params(), *backend, lora), 2 * 7);
  HfSaveOptions o;
  o.dtype = DType::F32;
  save_hf_folder(dir.path(), model.params(), *backend, model.options().config, o);
  const std::vector<double> merged = folder_logits(*backend, dir.path(), ids, 2, 8);
  const double err = test::rel_error(merged, with_lora);
  std::printf("Merge: relative error of merged vs unmerged logits: %.3g\n", err);
  EXPECT_LT(err, 1e-5);

  // Guard: without the merge the adapters would have mattered.
  Model base_only(*backend, tiny_options(11, {}));
  test::fill_params(base_only.params(), *backend, 21);
  EXPECT_GT(test::rel_error(base_only.logits(ids.data()), with_lora), 1e-2);
}

TEST(Merge, PipelinePadsRecordsRopeAndCopiesTokenizer) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  test::TempDir base, adapter, out;
  // Base folder, vocab 11, with tokenizer files.
  {
    ParamStore s(*backend, test::tiny_llama(11), {}, {});
    test::fill_params(s, *backend, 31);
    HfSaveOptions o;
    o.dtype = DType::F32;
    o.info.special_token_ids = {{"bos_token_id", 1}, {"eos_token_id", 2}};
    save_hf_folder(base.path(), s, *backend, test::tiny_llama(11), o);
    write_file_atomic(base / "tokenizer.model", std::string("spm\0model", 9));
    write_file_atomic(base / "tokenizer_config.json", "{}");
  }
  // The LoRA model LongLoRA would train: vocab 12 ([PAD] = mean row), LoRA on q/k/v/o, trainable embed + norms.
  const LoraConfig lora = lora_config("q,k,v,o", 4, 16);
  ModelOptions mo = tiny_options(12, lora, TrainableConfig::parse("embed,norm"));
  mo.config.rope_scaling_factor = 4.0;
  Model model(*backend, mo);
  load_hf_weights(base.path(), model.params(), *backend, {true});
  Rng rng(41);
  for (Param& p : model.params().all()) {
    if (!p.trainable) continue;
    std::vector<double> v = download_f64(*backend, p.value);
    for (double& x : v) x += rng.uniform(-0.2, 0.2);
    upload_f64(*backend, p.value, v);
  }
  AdapterSaveOptions ao;
  ao.record = LongLoraRecord{4.0, 128, 12};
  save_adapter(adapter.path(), model.params(), *backend, lora, ao);
  const std::vector<int32_t> ids = tokens(16, 12);
  const std::vector<double> reference = model.logits(ids.data());

  MergeOptions m;
  m.base_model = base.path();
  m.peft_model = adapter.path();
  m.save_path = out.path() + "/merged";
  m.max_shard_bytes = 3000;
  m.dtype = "f32";
  std::ostringstream log;
  merge_adapter_folder(m, log);
  std::printf("%s", log.str().c_str());
  const HfConfig merged = read_hf_config(m.save_path);
  EXPECT_EQ(merged.model.vocab_size, 12);
  EXPECT_EQ(merged.model.rope_scaling_factor, 4.0);
  EXPECT_EQ(merged.info.special_token_ids.at("eos_token_id"), 2);
  EXPECT_EQ(read_text_file(m.save_path + "/tokenizer.model"), std::string("spm\0model", 9));
  EXPECT_TRUE(path_exists(m.save_path + "/model.safetensors.index.json"));
  const double err = test::rel_error(folder_logits(*backend, m.save_path, ids, 2, 8), reference);
  std::printf("Merge pipeline: relative error of merged folder vs LoRA model logits: %.3g\n", err);
  EXPECT_LT(err, 1e-5);

  // Without longlora.json the factor must come from a flag.
  fs::remove(adapter / "longlora.json");
  std::string msg = error_of([&] { merge_adapter_folder(m, log); });
  EXPECT_NE(msg.find("--context_size"), std::string::npos) << msg;
  m.context_size = 128;  // LongLoRA's rule: ceil(128 / (32 × 1)) = 4
  merge_adapter_folder(m, log);
  EXPECT_EQ(read_hf_config(m.save_path).model.rope_scaling_factor, 4.0);
  m.add_pad_token = "false";
  msg = error_of([&] { merge_adapter_folder(m, log); });
  EXPECT_NE(msg.find("12 rows"), std::string::npos) << msg;
  m.add_pad_token = "auto";
  m.save_path = base.path();
  msg = error_of([&] { merge_adapter_folder(m, log); });
  EXPECT_NE(msg.find("must be a new folder"), std::string::npos) << msg;
}

// ---- interop with transformers + peft (recorded by scripts/make_hf_fixtures.py --check-ours) ------------------------

constexpr double kTrainRopeFactor = 4.0;  // must match TRAIN_ROPE_FACTOR in the script

// Writes adapter/, merged/ and ours_logits.safetensors into `dir`, deterministically from the committed hf_tiny.
void write_interop_case(const std::string& dir) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  const std::string tiny = test::hf_tiny_dir();
  const SafetensorsFile ref(test::fixtures_dir() + "/hf_tiny_logits.safetensors");
  const SafetensorsEntry& ids_entry = ref.entry("input_ids");
  std::vector<int32_t> ids(size_t(ids_entry.shape[0] * ids_entry.shape[1]));
  std::memcpy(ids.data(), ids_entry.data, ids.size() * 4);

  ModelOptions o;
  o.config = read_hf_config(tiny).model;
  o.config.rope_scaling_factor = kTrainRopeFactor;
  o.lora = lora_config("q,k,v,o,gate,up,down", 4, 8);
  o.trainable = TrainableConfig::parse("embed,norm");
  o.batch = ids_entry.shape[0];
  o.seq_len = ids_entry.shape[1];
  Model model(*backend, o);
  load_hf_weights(tiny, model.params(), *backend);
  Rng rng(2024);  // "trained" values: uniform draws, bit-identical everywhere
  for (Param& p : model.params().all()) {
    if (!p.trainable) continue;
    std::vector<double> v = download_f64(*backend, p.value);
    for (double& x : v) x = (p.role == ParamRole::LoraA || p.role == ParamRole::LoraB) ? rng.uniform(-0.3, 0.3)
                                                                                       : x + rng.uniform(-0.1, 0.1);
    upload_f64(*backend, p.value, v);
  }
  AdapterSaveOptions ao;
  ao.base_model_name_or_path = "tests/fixtures/hf_tiny";
  ao.record = LongLoraRecord{kTrainRopeFactor, 512, o.config.vocab_size};  // ceil(512 / (64 × 2)) = 4
  save_adapter(dir + "/adapter", model.params(), *backend, o.lora, ao);
  const std::vector<double> lora_logits = model.logits(ids.data());

  MergeOptions m;
  m.base_model = tiny;
  m.peft_model = dir + "/adapter";
  m.save_path = dir + "/merged";
  m.max_shard_bytes = 30000;
  m.dtype = "f32";
  std::ostringstream log;
  merge_adapter_folder(m, log);
  const std::vector<double> merged_logits = folder_logits(*backend, m.save_path, ids, o.batch, o.seq_len);
  EXPECT_LT(test::rel_error(merged_logits, lora_logits), 1e-5);

  const std::vector<float> lf(lora_logits.begin(), lora_logits.end()), mf(merged_logits.begin(), merged_logits.end());
  const int64_t rows = int64_t(ids.size()), vocab = o.config.vocab_size;
  write_safetensors(dir + "/ours_logits.safetensors",
                    {{"input_ids", DType::I32, ids_entry.shape, ids.data()},
                     {"lora_logits", DType::F32, {rows, vocab}, lf.data()},
                     {"merged_logits", DType::F32, {rows, vocab}, mf.data()}});
}

TEST(PeftInterop, Sha256KnownVectors) {  // the digest the interop record relies on (FIPS 180-4 examples)
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;  // one million 'a', fed in uneven pieces
  const std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    const size_t n = std::min(left, chunk.size());
    h.update(chunk.data(), n);
    left -= n;
  }
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(PeftInterop, MatchesRecordedCheck) {
  ASSERT_FALSE(test::hf_tiny_dir().empty()) << "tests/fixtures/hf_tiny is committed; run from the repository root";
  // LL_INTEROP_DIR: set by the rerun steps in scripts/make_hf_fixtures.py
  const test::InteropOutput output("LL_INTEROP_DIR", {"adapter", "merged", "ours_logits.safetensors"});
  ASSERT_TRUE(output.usable());
  write_interop_case(output.dir());
  if (output.kept())
    std::printf("PeftInterop: wrote %s; now run scripts/make_hf_fixtures.py --check-ours %s\n", output.dir().c_str(),
                output.dir().c_str());

  const Json record = Json::parse(read_text_file(test::fixtures_dir() + "/hf_interop.json"));
  std::printf("PeftInterop: recorded max relative error %.3g (transformers %s, peft %s)\n",
              record.at("max_rel_err").get<double>(), record.at("transformers_version").get<std::string>().c_str(),
              record.at("peft_version").get<std::string>().c_str());
  test::expect_files_match_record(record, output.dir(), {"adapter", "merged"}, "transformers/peft",
                                  "scripts/make_hf_fixtures.py");
}

}  // namespace
}  // namespace ll
