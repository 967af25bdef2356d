#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <iomanip>

#include "dropout_mask.h"
#include "tensor_host.h"
#include "util/random.h"

namespace ll {

// Saved activations of one decoder layer (the layer input lives in Buffers::resid).
struct LlamaModel::LayerActs {
  Tensor xn1, rstd1;       // [T,D], [T]
  Tensor q, k, v;          // [T,H·Dh], [T,Hkv·Dh], [T,Hkv·Dh] (q, k after RoPE)
  Tensor attn, lse;        // [T,H·Dh], [B,H,L]
  Tensor x_mid;            // [T,D]  residual after attention
  Tensor xn2, rstd2;       // [T,D], [T]
  Tensor gate, up, act;    // [T,F]
  Tensor lora_xa[kNumLinearSlots];  // [T,r] for slots with adapters
};

// Everything else the step needs, planned once.
struct LlamaModel::Buffers {
  Tensor ids, targets, positions, argmax;  // [T] i32
  std::vector<Tensor> resid;       // n_layers+1 × [T,D]: input of each layer, then the final hidden state
  Tensor xf, rstdf;                // final norm output [T,D], [T]
  Tensor logits;                   // [C,V] one chunk
  Tensor losses;                   // [T]
  // gradient scratch
  Tensor d_resid, d_xn;             // [T,D]
  Tensor dq, dk, dv, d_attn;        // [T,H·Dh] / [T,Hkv·Dh]
  Tensor d_gate, d_up, d_act;       // [T,F]
  Tensor d_xa;                      // [T,r]
  Tensor x_lora, dx_lora;           // [T, max in_features] LoRA-dropout input and its gradient (dropout > 0 only)
};

namespace {
constexpr int64_t kDefaultChunkBytes = 32ll << 20;

// Handles of every activation tensor the model plans (the layer sets, then the step buffers).
struct ActHandles {
  Arena::Handle xn1, rstd1, q, k, v, attn, lse, x_mid, xn2, rstd2, gate, up, act, xa[kNumLinearSlots];
};
struct ActivationLayout {
  std::vector<ActHandles> layers;  // activation_set_count sets: see activation_set
  std::vector<Arena::Handle> resid;
  Arena::Handle ids, targets, positions, argmax, xf, rstdf, logits, losses;
  Arena::Handle d_resid, d_xn, dq, dk, dv, d_attn, d_gate, d_up, d_act, d_xa, x_lora, dx_lora;
};

// Layer activation sets: one shared by the recomputed layers [0, k) when k > 0, then one per kept layer [k, N).
int64_t activation_set_count(const ModelOptions& o) {
  const int64_t n = o.config.num_hidden_layers, k = o.checkpoint_layers;
  return (k > 0 ? 1 : 0) + (n - k);
}
int64_t activation_set(const ModelOptions& o, int64_t layer) {
  const int64_t k = o.checkpoint_layers;
  return layer < k ? 0 : layer - k + (k > 0 ? 1 : 0);
}

// offload_checkpoints: the inputs of the checkpointed layers 0..k−1 rotate through two device slots (input of
// layer l in slot l mod 2); an input goes to the host when its slot is reused during the forward (by the input of
// layer l + 2 < k), i.e. for layers 0..k−3. The inputs of k−2 and k−1 are still in their slots when the backward
// reaches them.
bool offloading(const ModelOptions& o) { return o.offload_checkpoints && o.checkpoint_layers > 0; }
int64_t offloaded_inputs(const ModelOptions& o) {
  return offloading(o) ? std::max<int64_t>(0, o.checkpoint_layers - 2) : 0;
}
size_t host_staging_bytes(const ModelOptions& o, const DTypePolicy& dt) {
  return size_t(offloaded_inputs(o)) * size_t(o.batch * o.seq_len * o.config.hidden_size) * dtype_size(dt.act);
}

int64_t resolved_ce_chunk_rows(const ModelOptions& o, const DTypePolicy& dt) {
  if (o.ce_chunk_rows > 0) return o.ce_chunk_rows;
  return std::max<int64_t>(1, kDefaultChunkBytes / int64_t(o.config.vocab_size * dtype_size(dt.act)));
}

// Reserves (does not commit) every activation tensor of a model with options `o` (ce_chunk_rows resolved) in A.
// The one place the activation memory is laid out: the model allocates it, plan_memory only measures it.
ActivationLayout reserve_activations(Arena& A, const ModelOptions& o, const DTypePolicy& dt) {
  const LlamaConfig& c = o.config;
  const int64_t B = o.batch, L = o.seq_len, T = B * L, D = c.hidden_size, F = c.intermediate_size;
  const int64_t H = c.num_attention_heads, V = c.vocab_size, r = o.lora.rank;
  const int64_t C = std::min(o.ce_chunk_rows, T);
  ActivationLayout lay;
  lay.layers.resize(size_t(activation_set_count(o)));
  // down_proj's input (the SwiGLU output) is read again in backward only for down_proj's weight or adapter
  // gradient; when down_proj is frozen and not adapted, every layer writes it into one shared buffer.
  const bool act_in_backward = o.trainable.all || o.lora.on(LinearSlot::Down);
  Arena::Handle shared_act;
  if (!act_in_backward && lay.layers.size() > 1) shared_act = A.reserve(dt.act, {T, F});
  for (ActHandles& h : lay.layers) {
    h.xn1 = A.reserve(dt.act, {T, D});
    h.rstd1 = A.reserve(dt.stat, {T});
    h.q = A.reserve(dt.act, {T, c.q_dim()});
    h.k = A.reserve(dt.act, {T, c.kv_dim()});
    h.v = A.reserve(dt.act, {T, c.kv_dim()});
    h.attn = A.reserve(dt.act, {T, c.q_dim()});
    h.lse = A.reserve(dt.stat, {B, H, L});
    h.x_mid = A.reserve(dt.act, {T, D});
    h.xn2 = A.reserve(dt.act, {T, D});
    h.rstd2 = A.reserve(dt.stat, {T});
    h.gate = A.reserve(dt.act, {T, F});
    h.up = A.reserve(dt.act, {T, F});
    h.act = shared_act.valid() ? shared_act : A.reserve(dt.act, {T, F});
    for (int s = 0; s < kNumLinearSlots; ++s)
      if (o.lora.on(LinearSlot(s))) h.xa[s] = A.reserve(dt.act, {T, r});
  }
  lay.ids = A.reserve(DType::I32, {T}), lay.targets = A.reserve(DType::I32, {T});
  lay.positions = A.reserve(DType::I32, {T}), lay.argmax = A.reserve(DType::I32, {T});
  lay.resid.resize(size_t(c.num_hidden_layers) + 1);
  if (offloading(o)) {
    // Inputs of the checkpointed layers in two rotating slots (one when k = 1), the rest in their own buffers.
    const int64_t k = o.checkpoint_layers;
    Arena::Handle slot[2];
    for (int64_t s = 0; s < std::min<int64_t>(k, 2); ++s) slot[s] = A.reserve(dt.act, {T, D});
    for (size_t l = 0; l < lay.resid.size(); ++l)
      lay.resid[l] = int64_t(l) < k ? slot[l % 2] : A.reserve(dt.act, {T, D});
  } else {
    for (auto& h : lay.resid) h = A.reserve(dt.act, {T, D});
  }
  lay.xf = A.reserve(dt.act, {T, D}), lay.rstdf = A.reserve(dt.stat, {T}), lay.logits = A.reserve(dt.act, {C, V});
  lay.losses = A.reserve(dt.stat, {T});
  lay.d_resid = A.reserve(dt.act, {T, D}), lay.d_xn = A.reserve(dt.act, {T, D});
  // A layer's backward finishes with the MLP's gradients before the attention's begin: they share memory.
  A.begin_shared();
  lay.d_gate = A.reserve(dt.act, {T, F}), lay.d_up = A.reserve(dt.act, {T, F}), lay.d_act = A.reserve(dt.act, {T, F});
  A.next_phase();
  lay.dq = A.reserve(dt.act, {T, c.q_dim()}), lay.dk = A.reserve(dt.act, {T, c.kv_dim()});
  lay.dv = A.reserve(dt.act, {T, c.kv_dim()}), lay.d_attn = A.reserve(dt.act, {T, c.q_dim()});
  A.end_shared();
  if (o.lora.enabled()) lay.d_xa = A.reserve(dt.act, {T, r});
  if (o.lora.enabled() && o.lora.dropout > 0) {
    const int64_t widest = std::max({D, F, c.q_dim()});
    lay.x_lora = A.reserve(dt.act, {T, widest});
    lay.dx_lora = A.reserve(dt.act, {T, widest});
  }
  return lay;
}

void check_model_options(const ModelOptions& o) {
  o.config.validate();
  LL_CHECK(o.batch > 0, "model: batch size must be positive, got ", o.batch);
  LL_CHECK(o.seq_len > 0, "model: sequence length must be positive, got ", o.seq_len);
  LL_CHECK(o.lora.dropout >= 0 && o.lora.dropout < 1, "LoRA dropout must be in [0, 1), got ", o.lora.dropout);
  LL_CHECK(o.checkpoint_layers >= 0 && o.checkpoint_layers <= o.config.num_hidden_layers,
           "model: checkpoint_layers (layers checkpointed: recomputed in backward) must be in [0, ",
           o.config.num_hidden_layers, "], got ", o.checkpoint_layers);
  training_mask(o.attention, o.config, o.seq_len);  // reject a bad configuration before allocating
}
}  // namespace

// The host buffers of the offloaded layer inputs; freed (after the backend has drained) with the model.
struct LlamaModel::HostStaging {
  Backend& backend;
  std::vector<void*> buffers;
  size_t bytes_each = 0;
  explicit HostStaging(Backend& b) : backend(b) {}
  ~HostStaging() {
    if (buffers.empty()) return;
    try {
      backend.synchronize();
    } catch (...) {
    }
    for (void* p : buffers) backend.release_host(p);
  }
};

LlamaModel::LlamaModel(Backend& backend, const ModelOptions& options) : backend_(backend), opts_(options) {
  const LlamaConfig& c = opts_.config;
  check_model_options(opts_);
  rope_ = RopeParams{c.rope_theta, c.rope_scaling_factor};
  params_ = std::make_unique<ParamStore>(backend, c, opts_.lora, opts_.trainable, opts_.external_param_storage);

  const DTypePolicy dt = backend.dtypes();
  const int64_t L = opts_.seq_len;
  opts_.ce_chunk_rows = resolved_ce_chunk_rows(opts_, dt);

  // Plan every activation tensor, then allocate once.
  act_arena_ = std::make_unique<Arena>(backend, "activations");
  Arena& A = *act_arena_;
  const ActivationLayout lay = reserve_activations(A, opts_, dt);
  const std::vector<ActHandles>& ah = lay.layers;
  const int n_sets = int(ah.size());
  A.commit();

  acts_.resize(n_sets);
  for (int i = 0; i < n_sets; ++i) {
    LayerActs& a = acts_[i];
    const ActHandles& h = ah[i];
    a.xn1 = A.tensor(h.xn1), a.rstd1 = A.tensor(h.rstd1), a.q = A.tensor(h.q), a.k = A.tensor(h.k);
    a.v = A.tensor(h.v), a.attn = A.tensor(h.attn), a.lse = A.tensor(h.lse), a.x_mid = A.tensor(h.x_mid);
    a.xn2 = A.tensor(h.xn2), a.rstd2 = A.tensor(h.rstd2), a.gate = A.tensor(h.gate), a.up = A.tensor(h.up);
    a.act = A.tensor(h.act);
    for (int s = 0; s < kNumLinearSlots; ++s)
      if (h.xa[s].valid()) a.lora_xa[s] = A.tensor(h.xa[s]);
  }
  buf_ = std::make_unique<Buffers>();
  Buffers& b = *buf_;
  b.ids = A.tensor(lay.ids), b.targets = A.tensor(lay.targets), b.positions = A.tensor(lay.positions);
  b.argmax = A.tensor(lay.argmax);
  for (auto& h : lay.resid) b.resid.push_back(A.tensor(h));
  b.xf = A.tensor(lay.xf), b.rstdf = A.tensor(lay.rstdf), b.logits = A.tensor(lay.logits);
  b.losses = A.tensor(lay.losses);
  b.d_resid = A.tensor(lay.d_resid), b.d_xn = A.tensor(lay.d_xn), b.dq = A.tensor(lay.dq), b.dk = A.tensor(lay.dk);
  b.dv = A.tensor(lay.dv), b.d_attn = A.tensor(lay.d_attn), b.d_gate = A.tensor(lay.d_gate);
  b.d_up = A.tensor(lay.d_up), b.d_act = A.tensor(lay.d_act);
  if (lay.d_xa.valid()) b.d_xa = A.tensor(lay.d_xa);
  if (lay.x_lora.valid()) b.x_lora = A.tensor(lay.x_lora), b.dx_lora = A.tensor(lay.dx_lora);

  acts_full_ = acts_;
  buf_full_ = std::make_unique<Buffers>(*buf_);
  host_ = std::make_unique<HostStaging>(backend);
  if (const int64_t n_host = offloaded_inputs(opts_); n_host > 0) {
    host_->bytes_each = host_staging_bytes(opts_, dt) / size_t(n_host);
    for (int64_t i = 0; i < n_host; ++i) host_->buffers.push_back(backend.allocate_host(host_->bytes_each));
  }
  seq_len_ = 0;
  set_seq_len(L);
}

namespace {
// The leading part of a planned buffer, seen with a smaller first dimension.
Tensor leading(const Tensor& full, int64_t first) {
  if (full.empty()) return full;
  std::vector<int64_t> dims = full.dims();
  dims[0] = first;
  return Tensor(full.data, full.dtype, full.device, dims);
}
}  // namespace

void LlamaModel::set_seq_len(int64_t L) {
  LL_CHECK(L > 0 && L <= opts_.seq_len, "model: sequence length ", L, " is outside the planned range [1, ",
           opts_.seq_len, "]");
  if (L == seq_len_) return;
  const LlamaConfig& c = opts_.config;
  const int64_t B = opts_.batch, T = B * L;
  mask_ = training_mask(opts_.attention, c, L);
  seq_len_ = L;
  for (size_t i = 0; i < acts_.size(); ++i) {
    LayerActs& a = acts_[i];
    const LayerActs& f = acts_full_[i];
    for (auto [dst, src] : {std::pair{&a.xn1, &f.xn1}, {&a.rstd1, &f.rstd1}, {&a.q, &f.q}, {&a.k, &f.k}, {&a.v, &f.v},
                            {&a.attn, &f.attn}, {&a.x_mid, &f.x_mid}, {&a.xn2, &f.xn2}, {&a.rstd2, &f.rstd2},
                            {&a.gate, &f.gate}, {&a.up, &f.up}, {&a.act, &f.act}})
      *dst = leading(*src, T);
    a.lse = Tensor(f.lse.data, f.lse.dtype, f.lse.device, {B, c.num_attention_heads, L});
    for (int s = 0; s < kNumLinearSlots; ++s) a.lora_xa[s] = leading(f.lora_xa[s], T);
  }
  Buffers& b = *buf_;
  const Buffers& f = *buf_full_;
  for (auto [dst, src] : {std::pair{&b.ids, &f.ids}, {&b.targets, &f.targets}, {&b.positions, &f.positions},
                          {&b.argmax, &f.argmax},
                          {&b.xf, &f.xf}, {&b.rstdf, &f.rstdf}, {&b.losses, &f.losses}, {&b.d_resid, &f.d_resid},
                          {&b.d_xn, &f.d_xn}, {&b.dq, &f.dq}, {&b.dk, &f.dk}, {&b.dv, &f.dv}, {&b.d_attn, &f.d_attn},
                          {&b.d_gate, &f.d_gate}, {&b.d_up, &f.d_up}, {&b.d_act, &f.d_act}, {&b.d_xa, &f.d_xa},
                          {&b.x_lora, &f.x_lora}, {&b.dx_lora, &f.dx_lora}})
    *dst = leading(*src, T);
  for (size_t i = 0; i < b.resid.size(); ++i) b.resid[i] = leading(f.resid[i], T);
  // Positions restart at 0 in every sequence of the batch.
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = int32_t(t % L);
  upload_i32(backend_, b.positions, pos.data());
}

LlamaModel::~LlamaModel() = default;

MemoryPlan LlamaModel::memory_plan() const {
  MemoryPlan m;
  m.frozen_weights = params_->frozen_bytes(), m.trainable_weights = params_->trainable_bytes();
  m.gradients = params_->grad_bytes(), m.activations = act_arena_->bytes();
  m.host_staging = host_->buffers.size() * host_->bytes_each;
  return m;
}

int64_t LlamaModel::offloaded_input_count(const ModelOptions& options) { return offloaded_inputs(options); }

bool LlamaModel::input_offloaded(int64_t layer) const {
  return layer >= 0 && layer < offloaded_inputs(opts_);
}

MemoryPlan LlamaModel::plan_memory(Backend& backend, const ModelOptions& options) {
  ModelOptions o = options;
  check_model_options(o);
  const DTypePolicy dt = backend.dtypes();
  o.ce_chunk_rows = resolved_ce_chunk_rows(o, dt);
  // The parameter list without memory (external storage allocates nothing), measured as the store's arenas would be.
  const ParamStore shapes(backend, o.config, o.lora, o.trainable, /*external_storage=*/true);
  Arena frozen(backend, "frozen weights"), trainable(backend, "trainable weights"), grads(backend, "gradients");
  for (const Param& p : shapes.all()) {
    (p.trainable ? trainable : frozen).reserve(dt.weight, p.shape);
    if (p.trainable) grads.reserve(dt.grad, p.shape);
  }
  Arena acts(backend, "activations");
  reserve_activations(acts, o, dt);
  MemoryPlan m;
  m.frozen_weights = frozen.bytes(), m.trainable_weights = trainable.bytes(), m.gradients = grads.bytes();
  m.activations = acts.bytes();
  m.host_staging = host_staging_bytes(o, dt);
  return m;
}

void MemoryPlan::print(std::ostream& os) const {
  auto mib = [](size_t b) { return double(b) / double(1 << 20); };
  os << std::fixed << std::setprecision(1) << "memory plan (MiB): frozen weights " << mib(frozen_weights)
     << ", trainable weights " << mib(trainable_weights) << ", gradients " << mib(gradients) << ", activations "
     << mib(activations) << ", total " << mib(total());
  if (host_staging) os << "; host memory: offloaded layer inputs " << mib(host_staging);
  os << "\n";
}

LlamaModel::LayerActs& LlamaModel::acts_for(int layer) { return acts_[size_t(activation_set(opts_, layer))]; }

void LlamaModel::set_lora_dropout(bool enabled, uint64_t seed) {
  dropout_enabled_ = enabled;
  dropout_seed_ = seed;
}

// PEFT gives every adapted module its own dropout: one independent mask per (layer, projection).
uint64_t LlamaModel::dropout_seed(int layer, LinearSlot slot) const {
  return mix64(dropout_seed_ ^ mix64(uint64_t(layer) * kNumLinearSlots + uint64_t(slot) + 1));
}

// The first rows·cols elements of a [T, widest] scratch buffer, seen as [T, cols].
Tensor LlamaModel::scratch_view(const Tensor& buffer, int64_t cols) const {
  return Tensor(buffer.data, buffer.dtype, buffer.device, {buffer.dim(0), cols});
}

void LlamaModel::init_random(uint64_t seed, double init_std) {
  const Param* first = &params_->all().front();
  params_->write_all([&](Param& p) {
    // One stream per parameter, so the values do not depend on the order parameters are visited in.
    Rng rng(mix64(seed ^ mix64(uint64_t(&p - first) + 1)));
    std::vector<double> v(p.numel());
    if (p.is_norm()) {
      std::fill(v.begin(), v.end(), 1.0);
    } else if (p.kind == ParamKind::LoraB) {
      std::fill(v.begin(), v.end(), 0.0);
    } else if (p.kind == ParamKind::LoraA) {
      // kaiming_uniform_(a=√5): bound = gain·√(3/fan_in), gain = √(2/(1+a²)) → bound = 1/√fan_in.
      const double bound = 1.0 / std::sqrt(double(p.shape[1]));
      for (double& x : v) x = rng.uniform(-bound, bound);
    } else {
      for (double& x : v) x = init_std * rng.normal();
    }
    upload_f64(backend_, p.value, v);
  });
}

// Keeps the outer group (embedding, final norm, LM head) acquired for the duration of a public call.
class LlamaModel::OuterScope {
 public:
  explicit OuterScope(ParamStore& p) : params_(p) { params_.acquire(kOuterGroup); }
  ~OuterScope() { params_.release(kOuterGroup); }

