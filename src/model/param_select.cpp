#include "model/param_select.h"

#include <set>

#include "model/registry.h"
#include "util/error.h"
#include "util/strings.h"

namespace ll {

namespace {

bool adaptable(const ParamSpec& s) { return s.role == ParamRole::Linear && s.layer >= 0; }

int layer_count(const std::vector<ParamSpec>& table) {
  int n = 0;
  for (const ParamSpec& s : table) n = std::max(n, s.layer + 1);
  return n;
}

// Layer 0's module path of every adaptable slot, in table order.
std::vector<std::pair<int, std::string>> layer0_linears(const std::vector<ParamSpec>& table) {
  std::vector<std::pair<int, std::string>> out;
  for (const ParamSpec& s : table)
    if (adaptable(s) && s.layer == 0) out.emplace_back(s.slot, s.module());
  return out;
}

}  // namespace

bool peft_module_match(const std::string& module, const std::string& entry) {
  return module == entry || ends_with(module, "." + entry);
}

std::vector<AdaptableModule> adaptable_modules(const std::vector<ParamSpec>& table) {
  std::vector<AdaptableModule> out;
  for (const auto& [slot, module] : layer0_linears(table)) {
    std::string found;
    // Dotted suffixes from the shortest: the first that selects exactly this slot in every layer.
    for (size_t pos = module.size(); found.empty();) {
      pos = pos == 0 ? std::string::npos : module.rfind('.', pos - 1);
      const std::string suffix = pos == std::string::npos ? module : module.substr(pos + 1);
      bool exact = true;
      int hits = 0;
      for (const ParamSpec& s : table) {
        if (!adaptable(s) || !peft_module_match(s.module(), suffix)) continue;
        exact = exact && s.slot == slot;
        ++hits;
      }
      if (exact && hits == layer_count(table)) found = suffix;
      if (pos == std::string::npos) break;
    }
    LL_ASSERT(!found.empty(), "parameter table: no module-name suffix selects `", module,
              "` in every layer and nothing else; LoRA targets could not name it");
    out.push_back({slot, found});
  }
  return out;
}

std::string adaptable_module_list(const Architecture& arch, const std::vector<ParamSpec>& table) {
  std::string s, aliases;
  for (const AdaptableModule& m : adaptable_modules(table)) s += (s.empty() ? "" : ", ") + m.name;
  for (const auto& [alias, module] : arch.lora_aliases()) aliases += (aliases.empty() ? "" : ", ") + alias;
  return aliases.empty() ? s : s + " (or " + aliases + ")";
}

std::vector<std::string> lora_targets_selected(const std::vector<ParamSpec>& table,
                                               const std::function<bool(const std::string& module)>& selects,
                                               const std::string& where, const std::string& what) {
  const int layers = layer_count(table);
  std::vector<std::string> out;
  for (const AdaptableModule& m : adaptable_modules(table)) {
    int hits = 0;
    for (const ParamSpec& s : table)
      if (adaptable(s) && s.slot == m.slot && selects(s.module())) ++hits;
    if (hits != 0 && hits != layers)
      fail(where, ": ", what, " selects ", m.name, " in only some layers (", hits, " of ", layers,
           "); adapters on a subset of layers are not supported");
    if (hits > 0) out.push_back(m.name);
  }
  return out;
}

std::vector<std::string> resolve_lora_targets(const Architecture& arch, const std::vector<ParamSpec>& table,
                                              const std::vector<std::string>& entries, const std::string& where) {
  std::vector<std::string> resolved;
  for (const std::string& entry : entries) {
    std::string name = entry;
    for (const auto& [alias, module] : arch.lora_aliases())
      if (entry == alias) name = module;
    const auto one = [&](const std::string& module) { return peft_module_match(module, name); };
    if (lora_targets_selected(table, one, where, str_cat("\"", entry, "\"")).empty())
      fail(where, ": \"", entry, "\" selects no module that can take an adapter; expected any of ",
           adaptable_module_list(arch, table));
    resolved.push_back(name);
  }
  const auto any = [&](const std::string& module) {
    for (const std::string& name : resolved)
      if (peft_module_match(module, name)) return true;
    return false;
  };
  return lora_targets_selected(table, any, where, "the targets");
}

std::vector<std::string> parse_lora_targets(const std::string& list, const ModelConfig& config,
                                            const std::string& where) {
  const Architecture& arch = architecture_for(config.model_type);
  const std::string& chosen = list.empty() ? arch.default_lora_targets() : list;
  return resolve_lora_targets(arch, arch.parameter_table(config), split_list(chosen), where);
}

std::vector<bool> trainable_rows(const std::vector<ParamSpec>& table, const TrainableConfig& t,
                                 const std::string& where) {
  std::vector<bool> out(table.size(), t.all);
  for (const std::string& entry : t.names) {
    bool used = false;
    for (size_t i = 0; i < table.size(); ++i)
      if (table[i].name.find(entry) != std::string::npos) out[i] = used = true;
    if (used) continue;
    std::vector<std::string> examples;
    for (const ParamSpec& s : table)
      if (s.layer <= 0) examples.push_back(s.name);
    std::string list;
    for (const std::string& n : examples) list += (list.empty() ? "" : ", ") + n;
    fail(where, ": \"", entry, "\" is part of no parameter name (LongLoRA's rule: an entry trains every parameter ",
         "whose name contains it); the names are ", list, ", and the same for every layer");
  }
  return out;
}

void check_trainable(const TrainableConfig& t, const ModelConfig& config, const std::string& where) {
  trainable_rows(architecture_for(config.model_type).parameter_table(config), t, where);
}

}  // namespace ll
