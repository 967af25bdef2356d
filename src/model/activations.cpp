#include "model/activations.h"

#include <algorithm>

#include "model/model.h"

namespace ll {

int64_t activation_set_count(const ModelOptions& o) {
  const int64_t n = o.config.num_hidden_layers, k = o.checkpoint_layers;
  return (k > 0 ? 1 : 0) + (n - k);
}

int64_t activation_set(const ModelOptions& o, int64_t layer) {
  const int64_t k = o.checkpoint_layers;
  return layer < k ? 0 : layer - k + (k > 0 ? 1 : 0);
}

bool offloading(const ModelOptions& o) { return o.offload_checkpoints && o.checkpoint_layers > 0; }

int64_t mlp_tile_buffer_rows(const ModelOptions& o) {
  return o.mlp_tile_rows > 0 ? std::min(o.mlp_tile_rows, o.batch * o.seq_len) : 0;
}

int64_t offloaded_inputs(const ModelOptions& o) {
  return offloading(o) ? std::max<int64_t>(0, o.checkpoint_layers - 2) : 0;
}

struct ActivationLayout {
  std::vector<std::vector<Arena::Handle>> saved;  // per set, schema order
  std::vector<std::vector<Arena::Handle>> xa;     // per set, by slot
  std::vector<Arena::Handle> resid, final_norm, scratch;
  Arena::Handle ids, targets, positions, argmax, xf, logits, losses, d_resid, d_xn, d_xa, x_lora, dx_lora;
};

namespace {

// Whether backward reads the input of linear `slot` in some layer: for its weight gradient or its adapter.
bool linear_input_read(const ParamStore& params, int slot) {
  for (int l = 0; l < params.num_layers(); ++l) {
    const GroupSlots& g = params.slots(l);
    if (g.lora_a.at(size_t(slot)) != nullptr || g.param.at(size_t(slot))->trainable) return true;
  }
  return false;
}

}  // namespace

ActivationPlan::ActivationPlan(Arena& A, const ModelOptions& o, const ParamStore& params,
                               const ActivationSchema& schema, const DTypePolicy& dt)
    : layout_(std::make_unique<ActivationLayout>()) {
  const ModelConfig& c = o.config;
  const int64_t B = o.batch, L = o.seq_len, T = B * L, D = c.hidden_size;
  const int64_t H = c.num_attention_heads, V = c.vocab_size, r = o.lora.rank;
  const int64_t C = std::min(o.ce_chunk_rows, T);
  const int64_t tile = mlp_tile_buffer_rows(o);  // 0: the MLP is not tiled
  ActivationLayout& lay = *layout_;
  auto reserve = [&](const TensorSpec& s) {
    const DType dtype = s.cls == ActClass::Act ? dt.act : dt.stat;
    if (s.lse) return A.reserve(dtype, {B, H, L});
    const int64_t rows = tile > 0 && s.mlp_tile ? tile : T;
    return s.cols > 0 ? A.reserve(dtype, {rows, s.cols}) : A.reserve(dtype, {rows});
  };

  const size_t n_sets = size_t(activation_set_count(o));
  // Saved tensors backward will not read, and the MLP tile buffers (recomputed in backward): one buffer for every
  // set (when there are several).
  std::vector<Arena::Handle> shared(schema.saved.size());
  for (size_t i = 0; i < schema.saved.size(); ++i) {
    const TensorSpec& s = schema.saved[i];
    const bool read = s.read_in_backward && (s.only_input_of < 0 || linear_input_read(params, s.only_input_of));
    if ((!read && n_sets > 1) || (tile > 0 && s.mlp_tile)) shared[i] = reserve(s);
  }
  const GroupSlots& layer0 = params.slots(0);
  lay.saved.resize(n_sets);
  lay.xa.resize(n_sets);
  for (size_t set = 0; set < n_sets; ++set) {
    for (size_t i = 0; i < schema.saved.size(); ++i)
      lay.saved[set].push_back(shared[i].valid() ? shared[i] : reserve(schema.saved[i]));
    lay.xa[set].resize(layer0.lora_a.size());
    for (size_t slot = 0; slot < layer0.lora_a.size(); ++slot)
      if (layer0.lora_a[slot]) lay.xa[set][slot] = A.reserve(dt.act, {T, r});
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
  lay.xf = A.reserve(dt.act, {T, D});
  for (const TensorSpec& s : schema.final_norm) lay.final_norm.push_back(reserve(s));
  lay.logits = A.reserve(dt.act, {C, V});
  lay.losses = A.reserve(dt.stat, {T});
  lay.d_resid = A.reserve(dt.act, {T, D}), lay.d_xn = A.reserve(dt.act, {T, D});
  // Scratch: own memory first, then the phases, each starting where the shared region begins.
  lay.scratch.resize(schema.scratch.size());
  int last_phase = -1;
  for (size_t i = 0; i < schema.scratch.size(); ++i) {
    if (schema.scratch[i].phase < 0) lay.scratch[i] = reserve(schema.scratch[i]);
    last_phase = std::max(last_phase, schema.scratch[i].phase);
  }
  if (last_phase >= 0) {
    A.begin_shared();
    for (int phase = 0; phase <= last_phase; ++phase) {
      if (phase > 0) A.next_phase();
      for (size_t i = 0; i < schema.scratch.size(); ++i)
        if (schema.scratch[i].phase == phase) lay.scratch[i] = reserve(schema.scratch[i]);
    }
    A.end_shared();
  }
  if (o.lora.enabled()) lay.d_xa = A.reserve(dt.act, {T, r});
  if (o.lora.enabled() && o.lora.dropout > 0) {
    int64_t widest = 0;  // the widest input of a decoder-layer linear
    for (const ParamSpec& s : params.table())
      if (s.role == ParamRole::Linear && s.layer >= 0) widest = std::max(widest, s.shape[1]);
    lay.x_lora = A.reserve(dt.act, {T, widest});
    lay.dx_lora = A.reserve(dt.act, {T, widest});
  }
}

ActivationPlan::~ActivationPlan() = default;

void ActivationPlan::bind(const Arena& A, std::vector<ActivationSet>* sets, StepBuffers* b) const {
  const ActivationLayout& lay = *layout_;
  auto tensor = [&](Arena::Handle h) { return h.valid() ? A.tensor(h) : Tensor(); };
  sets->assign(lay.saved.size(), {});
  for (size_t set = 0; set < lay.saved.size(); ++set) {
    for (Arena::Handle h : lay.saved[set]) (*sets)[set].saved.push_back(tensor(h));
    for (Arena::Handle h : lay.xa[set]) (*sets)[set].lora_xa.push_back(tensor(h));
  }
  b->ids = tensor(lay.ids), b->targets = tensor(lay.targets), b->positions = tensor(lay.positions);
  b->argmax = tensor(lay.argmax);
  b->resid.clear();
  for (Arena::Handle h : lay.resid) b->resid.push_back(tensor(h));
  b->xf = tensor(lay.xf);
  b->final_norm.clear();
  for (Arena::Handle h : lay.final_norm) b->final_norm.push_back(tensor(h));
  b->logits = tensor(lay.logits), b->losses = tensor(lay.losses);
  b->d_resid = tensor(lay.d_resid), b->d_xn = tensor(lay.d_xn);
  b->scratch.clear();
  for (Arena::Handle h : lay.scratch) b->scratch.push_back(tensor(h));
  b->d_xa = tensor(lay.d_xa), b->x_lora = tensor(lay.x_lora), b->dx_lora = tensor(lay.dx_lora);
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

void view_for_length(const ActivationSchema& schema, int64_t B, int64_t H, int64_t L,
                     const std::vector<ActivationSet>& full_sets, const StepBuffers& f,
                     std::vector<ActivationSet>* sets, StepBuffers* b) {
  const int64_t T = B * L;
  // An MLP tile buffer keeps its rows (at most T of them are used).
  auto view = [&](const TensorSpec& spec, const Tensor& src) {
    if (spec.mlp_tile) return leading(src, std::min(T, src.dim(0)));
    return spec.lse ? Tensor(src.data, src.dtype, src.device, {B, H, L}) : leading(src, T);
  };
  for (size_t set = 0; set < sets->size(); ++set) {
    ActivationSet& a = (*sets)[set];
    const ActivationSet& full = full_sets[set];
    for (size_t i = 0; i < a.saved.size(); ++i) a.saved[i] = view(schema.saved[i], full.saved[i]);
    for (size_t s = 0; s < a.lora_xa.size(); ++s) a.lora_xa[s] = leading(full.lora_xa[s], T);
  }
  for (auto [dst, src] : {std::pair{&b->ids, &f.ids}, {&b->targets, &f.targets}, {&b->positions, &f.positions},
                          {&b->argmax, &f.argmax}, {&b->xf, &f.xf}, {&b->losses, &f.losses},
                          {&b->d_resid, &f.d_resid}, {&b->d_xn, &f.d_xn}, {&b->d_xa, &f.d_xa},
                          {&b->x_lora, &f.x_lora}, {&b->dx_lora, &f.dx_lora}})
    *dst = leading(*src, T);
  for (size_t i = 0; i < b->final_norm.size(); ++i) b->final_norm[i] = view(schema.final_norm[i], f.final_norm[i]);
  for (size_t i = 0; i < b->scratch.size(); ++i) b->scratch[i] = view(schema.scratch[i], f.scratch[i]);
  for (size_t i = 0; i < b->resid.size(); ++i) b->resid[i] = leading(f.resid[i], T);
}

}  // namespace ll