 private:
  ParamStore& params_;
};

// ---- forward ------------------------------------------------------------------------------------------------
void LlamaModel::upload_batch(const int32_t* tokens, const int32_t* targets) {
  const int64_t T = opts_.batch * seq_len_, V = opts_.config.vocab_size;
  for (int64_t t = 0; t < T; ++t)
    LL_CHECK(tokens[t] >= 0 && tokens[t] < V, "input token id ", tokens[t], " at position ", t,
             " is outside the vocabulary [0, ", V, ")");
  upload_i32(backend_, buf_->ids, tokens);
  if (targets) {
    for (int64_t t = 0; t < T; ++t)
      LL_CHECK(targets[t] == -100 || (targets[t] >= 0 && targets[t] < V), "target id ", targets[t], " at position ",
               t, " is neither -100 (ignore) nor inside the vocabulary [0, ", V, ")");
    upload_i32(backend_, buf_->targets, targets);
    host_targets_.assign(targets, targets + T);
  }
}

void LlamaModel::project_forward(int layer, LinearSlot slot, LayerActs& a, Tensor y, const Tensor& x) {
  const LayerParams& lp = params_->layer(layer);
  const int s = int(slot);
  if (lp.lora_a[s]) {
    Tensor x_lora = x;
    if (dropout_on()) {
      x_lora = scratch_view(buf_->x_lora, x.cols());
      backend_.dropout(x_lora, x, opts_.lora.dropout, dropout_seed(layer, slot));
    }
    backend_.lora_forward(y, a.lora_xa[s], x, x_lora, lp.linear[s]->value, lp.lora_a[s]->value, lp.lora_b[s]->value,
                          opts_.lora.scale());
  } else
    backend_.linear_forward(y, x, lp.linear[s]->value, false);
}

void LlamaModel::layer_forward(int layer, LayerActs& a, const Tensor& x_in, Tensor x_out) {
  const LlamaConfig& c = opts_.config;
  const LayerParams& lp = params_->layer(layer);
  const int64_t B = opts_.batch, L = seq_len_, T = B * L, H = c.num_attention_heads;
  const int64_t Hkv = c.num_key_value_heads, Dh = c.head_dim();

  backend_.rmsnorm_forward(a.xn1, a.rstd1, x_in, lp.attn_norm->value, c.rms_norm_eps);
  project_forward(layer, LinearSlot::Q, a, a.q, a.xn1);
  project_forward(layer, LinearSlot::K, a, a.k, a.xn1);
  project_forward(layer, LinearSlot::V, a, a.v, a.xn1);
  backend_.rope_forward(a.q.view({T, H, Dh}), buf_->positions, rope_);
  backend_.rope_forward(a.k.view({T, Hkv, Dh}), buf_->positions, rope_);
  if (cache_active_) {
    // Decoding: append this chunk's keys/values to the cache and attend over everything cached (batch 1).
    const int64_t total = cache_len_ + T;
    backend_.copy(k_cache_[layer].slice_rows(cache_len_, T), a.k);
    backend_.copy(v_cache_[layer].slice_rows(cache_len_, T), a.v);
    backend_.attention_forward(a.attn.view({1, T, H, Dh}), a.lse, a.q.view({1, T, H, Dh}),
                               k_cache_[layer].slice_rows(0, total).view({1, total, Hkv, Dh}),
                               v_cache_[layer].slice_rows(0, total).view({1, total, Hkv, Dh}), mask_);
  } else {
    backend_.attention_forward(a.attn.view({B, L, H, Dh}), a.lse, a.q.view({B, L, H, Dh}),
                               a.k.view({B, L, Hkv, Dh}), a.v.view({B, L, Hkv, Dh}), mask_);
  }
  project_forward(layer, LinearSlot::O, a, a.x_mid, a.attn);
  backend_.add(a.x_mid, a.x_mid, x_in);

  backend_.rmsnorm_forward(a.xn2, a.rstd2, a.x_mid, lp.mlp_norm->value, c.rms_norm_eps);
  project_forward(layer, LinearSlot::Gate, a, a.gate, a.xn2);
  project_forward(layer, LinearSlot::Up, a, a.up, a.xn2);
  backend_.swiglu_forward(a.act, a.gate, a.up);
  project_forward(layer, LinearSlot::Down, a, x_out, a.act);
  backend_.add(x_out, x_out, a.x_mid);
}

void LlamaModel::forward_layers(bool save_inputs) {
  Buffers& b = *buf_;
  const int layers = int(opts_.config.num_hidden_layers);
  // A copy left pending by an interrupted call must land before the slots are written again.
  if (copies_pending_) backend_.wait_for_copies(), copies_pending_ = false;
  // Prefetch hints (ZeRO-3 gathers the next layer while this one computes; no-ops otherwise).
  if (layers > 0) params_->prefetch(0);
  backend_.embedding_forward(b.resid[0], b.ids, params_->embed().value);
  for (int l = 0; l < layers; ++l) {
    params_->acquire(l);
    if (l + 1 < layers) params_->prefetch(l + 1);
    if (save_inputs) {
      // Offload: layer l writes its output into the slot of input l − 1: that input's copy (started before layer
      // l − 1, overlapping its compute) must be complete. Then input l, written by the layer before, starts its
      // copy, which overlaps layer l's compute (the copy only reads the slot; nothing writes it until layer l + 1).
      if (input_offloaded(l - 1)) backend_.wait_for_copies(), copies_pending_ = false;
      if (input_offloaded(l)) backend_.copy_to_host_async(host_->buffers[size_t(l)], b.resid[l]), copies_pending_ = true;
    }
    layer_forward(l, acts_for(l), b.resid[l], b.resid[l + 1]);
    params_->release(l);
  }
  backend_.rmsnorm_forward(b.xf, b.rstdf, b.resid.back(), params_->final_norm().value, opts_.config.rms_norm_eps);
}

// ---- inference with a KV cache ---------------------------------------------------------------------------------
void LlamaModel::enable_kv_cache(int64_t max_tokens) {
  LL_CHECK(opts_.batch == 1, "KV cache: inference runs one sequence at a time; build the model with batch 1");
  LL_CHECK(!opts_.attention.use_s2, "KV cache: inference uses full causal attention; build the model with S2 off");
  LL_CHECK(max_tokens >= 1, "KV cache: capacity must be positive, got ", max_tokens);
  const LlamaConfig& c = opts_.config;
  cache_arena_ = std::make_unique<Arena>(backend_, "kv cache");
  std::vector<Arena::Handle> kh, vh;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    kh.push_back(cache_arena_->reserve(backend_.dtypes().act, {max_tokens, c.kv_dim()}));
    vh.push_back(cache_arena_->reserve(backend_.dtypes().act, {max_tokens, c.kv_dim()}));
  }
  cache_arena_->commit();
  k_cache_.clear(), v_cache_.clear();
  for (size_t l = 0; l < kh.size(); ++l) {
    k_cache_.push_back(cache_arena_->tensor(kh[l]));
    v_cache_.push_back(cache_arena_->tensor(vh[l]));
  }
  cache_capacity_ = max_tokens;
  cache_len_ = 0;
}

