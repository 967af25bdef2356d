// The parameter layout: every weight of the model (Hugging Face names and shapes, from the architecture's parameter
// table, plus the LoRA adapters of the targeted linears), where it lives, and whether it trains. Three arenas: frozen
// weights, trainable weights, and their gradients (same layout as the trainable arena, so a ZeRO shard is one slice
// of each).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/arena.h"
#include "model/architecture.h"
#include "model/config.h"
#include "model/param_storage.h"

namespace ll {

struct Param {
  std::string name;  // Hugging Face / PEFT name, e.g. model.layers.3.self_attn.q_proj.lora_A.weight
  ParamRole role = ParamRole::Linear;
  int layer = kOuterGroup;     // decoder layer, kOuterGroup outside the stack
  int slot = 0;                // local slot in its group (LoRA: the slot of the linear it adapts)
  std::vector<int64_t> shape;  // [out, in] for matrices, [n] for norms and biases
  bool trainable = false;
  Tensor value;  // weight dtype
  Tensor grad;   // grad dtype; empty when frozen
  int64_t numel() const;
  bool is_norm() const { return role == ParamRole::Norm; }  // a norm's weight (initialised to ones)
  bool is_lora() const { return role == ParamRole::LoraA || role == ParamRole::LoraB; }
  // The module path (PEFT's module name): the name without ".weight" / ".bias" (LoRA: the adapted linear's module).
  std::string module() const;
};

// A group's parameters by local slot (null where the table has none in that slot): what the engine resolves once so
// that no step looks anything up by name.
struct GroupSlots {
  std::vector<Param*> param;           // the slot's parameter (a tied output head: the tensor it is tied to)
  std::vector<Param*> lora_a, lora_b;  // a linear's adapter
  std::vector<Param*> bias;            // a linear's bias
  std::vector<int> linear_index;       // the slot's ordinal among the group's linears, −1 for other slots
  int linears = 0;                     // linears in the group
};

class ParamStore {
 public:
  // external_storage: allocate nothing; every Param gets its shape and dtype but no memory until a ParamStorage
  // (set_storage) points it somewhere (ZeRO-3).
  ParamStore(Backend& backend, const ModelConfig& config, const LoraConfig& lora, const TrainableConfig& trainable,
             bool external_storage = false);

  const ModelConfig& config() const { return config_; }
  const Architecture& architecture() const { return *arch_; }
  const std::vector<ParamSpec>& table() const { return table_; }  // the architecture's table (no LoRA rows)
  std::vector<Param>& all() { return params_; }
  const std::vector<Param>& all() const { return params_; }
  Param* find(const std::string& name);
  Param& get(const std::string& name);  // throws naming the parameter
  // Group g's parameters by slot (kOuterGroup or a layer).
  const GroupSlots& slots(int g) const { return slots_[size_t(g + 1)]; }
  Param& embed() { return *embed_; }
  Param& lm_head() { return *lm_head_; }  // the embedding when weights are tied
  // The canonical names (adaptable_modules) of the linears that carry adapters, in table order.
  const std::vector<std::string>& adapted_modules() const { return adapted_; }

  size_t frozen_bytes() const { return frozen_.bytes(); }
  size_t trainable_bytes() const { return trainable_.bytes(); }
  size_t grad_bytes() const { return grads_.bytes(); }
  int64_t count(bool trainable_only) const;
  void zero_grads();

  // ---- storage indirection (no-ops without an external ParamStorage) --------------------------------------
  bool external() const { return external_; }
  void set_storage(ParamStorage* storage);
  ParamStorage* storage() const { return storage_; }
  void acquire(int group) { if (storage_) storage_->acquire(group); }
  void release(int group) { if (storage_) storage_->release(group); }
  void prefetch(int group) { if (storage_) storage_->prefetch(group); }
  void backward_done(int group) {
    if (storage_) storage_->backward_done(group);
    if (backward_hook_) backward_hook_(group);
  }
  // Called after backward_done(group) of every backward (with or without external storage): ZeRO-2 starts the
  // reduction of gradient buckets that are complete. Empty function: none.
  void set_backward_hook(std::function<void(int group)> hook) { backward_hook_ = std::move(hook); }
  // Calls fill(p) for every parameter with p.value writable and holding its current values; what fill writes is
  // kept (group by group under external storage). The one way to initialise or load weights.
  void write_all(const std::function<void(Param&)>& fill);
  // Runs fn with every parameter's value readable (only the trainable ones when trainable_only, under external
  // storage). The way to save or export.
  void with_readable(bool trainable_only, const std::function<void()>& fn);
  // The parameters of a group (kOuterGroup or a layer), in store order.
  std::vector<Param*> group(int g);
  int num_layers() const { return int(slots_.size()) - 1; }

  // The trainable-weight and gradient arenas as flat 1-D tensors (padding included), and where a trainable
  // parameter lives in them: what gradient reduction and ZeRO sharding operate on.
  Tensor flat_trainable() const { return trainable_.flat(backend_.dtypes().weight); }
  Tensor flat_grads() const { return grads_.flat(backend_.dtypes().grad); }
  int64_t trainable_offset(const Param& p) const { return trainable_.offset_of(p.value); }
  int64_t grad_offset(const Param& p) const { return grads_.offset_of(p.grad); }

 private:
  Backend& backend_;
  ModelConfig config_;
  const Architecture* arch_;
  std::vector<ParamSpec> table_;
  bool external_ = false;
  ParamStorage* storage_ = nullptr;
  std::function<void(int)> backward_hook_;
  Arena frozen_, trainable_, grads_;
  std::vector<Param> params_;
  std::vector<GroupSlots> slots_;  // [0]: the outer group, then one per layer
  std::vector<std::string> adapted_;
  Param* embed_ = nullptr;
  Param* lm_head_ = nullptr;
};

}  // namespace ll
