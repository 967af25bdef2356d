#include "io/peft.h"

#include <algorithm>
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
#include "model/param_select.h"
#include "model/registry.h"
#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

namespace ll {
namespace {

using Json = nlohmann::json;

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kAdapterFile = "adapter_model.safetensors";
constexpr const char* kTrainableFile = "trainable_params.safetensors";
constexpr const char* kTrainableTorchFile = "trainable_params.bin";  // what LongLoRA's scripts torch.load
constexpr const char* kRecordFile = "longlora.json";
constexpr const char* kPeftPrefix = "base_model.model.";  // PeftModel → LoraModel → the *ForCausalLM

const Json* field(const Json& j, const char* key) { return json_field(j, key); }

// target_modules → canonical target names (model/param_select.h), matched the way PEFT matches module names: a list
// of names (equal to, or a dotted suffix of, a module name) or a regex full-matched against module names.
std::vector<std::string> resolve_targets(const Json& targets, const std::string& where, const Architecture& arch,
                                         const std::vector<ParamSpec>& table) {
  const std::string modules = adaptable_module_list(arch, table);
  if (targets.is_string()) {
    std::regex re;
    try {
      re = std::regex(targets.get<std::string>());
    } catch (const std::regex_error& e) {
      fail(where, ": `target_modules` regex ", targets.dump(), " does not compile (", e.what(), ")");
    }
    const auto matches = [&re](const std::string& module) { return std::regex_match(module, re); };
    std::vector<std::string> out = lora_targets_selected(table, matches, where, "`target_modules` " + targets.dump());
    if (out.empty())
      fail(where, ": `target_modules` ", targets.dump(), " selects no module of a ", arch.model_type(),
           " model that can take an adapter (", modules, ")");
    return out;
  }
  if (!targets.is_array() || targets.empty())
    fail(where, ": `target_modules` must be a non-empty list of module names or a regex string, got ", targets.dump());
  std::vector<std::string> entries;
  for (const Json& t : targets) {
    if (!t.is_string()) fail(where, ": `target_modules` entries must be strings, got ", t.dump());
    const std::string entry = t.get<std::string>();
    const auto one = [&entry](const std::string& module) { return peft_module_match(module, entry); };
    if (lora_targets_selected(table, one, where, str_cat("`target_modules` entry \"", entry, "\"")).empty())
      fail(where, ": `target_modules` entry \"", entry, "\" names no module this engine can adapt (", modules, ")");
    entries.push_back(entry);
  }
  const auto any = [&entries](const std::string& module) {
    for (const std::string& e : entries)
      if (peft_module_match(module, e)) return true;
    return false;
  };
  return lora_targets_selected(table, any, where, "`target_modules` " + targets.dump());
}

// The base parameters an adapter may carry as modules_to_save: embeddings, norms (and their biases), output heads.
bool savable(ParamRole role) {
  return role == ParamRole::Embedding || role == ParamRole::Norm || role == ParamRole::NormBias ||
         role == ParamRole::OutputHead;
}

// modules_to_save → the names of the base parameters it selects, by PEFT's rule (a module is selected when its name
// ends with an entry). An entry may select only savable modules; a tied output head selects nothing of its own.
std::vector<std::string> resolve_modules_to_save(const std::vector<std::string>& modules,
                                                 const std::vector<ParamSpec>& table, const std::string& where) {
  std::vector<std::string> saved;
  for (const std::string& m : modules) {
    if (m.empty()) fail(where, ": `modules_to_save` has an empty entry");
    bool any = false;
    for (const ParamSpec& s : table) {
      if (!ends_with(s.module(), m)) continue;
      if (!savable(s.role))
        fail(where, ": `modules_to_save` entry \"", m, "\" selects `", s.module(), "` (a ", param_role_name(s.role),
             "); this engine saves only embeddings, norms and the output head in an adapter");
      any = true;
      if (s.tied_to.empty() && std::find(saved.begin(), saved.end(), s.name) == saved.end()) saved.push_back(s.name);
    }
    if (!any)
      fail(where, ": `modules_to_save` entry \"", m, "\" is not supported; it selects no embedding, norm or output "
           "head of this model");
  }
  return saved;
}

// The shortest modules_to_save entries that select (PEFT's rule) exactly the modules of `trained` among the store's
// base modules, in table order; an entry whose selection another entry covers is dropped. Llama with embed and all
// norms trained: ["embed_tokens", "norm"].
std::vector<std::string> modules_to_save_entries(const ParamStore& params, const std::vector<const Param*>& trained) {
  std::vector<std::string> all, chosen;
  for (const Param& p : params.all())
    if (!p.is_lora() && std::find(all.begin(), all.end(), p.module()) == all.end()) all.push_back(p.module());
  std::vector<std::string> wanted;
  for (const Param* p : trained)
    if (std::find(wanted.begin(), wanted.end(), p->module()) == wanted.end()) wanted.push_back(p->module());
  auto selection = [&](const std::string& entry) {
    std::vector<std::string> out;
    for (const std::string& m : all)
      if (ends_with(m, entry)) out.push_back(m);
    return out;
  };
  auto within = [](const std::vector<std::string>& a, const std::vector<std::string>& b) {
    for (const std::string& x : a)
      if (std::find(b.begin(), b.end(), x) == b.end()) return false;
    return true;
  };
  for (const std::string& m : wanted) {
    for (size_t pos = m.size();;) {  // dotted suffixes, shortest first; the whole name always qualifies
      pos = pos == 0 ? std::string::npos : m.rfind('.', pos - 1);
      const std::string entry = pos == std::string::npos ? m : m.substr(pos + 1);
      if (within(selection(entry), wanted)) {
        if (std::find(chosen.begin(), chosen.end(), entry) == chosen.end()) chosen.push_back(entry);
        break;
      }
    }
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < chosen.size(); ++i) {
    bool covered = false;
    for (size_t j = 0; j < chosen.size() && !covered; ++j)
      covered = j != i && within(selection(chosen[i]), selection(chosen[j])) &&
                (selection(chosen[i]) != selection(chosen[j]) || j < i);
    if (!covered) out.push_back(chosen[i]);
  }
  return out;
}

void reject_if(bool cond, const std::string& where, const std::string& what) {
  if (cond) fail(where, ": ", what, " is not supported");
}

// The store's adapters must be exactly the configuration's: same linears, same rank.
void check_store_matches(ParamStore& params, const LoraConfig& lora, const std::string& where) {
  const std::vector<std::string> targets =
      resolve_lora_targets(params.architecture(), params.table(), lora.targets, where);
  const std::vector<AdaptableModule> modules = adaptable_modules(params.table());
  auto targeted = [&](const std::string& name) {
    return std::find(targets.begin(), targets.end(), name) != targets.end();
  };
  for (const Param& p : params.all()) {
    if (!p.is_lora()) continue;
    std::string name;
    for (const AdaptableModule& m : modules)
      if (m.slot == p.slot) name = m.name;
    LL_CHECK(targeted(name), where, ": the model has `", p.name, "` but the adapter config does not target ", name,
             "; build the model with the adapter's LoRA config");
    const int64_t rank = p.role == ParamRole::LoraA ? p.shape[0] : p.shape[1];
    LL_CHECK(rank == lora.rank, where, ": the model's `", p.name, "` has rank ", rank, " but the adapter has r = ",
             lora.rank);
  }
  for (const std::string& name : targets) {
    const std::vector<std::string>& adapted = params.adapted_modules();
    LL_CHECK(std::find(adapted.begin(), adapted.end(), name) != adapted.end(), where, ": the adapter targets ", name,
             " but the model was built without adapters there");
  }
}

}  // namespace

AdapterSaveReport save_adapter(const std::string& dir, ParamStore& params, Backend& backend, const LoraConfig& lora,
                               const AdapterSaveOptions& options) {
  LL_CHECK(lora.enabled(), "save_adapter: the model has no LoRA adapters (rank 0); save an HF folder instead");
  LL_CHECK(options.dtype == DType::F32 || options.dtype == DType::BF16 || options.dtype == DType::F16,
           "save_adapter: dtype must be f32, bf16 or f16, got ", dtype_name(options.dtype));
  check_store_matches(params, lora, "save_adapter");
  std::vector<Param*> lora_params, base_params;
  for (Param& p : params.all()) {
    if (p.is_lora()) {
      lora_params.push_back(&p);
    } else if (p.trainable) {
      LL_CHECK(savable(p.role), "save_adapter: `", p.name, "` trains (full fine-tuning",
               p.role == ParamRole::Linear ? "" : str_cat(" of a ", param_role_name(p.role)),
               "), which an adapter cannot hold; save an HF folder (save_hf_folder)");
      base_params.push_back(&p);
    }
  }
  Json modules = Json::array();
  for (const std::string& m : modules_to_save_entries(params, {base_params.begin(), base_params.end()}))
    modules.push_back(m);
  Json targets = Json::array();
  for (const std::string& t : params.adapted_modules()) targets.push_back(t);

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

AdapterConfig read_adapter_config(const std::string& dir, const ModelConfig& base) {
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
  const Architecture& arch = architecture_for(base.model_type);
  const std::vector<ParamSpec> table = arch.parameter_table(base);
  out.lora.targets = resolve_targets(*targets, path, arch, table);
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
  out.saved = resolve_modules_to_save(out.modules_to_save, table, path);
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

int64_t adapter_embedding_rows(const std::string& dir, const ModelConfig& base) {
  std::string embed;
  for (const ParamSpec& s : architecture_for(base.model_type).parameter_table(base))
    if (s.role == ParamRole::Embedding) embed = s.name;
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
  const AdapterConfig config = read_adapter_config(dir, params.config());
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
      if (p == nullptr || (p->is_lora() && prefix.empty())) {
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
  auto saved = [&](const Param& p) {
    return std::find(config.saved.begin(), config.saved.end(), p.name) != config.saved.end();
  };
  for (Param& p : params.all())
    if ((p.is_lora() || saved(p)) && !source.count(p.name)) missing.push_back(p.name);
  if (!missing.empty())
    fail(dir, ": missing ", missing.size(), " tensor(s) that adapter_config.json implies: ", name_list(missing));

  params.write_all([&](Param& p) {
    const auto it = source.find(p.name);
    if (it == source.end()) return;
    const auto& where = it->second;
    load_entry(backend, p, where.first->entry(where.second), where.first->path(),
               p.role == ParamRole::Embedding || p.role == ParamRole::OutputHead
                   ? " (build the model with the adapter's vocabulary: adapter_embedding_rows)"
                   : "");
    if (p.is_lora()) {
      ++report.lora_tensors;
    } else {
      report.base.push_back(p.name);
    }
  });
  return report;
}

}  // namespace ll
