// Selecting parameters of an architecture's table by name: which linears carry LoRA adapters (PEFT's module-name
// rule) and which base parameters train (LongLoRA's substring rule). Shared by the parameter store, the flags and the
// PEFT adapter reader, so a name means the same everywhere.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "model/architecture.h"

namespace ll {

// PEFT's target_modules rule: entry T selects module M when M == T or M ends with "." + T.
bool peft_module_match(const std::string& module, const std::string& entry);

// A decoder-layer linear that can carry an adapter, under its canonical target name: the shortest dotted suffix of
// its module path that selects (PEFT's rule) this linear and no other in every layer ("q_proj" for Llama).
struct AdaptableModule {
  int slot = 0;
  std::string name;
};
// In table order. Throws if two linears of a layer cannot be told apart by a suffix (a malformed table).
std::vector<AdaptableModule> adaptable_modules(const std::vector<ParamSpec>& table);
// "q_proj, k_proj, …" (+ " (or q, k, …)" with the architecture's aliases): for error messages.
std::string adaptable_module_list(const Architecture& arch, const std::vector<ParamSpec>& table);

// The canonical target names (table order) of the adaptable linears whose module path `selects`. A linear selected in
// only some layers is an error ("<where>: <what> selects q_proj in only some layers…").
std::vector<std::string> lora_targets_selected(const std::vector<ParamSpec>& table,
                                               const std::function<bool(const std::string& module)>& selects,
                                               const std::string& where, const std::string& what);

// PEFT-style entries (after the architecture's aliases) → canonical target names in table order. An entry that
// selects no adaptable linear is an error naming it, `where`, and the modules that can take adapters.
std::vector<std::string> resolve_lora_targets(const Architecture& arch, const std::vector<ParamSpec>& table,
                                              const std::vector<std::string>& entries, const std::string& where);
// A comma list ("q,k,v,o" or "q_proj,v_proj") resolved for the architecture of `config`; an empty list means the
// architecture's default_lora_targets() (LongLoRA's choice for the family).
std::vector<std::string> parse_lora_targets(const std::string& list, const ModelConfig& config,
                                            const std::string& where = "LoRA targets");

// LongLoRA's rule over the table's names: row i trains when t.all, or when an entry of t.names is a substring of its
// name. An entry that matches no name is an error naming it, `where`, and examples of the names.
std::vector<bool> trainable_rows(const std::vector<ParamSpec>& table, const TrainableConfig& t,
                                 const std::string& where);
// Checks t against the table of `config` (the flag parser's early error).
void check_trainable(const TrainableConfig& t, const ModelConfig& config, const std::string& where);

}  // namespace ll