std::vector<double> LlamaModel::append_tokens(const int32_t* tokens, int64_t count) {
  LL_CHECK(cache_capacity_ > 0, "append_tokens: call enable_kv_cache first");
  LL_CHECK(count >= 1, "append_tokens: nothing to append");
  LL_CHECK(cache_len_ + count <= cache_capacity_, "KV cache full: ", cache_len_, " cached + ", count,
           " new tokens exceed its capacity of ", cache_capacity_);
  Buffers& b = *buf_;
  const OuterScope outer(*params_);
  std::vector<double> last_logits;
  for (int64_t done = 0; done < count;) {
    // Prefill in chunks of at most the planned length, so memory stays bounded on long prompts.
    const int64_t n = std::min(opts_.seq_len, count - done);
    set_seq_len(n);
    upload_batch(tokens + done, nullptr);
    std::vector<int32_t> pos(n);
    for (int64_t t = 0; t < n; ++t) pos[t] = int32_t(cache_len_ + t);
    upload_i32(backend_, b.positions, pos.data());
    cache_active_ = true;
    try {
      forward_layers();
    } catch (...) {
      cache_active_ = false;
      throw;
    }
    cache_active_ = false;
    cache_len_ += n;
    done += n;
    if (done == count) {
      Tensor logits = b.logits.slice_rows(0, 1);
      backend_.linear_forward(logits, b.xf.slice_rows(n - 1, 1), params_->lm_head().value, false);
      last_logits = download_f64(backend_, logits);
    }
  }
  // Restore the positions the training/evaluation paths expect (t mod L).
  std::vector<int32_t> pos(seq_len_);
  for (int64_t t = 0; t < seq_len_; ++t) pos[t] = int32_t(t);
  upload_i32(backend_, b.positions, pos.data());
  return last_logits;
}

