#include "io/peft.h"

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

// GCC 12's libstdc++ <regex> trips -Wmaybe-uninitialized under -fsanitize (a known false positive in the header).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#pragma GCC diagnostic pop

#include "io/json_util.h"
#include "io/param_io.h"
#include "io/safetensors.h"
#include "io/torch_file.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {
namespace {

using Json = nlohmann::json;

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kAdapterFile = "adapter_model.safetensors";
constexpr const char* kTrainableFile = "trainable_params.safetensors";
constexpr const char* kTrainableTorchFile = "trainable_params.bin";  // what LongLoRA's scripts torch.load
constexpr const char* kRecordFile = "longlora.json";
constexpr const char* kPeftPrefix = "base_model.model.";  // PeftModel → LoraModel → LlamaForCausalLM
constexpr int kProbeLayers = 128;                          // layers probed when resolving target_modules (70B has 80)

const Json* field(const Json& j, const char* key) { return json_field(j, key); }

std::string module_name(int layer, LinearSlot slot) {
  return str_cat("model.layers.", layer, int(slot) < 4 ? ".self_attn." : ".mlp.", linear_slot_name(slot));
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// target_modules → which projections carry adapters, matched the way PEFT matches module names.
std::array<bool, kNumLinearSlots> resolve_targets(const Json& targets, const std::string& where) {
  std::function<bool(const std::string&)> matches;
  std::vector<std::string> entries;
  if (targets.is_string()) {
    std::regex re;
    try {
      re = std::regex(targets.get<std::string>());
    } catch (const std::regex_error& e) {
      fail(where, ": `target_modules` regex ", targets.dump(), " does not compile (", e.what(), ")");
    }
    matches = [re](const std::string& name) { return std::regex_match(name, re); };
  } else if (targets.is_array() && !targets.empty()) {
    for (const Json& t : targets) {
      if (!t.is_string()) fail(where, ": `target_modules` entries must be strings, got ", t.dump());
      entries.push_back(t.get<std::string>());
    }
    matches = [entries](const std::string& name) {
      for (const std::string& t : entries)
        if (name == t || ends_with(name, "." + t)) return true;
      return false;
    };
  } else {
    fail(where, ": `target_modules` must be a non-empty list of module names or a regex string, got ", targets.dump());
  }
  std::array<bool, kNumLinearSlots> on{};
  for (int s = 0; s < kNumLinearSlots; ++s) {
    int hits = 0;
    for (int l = 0; l < kProbeLayers; ++l) hits += matches(module_name(l, LinearSlot(s)));
    if (hits != 0 && hits != kProbeLayers)
      fail(where, ": `target_modules` ", targets.dump(), " selects ", linear_slot_name(LinearSlot(s)),
           " in only some layers; adapters on a subset of layers are not supported");
    on[s] = hits > 0;
  }
  for (const std::string& t : entries) {
    bool used = false;
    for (int s = 0; s < kNumLinearSlots; ++s) {
      const std::string n = module_name(0, LinearSlot(s));
      used = used || n == t || ends_with(n, "." + t);
    }
    if (!used)
      fail(where, ": `target_modules` entry \"", t,
           "\" names no projection this engine can adapt (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
  }
  bool any = false;
  for (bool b : on) any = any || b;
  if (!any) fail(where, ": `target_modules` ", targets.dump(), " selects no projection of a Llama model");
  return on;
}

// modules_to_save → which base weights, by PEFT's rule: a module is selected when its name ends with an entry.
TrainableConfig resolve_modules_to_save(const std::vector<std::string>& modules, const std::string& where) {
  TrainableConfig saved;
  for (const std::string& m : modules) {
    if (m.empty()) fail(where, ": `modules_to_save` has an empty entry");
    const bool embed = ends_with("model.embed_tokens", m), head = ends_with("lm_head", m);
    const bool attn_norm = ends_with("model.layers.0.input_layernorm", m);
    const bool mlp_norm = ends_with("model.layers.0.post_attention_layernorm", m);
    const bool final_norm = ends_with("model.norm", m);
    const bool any_norm = attn_norm || mlp_norm || final_norm;
    if (any_norm && !(attn_norm && mlp_norm && final_norm))
      fail(where, ": `modules_to_save` entry \"", m,
           "\" selects only some of the norms; this engine trains and saves all norms together (use \"norm\")");
    if (!embed && !head && !any_norm)
      fail(where, ": `modules_to_save` entry \"", m,
           "\" is not supported; this engine saves only embed_tokens, the norms (\"norm\") and lm_head");
    saved.embed = saved.embed || embed;
    saved.norm = saved.norm || any_norm;
    saved.lm_head = saved.lm_head || head;
  }
  return saved;
}

void reject_if(bool cond, const std::string& where, const std::string& what) {
  if (cond) fail(where, ": ", what, " is not supported");
}

// The adapter's base weights per TrainableConfig (embed, all norms, untied lm_head).
bool selected(const Param& p, const TrainableConfig& t) {
  switch (p.kind) {
    case ParamKind::Embed: return t.embed;
    case ParamKind::AttnNorm:
    case ParamKind::MlpNorm:
    case ParamKind::FinalNorm: return t.norm;
    case ParamKind::LmHead: return t.lm_head;
    default: return false;
  }
}

void check_store_matches(ParamStore& params, const LoraConfig& lora, const std::string& where) {
  for (const Param& p : params.all()) {
    if (!is_lora(p)) continue;
    LL_CHECK(lora.on(p.slot), where, ": the model has `", p.name, "` but the adapter config does not target ",
             linear_slot_name(p.slot), "; build the model with the adapter's LoRA config");
    const int64_t rank = p.kind == ParamKind::LoraA ? p.shape[0] : p.shape[1];
    LL_CHECK(rank == lora.rank, where, ": the model's `", p.name, "` has rank ", rank, " but the adapter has r = ",
             lora.rank);
  }
  for (int s = 0; s < kNumLinearSlots; ++s)
    LL_CHECK(!lora.on(LinearSlot(s)) || params.layer(0).lora_a[s] != nullptr, where, ": the adapter targets ",
             linear_slot_name(LinearSlot(s)), " but the model was built without adapters there");
}

}  // namespace

AdapterSaveReport save_adapter(const std::string& dir, ParamStore& params, Backend& backend, const LoraConfig& lora,
                               const AdapterSaveOptions& options) {
  LL_CHECK(lora.enabled(), "save_adapter: the model has no LoRA adapters (rank 0); save an HF folder instead");
  LL_CHECK(options.dtype == DType::F32 || options.dtype == DType::BF16 || options.dtype == DType::F16,
           "save_adapter: dtype must be f32, bf16 or f16, got ", dtype_name(options.dtype));
  check_store_matches(params, lora, "save_adapter");
  std::vector<Param*> lora_params, base_params;
  TrainableConfig saved;
  for (Param& p : params.all()) {
    if (is_lora(p)) {
      lora_params.push_back(&p);
    } else if (p.trainable) {
      LL_CHECK(p.kind != ParamKind::Linear, "save_adapter: `", p.name,
               "` trains (full fine-tuning), which an adapter cannot hold; save an HF folder (save_hf_folder)");
      base_params.push_back(&p);
      saved.embed = saved.embed || p.kind == ParamKind::Embed;
      saved.norm = saved.norm || p.is_norm();
      saved.lm_head = saved.lm_head || p.kind == ParamKind::LmHead;
    }
  }
  Json modules = Json::array();
  if (saved.embed) modules.push_back("embed_tokens");
  if (saved.norm) modules.push_back("norm");  // PEFT suffix-matches it: input_layernorm, post_attention_layernorm, norm
  if (saved.lm_head) modules.push_back("lm_head");
  Json targets = Json::array();
  for (int s = 0; s < kNumLinearSlots; ++s)
    if (lora.on(LinearSlot(s))) targets.push_back(linear_slot_name(LinearSlot(s)));

  // Exactly the keys of LongLoRA's released adapters (formats.md §A3): every PEFT version accepts them.
  Json config = {{"auto_mapping", nullptr},
                 {"base_model_name_or_path", options.base_model_name_or_path},
                 {"bias", "none"},
                 {"fan_in_fan_out", false},
                 {"inference_mode", true},
                 {"init_lora_weights", true},
                 {"layers_pattern", nullptr},
                 {"layers_to_transform", nullptr},
                 {"lora_dropout", lora.dropout},
                 {"modules_to_save", modules.empty() ? Json() : modules},
                 {"peft_type", "LORA"},
                 {"r", lora.rank},
                 {"revision", nullptr},
                 {"target_modules", targets},
                 {"task_type", "CAUSAL_LM"}};
  if (lora.alpha == std::floor(lora.alpha)) {
    config["lora_alpha"] = int64_t(lora.alpha);  // PEFT writes an int; keep files alike
  } else {
    config["lora_alpha"] = lora.alpha;
  }

  make_directories(dir);
  AdapterSaveReport report;
  std::vector<Param*> adapter_tensors = lora_params;
  adapter_tensors.insert(adapter_tensors.end(), base_params.begin(), base_params.end());
  write_params(dir + "/" + kAdapterFile, adapter_tensors, backend, options.dtype, kPeftPrefix);
  report.files.push_back(kAdapterFile);
  // Both trainable_params files always, empty when only LoRA trains: LongLoRA's eval.py refuses a folder without the
  // .bin, and an earlier save's files in this folder must never be read back as this adapter's.
  const HostTensors trainable = host_copies(base_params, backend, options.dtype, dir + "/" + kTrainableFile);
  write_safetensors(dir + "/" + kTrainableFile, trainable.items);
  write_torch_state_dict(dir + "/" + kTrainableTorchFile, trainable.items);
  report.files.push_back(kTrainableFile);
  report.files.push_back(kTrainableTorchFile);
  if (options.record) {
    const Json record = {{"rope_scaling_factor", options.record->rope_scaling_factor},
                         {"model_max_length", options.record->model_max_length},
                         {"vocab_size", options.record->vocab_size}};
    write_file_atomic(dir + "/" + kRecordFile, record.dump(2) + "\n");
    report.files.push_back(kRecordFile);
  }
  write_file_atomic(dir + "/" + kConfigFile, config.dump(2) + "\n");
  report.files.push_back(kConfigFile);
  report.lora_tensors = int64_t(lora_params.size());
  report.base_tensors = int64_t(base_params.size());
  return report;
}

namespace {

// `r` sizes every LoRA tensor the model allocates: it must be the rank of the adapter's tensors (lora_A [r, in],
// lora_B [out, r]), checked before anything is allocated (r = 2^31 used to end in bad_alloc).
void check_rank_matches_tensors(int64_t rank, const std::string& adapter_file, const std::string& config_path) {
  if (!path_exists(adapter_file)) return;  // load_adapter names the missing file
  const SafetensorsFile file(adapter_file);
  for (const std::string& name : file.names()) {
    const bool a = ends_with(name, ".lora_A.weight"), b = ends_with(name, ".lora_B.weight");
    if (!a && !b) continue;
    const SafetensorsEntry& e = file.entry(name);
    if (e.shape.size() != 2) continue;  // load_adapter names the bad shape
    if (e.shape[a ? 0 : 1] != rank)
      fail(config_path, ": `r` is ", rank, " but `", name, "` is ", shape_text(e.shape),
           a ? " (r × in)" : " (out × r)", " in ", adapter_file, "; adapter_config.json and the adapter's tensors disagree");
  }
}

}  // namespace

AdapterConfig read_adapter_config(const std::string& dir) {
  const std::string path = dir + "/" + kConfigFile;
  LL_CHECK(path_exists(path), "`", dir, "` has no ", kConfigFile, " (expected a PEFT LoRA adapter folder)");
  const Json j = read_json_file(path);
  if (!j.is_object()) fail(path, ": must be a JSON object");
  const Json* type = field(j, "peft_type");
  if (type == nullptr || *type != "LORA")
    fail(path, ": `peft_type` is ", type ? type->dump() : "missing", "; only LoRA adapters (\"LORA\") are supported");
  if (const Json* task = field(j, "task_type"))
    if (*task != "CAUSAL_LM") fail(path, ": `task_type` is ", task->dump(), "; expected \"CAUSAL_LM\"");

  AdapterConfig out;
  const Json* r = field(j, "r");
  if (r == nullptr || !r->is_number_integer() || r->get<int64_t>() <= 0)
    fail(path, ": `r` must be a positive integer, got ", r ? r->dump() : "nothing");
  out.lora.rank = r->get<int64_t>();
  const Json* alpha = field(j, "lora_alpha");
  if (alpha == nullptr || !alpha->is_number()) fail(path, ": `lora_alpha` must be a number, got ", alpha ? alpha->dump() : "nothing");
  out.lora.alpha = alpha->get<double>();
  const Json* targets = field(j, "target_modules");
  if (targets == nullptr) fail(path, ": `target_modules` is missing");
  out.lora.targets = resolve_targets(*targets, path);
  if (const Json* d = field(j, "lora_dropout")) {
    if (!d->is_number() || d->get<double>() < 0 || d->get<double>() >= 1)
      fail(path, ": `lora_dropout` must be a number in [0, 1), got ", d->dump());
    out.lora.dropout = d->get<double>();
  }
  if (const Json* b = field(j, "base_model_name_or_path"))
    if (b->is_string()) out.base_model_name_or_path = b->get<std::string>();

  auto flag = [&](const char* key) { const Json* v = field(j, key); return v != nullptr && *v == true; };
  auto non_empty = [&](const char* key) { const Json* v = field(j, key); return v != nullptr && !v->empty(); };
  reject_if(flag("use_dora"), path, "`use_dora: true` (DoRA)");
  reject_if(flag("use_rslora"), path, "`use_rslora: true` (its scale α/√r differs from LongLoRA's α/r)");
  reject_if(flag("fan_in_fan_out"), path, "`fan_in_fan_out: true` (transposed GPT-2-style weights)");
  reject_if(flag("lora_bias"), path, "`lora_bias: true`");
  reject_if(non_empty("rank_pattern"), path, "a non-empty `rank_pattern` (per-module ranks)");
  reject_if(non_empty("alpha_pattern"), path, "a non-empty `alpha_pattern` (per-module alphas)");
  reject_if(non_empty("layers_to_transform"), path, "`layers_to_transform` (adapters on a subset of layers)");
  reject_if(non_empty("layer_replication"), path, "`layer_replication`");
  reject_if(non_empty("trainable_token_indices"), path, "`trainable_token_indices`");
  reject_if(non_empty("target_parameters"), path, "`target_parameters`");
  reject_if(non_empty("exclude_modules"), path, "`exclude_modules`");
  if (const Json* bias = field(j, "bias"))
    reject_if(*bias != "none", path, str_cat("`bias: ", bias->dump(), "` (only \"none\")"));

  if (const Json* m = field(j, "modules_to_save")) {
    if (!m->is_array()) fail(path, ": `modules_to_save` must be a list or null, got ", m->dump());
    for (const Json& name : *m) {
      if (!name.is_string()) fail(path, ": `modules_to_save` entries must be strings, got ", name.dump());
      out.modules_to_save.push_back(name.get<std::string>());
    }
  }
  out.saved = resolve_modules_to_save(out.modules_to_save, path);
  check_rank_matches_tensors(out.lora.rank, dir + "/" + kAdapterFile, path);
  return out;
}

std::optional<LongLoraRecord> read_longlora_record(const std::string& dir) {
  const std::string path = dir + "/" + kRecordFile;
  if (!path_exists(path)) return std::nullopt;
  const Json j = read_json_file(path);
  LongLoraRecord r;
  try {
    r.rope_scaling_factor = j.at("rope_scaling_factor").get<double>();
    r.model_max_length = j.value("model_max_length", int64_t(0));
    r.vocab_size = j.value("vocab_size", int64_t(0));
  } catch (const Json::exception& e) {
    fail(path, ": expected {\"rope_scaling_factor\": F, \"model_max_length\": N, \"vocab_size\": V} (", e.what(), ")");
  }
  LL_CHECK(r.rope_scaling_factor >= 1.0, path, ": `rope_scaling_factor` must be >= 1, got ", r.rope_scaling_factor);
  return r;
}

namespace {

// The folder's safetensors files, refusing pickles that stand in for them.
std::unique_ptr<SafetensorsFile> open_adapter_file(const std::string& dir, const char* name, const char* pickle,
                                                   bool required) {
  const std::string path = dir + "/" + name;
  if (path_exists(path)) return std::make_unique<SafetensorsFile>(path);
  if (path_exists(dir + "/" + pickle)) refuse_pickle(dir + "/" + pickle, name);
  LL_CHECK(!required, "`", dir, "` has no ", name, " (expected a PEFT LoRA adapter folder)");
  return nullptr;
}

}  // namespace

int64_t adapter_embedding_rows(const std::string& dir) {
  const std::string embed = "model.embed_tokens.weight";
  auto rows = [](const SafetensorsFile& f, const std::string& key) {
    const SafetensorsEntry& e = f.entry(key);
    LL_CHECK(e.shape.size() == 2, f.path(), ": `", key, "` has shape ", shape_text(e.shape), "; expected [vocab, hidden]");
    return e.shape[0];
  };
  auto adapter = open_adapter_file(dir, kAdapterFile, "adapter_model.bin", true);
  if (adapter->contains(kPeftPrefix + embed)) return rows(*adapter, kPeftPrefix + embed);
  auto trainable = open_adapter_file(dir, kTrainableFile, kTrainableTorchFile, false);
  if (trainable && trainable->contains(embed)) return rows(*trainable, embed);
  return 0;
}

AdapterLoadReport load_adapter(const std::string& dir, ParamStore& params, Backend& backend) {
  const AdapterConfig config = read_adapter_config(dir);
  check_store_matches(params, config.lora, dir + "/" + kConfigFile);
  auto adapter = open_adapter_file(dir, kAdapterFile, "adapter_model.bin", true);
  auto trainable = open_adapter_file(dir, kTrainableFile, kTrainableTorchFile, false);

  AdapterLoadReport report;
  std::map<std::string, std::pair<const SafetensorsFile*, std::string>> source;  // param → (file, tensor name)
  std::vector<std::string> unknown;
  auto collect = [&](const SafetensorsFile& file, const std::string& prefix) {
    report.files.push_back(file.path());
    for (const std::string& key : file.names()) {
      const bool prefixed = key.compare(0, prefix.size(), prefix) == 0;
      Param* p = prefixed ? params.find(key.substr(prefix.size())) : nullptr;
      if (p == nullptr || (is_lora(*p) && prefix.empty())) {
        unknown.push_back(str_cat(key, " (in ", file.path(), ")"));
        continue;
      }
      auto [it, inserted] = source.emplace(p->name, std::make_pair(&file, key));
      if (!inserted) {  // saved in both files: they must agree, or one of them is stale
        const SafetensorsEntry &a = it->second.first->entry(it->second.second), &b = file.entry(key);
        LL_CHECK(a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, a.nbytes) == 0, dir,
                 ": `", p->name, "` differs between ", it->second.first->path(), " and ", file.path(),
                 "; one of them is stale");
      }
    }
  };
  collect(*adapter, kPeftPrefix);
  if (trainable) collect(*trainable, "");
  if (!unknown.empty())
    fail(dir, ": ", unknown.size(), " tensor(s) match nothing in the model (wrong prefix, layer count or LoRA targets?): ",
         name_list(unknown, 6));

  std::vector<std::string> missing;
  for (Param& p : params.all())
    if ((is_lora(p) || selected(p, config.saved)) && !source.count(p.name)) missing.push_back(p.name);
  if (!missing.empty())
    fail(dir, ": missing ", missing.size(), " tensor(s) that adapter_config.json implies: ", name_list(missing));

  params.write_all([&](Param& p) {
    const auto it = source.find(p.name);
    if (it == source.end()) return;
    const auto& where = it->second;
    load_entry(backend, p, where.first->entry(where.second), where.first->path(),
               p.kind == ParamKind::Embed || p.kind == ParamKind::LmHead
                   ? " (build the model with the adapter's vocabulary: adapter_embedding_rows)"
                   : "");
    if (is_lora(p)) {
      ++report.lora_tensors;
    } else {
      report.base.push_back(p.name);
    }
  });
  return report;
}

}  // namespace ll
