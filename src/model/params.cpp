#include "model/params.h"

namespace ll {

int64_t Param::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

bool base_trainable(ParamKind kind, const TrainableConfig& t) {
  if (t.all) return true;
  switch (kind) {
    case ParamKind::Embed: return t.embed;
    case ParamKind::AttnNorm:
    case ParamKind::MlpNorm:
    case ParamKind::FinalNorm: return t.norm;
    case ParamKind::LmHead: return t.lm_head;
    default: return false;
  }
}

}  // namespace

ParamStore::ParamStore(Backend& backend, const LlamaConfig& c, const LoraConfig& lora, const TrainableConfig& t,
                       bool external_storage)
    : backend_(backend),
      external_(external_storage),
      frozen_(backend, "frozen weights"),
      trainable_(backend, "trainable weights"),
      grads_(backend, "gradients") {
  c.validate();
  LL_CHECK(!lora.enabled() || lora.rank > 0, "LoRA rank must be positive");
  const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const int64_t in_features[kNumLinearSlots] = {D, D, D, c.q_dim(), D, D, F};
  const int64_t out_features[kNumLinearSlots] = {c.q_dim(), c.kv_dim(), c.kv_dim(), D, F, F, D};

  auto add = [&](std::string name, ParamKind kind, int layer, LinearSlot slot, std::vector<int64_t> shape,
                 bool trainable) {
    params_.push_back({std::move(name), kind, layer, slot, std::move(shape), trainable, {}, {}});
    return params_.size() - 1;
  };

  embed_ = add("model.embed_tokens.weight", ParamKind::Embed, -1, LinearSlot::Q, {V, D}, false);
  std::vector<std::array<size_t, 3 + 3 * kNumLinearSlots>> layer_index(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto& idx = layer_index[l];
    idx.fill(size_t(-1));
    idx[0] = add(p + "input_layernorm.weight", ParamKind::AttnNorm, l, LinearSlot::Q, {D}, false);
    for (int s = 0; s < kNumLinearSlots; ++s) {
      const LinearSlot slot = LinearSlot(s);
      const std::string module = p + (s < 4 ? "self_attn." : "mlp.") + linear_slot_name(slot);
      if (slot == LinearSlot::Gate)
        idx[1] = add(p + "post_attention_layernorm.weight", ParamKind::MlpNorm, l, slot, {D}, false);
      idx[3 + s] = add(module + ".weight", ParamKind::Linear, l, slot, {out_features[s], in_features[s]}, false);
      if (lora.on(slot)) {
        idx[3 + kNumLinearSlots + s] =
            add(module + ".lora_A.weight", ParamKind::LoraA, l, slot, {lora.rank, in_features[s]}, true);
        idx[3 + 2 * kNumLinearSlots + s] =
            add(module + ".lora_B.weight", ParamKind::LoraB, l, slot, {out_features[s], lora.rank}, true);
      }
    }
  }
  final_norm_ = add("model.norm.weight", ParamKind::FinalNorm, -1, LinearSlot::Q, {D}, false);
  lm_head_ = c.tie_word_embeddings ? embed_ : add("lm_head.weight", ParamKind::LmHead, -1, LinearSlot::Q, {V, D}, false);

  for (Param& p : params_) {
    if (p.kind == ParamKind::LoraA || p.kind == ParamKind::LoraB) continue;
    p.trainable = base_trainable(p.kind, t);
    if (p.kind == ParamKind::Embed && c.tie_word_embeddings && base_trainable(ParamKind::LmHead, t))
      p.trainable = true;  // a trainable tied head trains the shared matrix
  }

  // Plan, commit, then hand out views (or, under external storage, shapes only).
  const DTypePolicy dt = backend.dtypes();
  if (external_) {
    for (Param& p : params_) {
      p.value = Tensor(nullptr, dt.weight, backend.device(), p.shape);
      if (p.trainable) p.grad = Tensor(nullptr, dt.grad, backend.device(), p.shape);
    }
  } else {
    std::vector<Arena::Handle> value_handle(params_.size()), grad_handle(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      Param& p = params_[i];
      value_handle[i] = (p.trainable ? trainable_ : frozen_).reserve(dt.weight, p.shape);
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

  layers_.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const auto& idx = layer_index[l];
    auto ptr = [&](size_t i) { return i == size_t(-1) ? nullptr : &params_[i]; };
    layers_[l].attn_norm = ptr(idx[0]);
    layers_[l].mlp_norm = ptr(idx[1]);
    for (int s = 0; s < kNumLinearSlots; ++s) {
      layers_[l].linear[s] = ptr(idx[3 + s]);
      layers_[l].lora_a[s] = ptr(idx[3 + kNumLinearSlots + s]);
      layers_[l].lora_b[s] = ptr(idx[3 + 2 * kNumLinearSlots + s]);
    }
  }
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