// Cross-entropy over row chunks: logits for C rows, loss (and dlogits in place), then straight back through
// the LM head into d_xn (the gradient of the final norm's output) before the next chunk reuses the buffer.
LossResult LlamaModel::head_loss(bool compute_grad, double loss_scale, int32_t* argmax) {
  Buffers& b = *buf_;
  const int64_t T = opts_.batch * seq_len_, C = b.logits.dim(0);
  Param& head = params_->lm_head();
  for (int64_t start = 0; start < T; start += C) {
    const int64_t rows = std::min(C, T - start);
    Tensor logits = b.logits.slice_rows(0, rows);
    const Tensor x = b.xf.slice_rows(start, rows);
    backend_.linear_forward(logits, x, head.value, false);
    // Before cross_entropy, which may overwrite the logits with their gradient.
    if (argmax) backend_.argmax_rows(b.argmax.view({T, 1}).slice_rows(start, rows).view({rows}), logits);
    backend_.cross_entropy(logits, b.losses.view({T, 1}).slice_rows(start, rows).view({rows}),
                           b.targets.view({T, 1}).slice_rows(start, rows).view({rows}), loss_scale, compute_grad);
    if (compute_grad) backend_.linear_backward(b.d_xn.slice_rows(start, rows), head.grad, logits, x, head.value, false);
  }
  LossResult result;
  const std::vector<double> losses = download_f64(backend_, b.losses);
  for (int64_t t = 0; t < T; ++t)
    if (host_targets_[t] != -100) {
      result.loss_sum += losses[t];
      ++result.scored;
    }
  return result;
}

