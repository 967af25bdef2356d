// The parameter layout: every weight of the model (Hugging Face names and shapes), where it lives, and
// whether it trains. Three arenas: frozen weights, trainable weights, and their gradients (same layout as
// the trainable arena, so a ZeRO shard is one slice of each).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/arena.h"
#include "model/config.h"
#include "model/param_storage.h"

namespace ll {

enum class ParamKind { Embed, AttnNorm, Linear, MlpNorm, FinalNorm, LmHead, LoraA, LoraB };

struct Param {
  std::string name;  // Hugging Face / PEFT name, e.g. model.layers.3.self_attn.q_proj.lora_A.weight
  ParamKind kind;
  int layer = -1;                     // decoder layer, −1 outside the stack
  LinearSlot slot = LinearSlot::Q;    // for Linear, LoraA, LoraB
  std::vector<int64_t> shape;         // [out, in] for matrices, [D] for norms
  bool trainable = false;
  Tensor value;  // weight dtype
  Tensor grad;   // grad dtype; empty when frozen
  int64_t numel() const;
  bool is_norm() const { return kind == ParamKind::AttnNorm || kind == ParamKind::MlpNorm || kind == ParamKind::FinalNorm; }
};

struct LayerParams {
  Param* attn_norm = nullptr;                     // [D]
  Param* mlp_norm = nullptr;                      // [D]
  Param* linear[kNumLinearSlots] = {};            // q[H·Dh,D] k,v[Hkv·Dh,D] o[D,H·Dh] gate,up[F,D] down[D,F]
  Param* lora_a[kNumLinearSlots] = {};            // [r, in]  (null when the slot has no adapter)
  Param* lora_b[kNumLinearSlots] = {};            // [out, r]
};

class ParamStore {
 public:
  // external_storage: allocate nothing; every Param gets its shape and dtype but no memory until a ParamStorage
  // (set_storage) points it somewhere (ZeRO-3).
  ParamStore(Backend& backend, const LlamaConfig& config, const LoraConfig& lora, const TrainableConfig& trainable,
             bool external_storage = false);

  std::vector<Param>& all() { return params_; }
  const std::vector<Param>& all() const { return params_; }
  Param* find(const std::string& name);
  Param& get(const std::string& name);  // throws naming the parameter
  const LayerParams& layer(int i) const { return layers_[i]; }
  Param& embed() { return params_[embed_]; }
  Param& final_norm() { return params_[final_norm_]; }
  Param& lm_head() { return params_[lm_head_]; }  // the embedding when weights are tied

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
  int num_layers() const { return int(layers_.size()); }

  // The trainable-weight and gradient arenas as flat 1-D tensors (padding included), and where a trainable
  // parameter lives in them: what gradient reduction and ZeRO sharding operate on.
  Tensor flat_trainable() const { return trainable_.flat(backend_.dtypes().weight); }
  Tensor flat_grads() const { return grads_.flat(backend_.dtypes().grad); }
  int64_t trainable_offset(const Param& p) const { return trainable_.offset_of(p.value); }
  int64_t grad_offset(const Param& p) const { return grads_.offset_of(p.grad); }

 private:
  Backend& backend_;
  bool external_ = false;
  ParamStorage* storage_ = nullptr;
  std::function<void(int)> backward_hook_;
  Arena frozen_, trainable_, grads_;
  std::vector<Param> params_;
  std::vector<LayerParams> layers_;
  size_t embed_ = 0, final_norm_ = 0, lm_head_ = 0;
};

}  // namespace ll
