#include "model/params.h"

#include "model/param_select.h"
#include "model/registry.h"
#include "model/weight_format.h"

namespace ll {

int64_t Param::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Param::module() const {
  std::string m = name.substr(0, name.rfind('.'));  // drop ".weight" / ".bias"
  if (is_lora()) m = m.substr(0, m.rfind('.'));     // and ".lora_A" / ".lora_B"
  return m;
}

ParamStore::ParamStore(Backend& backend, const ModelConfig& c, const LoraConfig& lora, const TrainableConfig& t,
                       bool external_storage)
    : backend_(backend),
      config_(c),
      arch_(nullptr),
      external_(external_storage),
      frozen_(backend, "frozen weights"),
      trainable_(backend, "trainable weights"),
      grads_(backend, "gradients") {
  c.validate();
  arch_ = &architecture_for(c.model_type);
  table_ = arch_->parameter_table(c);
  const std::vector<bool> trains = trainable_rows(table_, t, "trainable parameters");
  std::vector<bool> adapted_slot;
  if (lora.enabled()) {
    adapted_ = resolve_lora_targets(*arch_, table_, lora.targets, "LoRA targets");
    for (const AdaptableModule& m : adaptable_modules(table_)) {
      if (adapted_slot.size() <= size_t(m.slot)) adapted_slot.resize(size_t(m.slot) + 1, false);
      for (const std::string& name : adapted_)
        if (name == m.name) adapted_slot[size_t(m.slot)] = true;
    }
  }

  // The table's order, each adapted linear followed by its A and B; tied rows get no storage of their own.
  std::vector<size_t> row_index(table_.size(), size_t(-1));
  for (size_t i = 0; i < table_.size(); ++i) {
    const ParamSpec& s = table_[i];
    if (!s.tied_to.empty()) continue;
    row_index[i] = params_.size();
    params_.push_back({s.name, s.role, s.layer, s.slot, s.shape, bool(trains[i]), {}, {}});
    const bool adapted = s.role == ParamRole::Linear && s.layer >= 0 && size_t(s.slot) < adapted_slot.size() &&
                         adapted_slot[size_t(s.slot)];
    if (!adapted) continue;
    const std::string module = s.module();
    const int64_t out = s.shape[0], in = s.shape[1];
    params_.push_back({module + ".lora_A.weight", ParamRole::LoraA, s.layer, s.slot, {lora.rank, in}, true, {}, {}});
    params_.push_back({module + ".lora_B.weight", ParamRole::LoraB, s.layer, s.slot, {out, lora.rank}, true, {}, {}});
  }
  // A tied row trains its tensor: a trainable tied head trains the shared embedding.
  std::vector<Param*> row_param(table_.size(), nullptr);
  for (size_t i = 0; i < table_.size(); ++i) {
    const ParamSpec& s = table_[i];
    row_param[i] = s.tied_to.empty() ? &params_[row_index[i]] : find(s.tied_to);
    LL_ASSERT(row_param[i] != nullptr, "parameter table: `", s.name, "` is tied to `", s.tied_to,
              "`, which is not in it");
    if (trains[i]) row_param[i]->trainable = true;
  }

  // Plan, commit, then hand out views (or, under external storage, shapes only).
  const DTypePolicy dt = backend.dtypes();
  auto value_dtype = [&](const Param& p) { return weight_storage_dtype(c, p.role, p.trainable, dt.weight, p.name); };
  if (external_) {
    for (Param& p : params_) {
      p.value = Tensor(nullptr, value_dtype(p), backend.device(), p.shape);
      if (p.trainable) p.grad = Tensor(nullptr, dt.grad, backend.device(), p.shape);
    }
  } else {
    std::vector<Arena::Handle> value_handle(params_.size()), grad_handle(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      Param& p = params_[i];
      value_handle[i] = (p.trainable ? trainable_ : frozen_).reserve(value_dtype(p), p.shape);
      if (p.trainable) grad_handle[i] = grads_.reserve(dt.grad, p.shape);
    }
    frozen_.commit();
    trainable_.commit();
    grads_.commit();
    for (size_t i = 0; i < params_.size(); ++i) {
      Param& p = params_[i];
      p.value = (p.trainable ? trainable_ : frozen_).tensor(value_handle[i]);
      if (p.trainable) p.grad = grads_.tensor(grad_handle[i]);
    }
  }

  // Slots, resolved once.
  slots_.resize(size_t(c.num_hidden_layers) + 1);
  for (const ParamSpec& s : table_) {
    GroupSlots& g = slots_.at(size_t(s.layer + 1));
    if (g.param.size() <= size_t(s.slot)) {
      const size_t n = size_t(s.slot) + 1;
      g.param.resize(n), g.lora_a.resize(n), g.lora_b.resize(n), g.bias.resize(n), g.linear_index.resize(n, -1);
    }
  }
  for (size_t i = 0; i < table_.size(); ++i) {
    const ParamSpec& s = table_[i];
    GroupSlots& g = slots_[size_t(s.layer + 1)];
    LL_ASSERT(g.param[size_t(s.slot)] == nullptr, "parameter table: `", s.name, "` reuses slot ", s.slot);
    g.param[size_t(s.slot)] = row_param[i];
    if (s.role == ParamRole::Linear) g.linear_index[size_t(s.slot)] = g.linears++;
    if (s.role == ParamRole::Bias && s.bias_of >= 0) g.bias.at(size_t(s.bias_of)) = row_param[i];
    if (s.role == ParamRole::Embedding) embed_ = row_param[i];
    if (s.role == ParamRole::OutputHead) lm_head_ = row_param[i];
  }
  for (Param& p : params_) {
    if (p.role == ParamRole::LoraA) slots_[size_t(p.layer + 1)].lora_a[size_t(p.slot)] = &p;
    if (p.role == ParamRole::LoraB) slots_[size_t(p.layer + 1)].lora_b[size_t(p.slot)] = &p;
  }
  LL_ASSERT(embed_ != nullptr && lm_head_ != nullptr, "parameter table of `", c.model_type,
            "` has no Embedding or no OutputHead row");
}

Param* ParamStore::find(const std::string& name) {
  for (Param& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

Param& ParamStore::get(const std::string& name) {
  Param* p = find(name);
  LL_CHECK(p != nullptr, "model has no parameter named `", name, "`");
  return *p;
}

int64_t ParamStore::count(bool trainable_only) const {
  int64_t n = 0;
  for (const Param& p : params_)
    if (!trainable_only || p.trainable) n += p.numel();
  return n;
}

void ParamStore::zero_grads() {
  if (storage_) return storage_->zero_grads();
  for (Param& p : params_)
    if (p.trainable) backend_.zero(p.grad);
}

void ParamStore::set_storage(ParamStorage* storage) {
  LL_CHECK(external_ || storage == nullptr, "ParamStore: an external storage needs a store built with external_storage");
  storage_ = storage;
}

std::vector<Param*> ParamStore::group(int g) {
  std::vector<Param*> out;
  for (Param& p : params_)
    if (p.layer == g) out.push_back(&p);
  return out;
}

void ParamStore::write_all(const std::function<void(Param&)>& fill) {
  if (!storage_) {
    LL_CHECK(!external_, "ParamStore: external storage is not attached yet");
    for (Param& p : params_) fill(p);
    return;
  }
  for (int g = kOuterGroup; g < num_layers(); ++g) {
    storage_->acquire(g);
    for (Param* p : group(g)) fill(*p);
    storage_->commit(g);
    storage_->release(g);
  }
}

void ParamStore::with_readable(bool trainable_only, const std::function<void()>& fn) {
  if (!storage_) return fn();
  storage_->materialize(trainable_only);
  try {
    fn();
  } catch (...) {
    storage_->dematerialize();
    throw;
  }
  storage_->dematerialize();
}

}  // namespace ll