LossResult LlamaModel::forward(const int32_t* tokens, const int32_t* targets, int32_t* argmax) {
  upload_batch(tokens, targets);
  const OuterScope outer(*params_);
  forward_layers();
  const LossResult r = head_loss(false, 0.0, argmax);
  if (argmax) backend_.copy_to_host(argmax, buf_->argmax);
  return r;
}

std::vector<double> LlamaModel::logits(const int32_t* tokens) {
  upload_batch(tokens, nullptr);
  const OuterScope outer(*params_);
  forward_layers();
  Buffers& b = *buf_;
  const int64_t T = opts_.batch * seq_len_, C = b.logits.dim(0), V = opts_.config.vocab_size;
  std::vector<double> out(size_t(T * V));
  for (int64_t start = 0; start < T; start += C) {
    const int64_t rows = std::min(C, T - start);
    Tensor logits = b.logits.slice_rows(0, rows);
    backend_.linear_forward(logits, b.xf.slice_rows(start, rows), params_->lm_head().value, false);
    const std::vector<double> chunk = download_f64(backend_, logits);
    std::copy(chunk.begin(), chunk.end(), out.begin() + start * V);
  }
  return out;
}

// ---- backward -------------------------------------------------------------------------------------------------
void LlamaModel::project_backward(int layer, LinearSlot slot, LayerActs& a, Tensor dx, const Tensor& dy,
                                  const Tensor& x, bool accumulate_dx) {
  const LayerParams& lp = params_->layer(layer);
  const int s = int(slot);
  const Param& w = *lp.linear[s];
  if (lp.lora_a[s] && dropout_on()) {
    // Regenerate the dropped adapter input (same seed, same mask), route its gradient through the same mask.
    const uint64_t seed = dropout_seed(layer, slot);
    Tensor x_lora = scratch_view(buf_->x_lora, x.cols()), dx_lora = scratch_view(buf_->dx_lora, x.cols());
    backend_.dropout(x_lora, x, opts_.lora.dropout, seed);
    backend_.lora_backward(dx, dx_lora, w.grad, lp.lora_a[s]->grad, lp.lora_b[s]->grad, buf_->d_xa, dy, x, x_lora,
                           a.lora_xa[s], w.value, lp.lora_a[s]->value, lp.lora_b[s]->value, opts_.lora.scale(),
                           accumulate_dx);
    backend_.dropout(dx_lora, dx_lora, opts_.lora.dropout, seed);
    backend_.add(dx, dx, dx_lora);
  } else if (lp.lora_a[s]) {
    backend_.lora_backward(dx, Tensor(), w.grad, lp.lora_a[s]->grad, lp.lora_b[s]->grad, buf_->d_xa, dy, x, x,
                           a.lora_xa[s], w.value, lp.lora_a[s]->value, lp.lora_b[s]->value, opts_.lora.scale(),
                           accumulate_dx);
  } else
    backend_.linear_backward(dx, w.grad, dy, x, w.value, accumulate_dx);
}

// On entry d_resid holds ∂loss/∂x_out; on exit ∂loss/∂x_in. The residual adds' backward is the identity,
// expressed by accumulating the norms' input gradients into d_resid.
void LlamaModel::layer_backward(int layer, LayerActs& a, const Tensor& x_in, Tensor d_resid) {
  const LlamaConfig& c = opts_.config;
  const LayerParams& lp = params_->layer(layer);
  Buffers& b = *buf_;
  const int64_t B = opts_.batch, L = seq_len_, T = B * L, H = c.num_attention_heads;
  const int64_t Hkv = c.num_key_value_heads, Dh = c.head_dim();

  // MLP block: x_out = x_mid + down(swiglu(gate(xn2), up(xn2)))
  project_backward(layer, LinearSlot::Down, a, b.d_act, d_resid, a.act, false);
  backend_.swiglu_backward(b.d_gate, b.d_up, b.d_act, a.gate, a.up);
  project_backward(layer, LinearSlot::Gate, a, b.d_xn, b.d_gate, a.xn2, false);
  project_backward(layer, LinearSlot::Up, a, b.d_xn, b.d_up, a.xn2, true);
  backend_.rmsnorm_backward(d_resid, lp.mlp_norm->grad, b.d_xn, a.x_mid, lp.mlp_norm->value, a.rstd2, true);

  // Attention block: x_mid = x_in + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1)))
  project_backward(layer, LinearSlot::O, a, b.d_attn, d_resid, a.attn, false);
  backend_.attention_backward(b.dq.view({B, L, H, Dh}), b.dk.view({B, L, Hkv, Dh}), b.dv.view({B, L, Hkv, Dh}),
                              b.d_attn.view({B, L, H, Dh}), a.q.view({B, L, H, Dh}), a.k.view({B, L, Hkv, Dh}),
                              a.v.view({B, L, Hkv, Dh}), a.attn.view({B, L, H, Dh}), a.lse, mask_);
  backend_.rope_backward(b.dq.view({T, H, Dh}), b.positions, rope_);
  backend_.rope_backward(b.dk.view({T, Hkv, Dh}), b.positions, rope_);
  project_backward(layer, LinearSlot::Q, a, b.d_xn, b.dq, a.xn1, false);
  project_backward(layer, LinearSlot::K, a, b.d_xn, b.dk, a.xn1, true);
  project_backward(layer, LinearSlot::V, a, b.d_xn, b.dv, a.xn1, true);
  backend_.rmsnorm_backward(d_resid, lp.attn_norm->grad, b.d_xn, x_in, lp.attn_norm->value, a.rstd1, true);
}

LossResult LlamaModel::forward_backward(const int32_t* tokens, const int32_t* targets, double loss_scale) {
  LL_CHECK(targets != nullptr, "forward_backward: targets are required");
  upload_batch(tokens, targets);
  const OuterScope outer(*params_);
  forward_layers(/*save_inputs=*/true);
  const int layers = int(opts_.config.num_hidden_layers);
  if (layers > 0) params_->prefetch(layers - 1);  // the backward's first layer, during the head and the loss
  int64_t scored = 0;
  for (int32_t t : host_targets_) scored += t != -100;
  if (loss_scale == 0) loss_scale = scored ? 1.0 / double(scored) : 0.0;
  const LossResult result = head_loss(true, loss_scale);

  Buffers& b = *buf_;
  Param& final_norm = params_->final_norm();
  backend_.rmsnorm_backward(b.d_resid, final_norm.grad, b.d_xn, b.resid.back(), final_norm.value, b.rstdf, false);
  for (int l = layers - 1; l >= 0; --l) {
    LayerActs& a = acts_for(l);
    params_->acquire(l);
    if (l > 0) params_->prefetch(l - 1);
    // Offload: this layer's input was prefetched while layer l + 1 ran its backward — wait for it; then prefetch
    // input l − 1 into the other slot (free: layer l + 1's backward, its last reader, is enqueued before the copy),
    // overlapping this layer's recomputation and backward, which use only slot l mod 2.
    if (input_offloaded(l)) backend_.wait_for_copies(), copies_pending_ = false;
    if (input_offloaded(l - 1))
      backend_.copy_from_host_async(b.resid[l - 1], host_->buffers[size_t(l - 1)]), copies_pending_ = true;
    // Recompute a checkpointed layer (same values) — except the last one, k − 1: the forward wrote it last into the
    // shared set, and nothing has written there since. Its output is not needed again (layer l + 1's backward is
    // done): it goes to d_xn, free until layer_backward overwrites it — with offload, resid[l + 1] is the slot the
    // prefetch of input l − 1 is filling.
    if (l < opts_.checkpoint_layers - 1) layer_forward(l, a, b.resid[l], b.d_xn);
    layer_backward(l, a, b.resid[l], b.d_resid);
    params_->backward_done(l);
    params_->release(l);
  }
  Param& embed = params_->embed();
  if (embed.trainable) backend_.embedding_backward(embed.grad, b.ids, b.d_resid);
  params_->backward_done(kOuterGroup);
  return result;
}

}  // namespace ll
