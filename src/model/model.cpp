#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <iomanip>

#include "core/dropout_mask.h"
#include "model/registry.h"
#include "core/tensor_host.h"
#include "util/random.h"

namespace ll {

namespace {
constexpr int64_t kDefaultChunkBytes = 32ll << 20;

size_t host_staging_bytes(const ModelOptions& o, const DTypePolicy& dt) {
  return size_t(offloaded_inputs(o)) * size_t(o.batch * o.seq_len * o.config.hidden_size) * dtype_size(dt.act);
}

int64_t resolved_ce_chunk_rows(const ModelOptions& o, const DTypePolicy& dt) {
  if (o.ce_chunk_rows > 0) return o.ce_chunk_rows;
  return std::max<int64_t>(1, kDefaultChunkBytes / int64_t(o.config.vocab_size * dtype_size(dt.act)));
}

void check_model_options(const ModelOptions& o) {
  o.config.validate();
  LL_CHECK(o.batch > 0, "model: batch size must be positive, got ", o.batch);
  LL_CHECK(o.seq_len > 0, "model: sequence length must be positive, got ", o.seq_len);
  LL_CHECK(o.lora.dropout >= 0 && o.lora.dropout < 1, "LoRA dropout must be in [0, 1), got ", o.lora.dropout);
  LL_CHECK(o.checkpoint_layers >= 0 && o.checkpoint_layers <= o.config.num_hidden_layers,
           "model: checkpoint_layers (layers checkpointed: recomputed in backward) must be in [0, ",
           o.config.num_hidden_layers, "], got ", o.checkpoint_layers);
  LL_CHECK(o.mlp_tile_rows >= 0, "model: mlp_tile_rows (rows per MLP tile; 0: off) must be >= 0, got ",
           o.mlp_tile_rows);
  const Architecture& arch = architecture_for(o.config.model_type);
  LL_CHECK(o.mlp_tile_rows == 0 || has_mlp_tiles(arch.activation_schema(o.config)), "model: mlp_tile_rows ",
           o.mlp_tile_rows, ": model_type \"", o.config.model_type,
           "\" does not run its MLP over row tiles; set mlp_tile_rows to 0");
  // Reject a bad configuration before allocating.
  arch.attention_mask(o.attention, o.config, o.seq_len);
}
}  // namespace

// The host buffers of the offloaded layer inputs; freed (after the backend has drained) with the model.
struct Model::HostStaging {
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

Model::Model(Backend& backend, const ModelOptions& options) : backend_(backend), opts_(options) {
  const ModelConfig& c = opts_.config;
  check_model_options(opts_);
  arch_ = &architecture_for(c.model_type);
  schema_ = arch_->activation_schema(c);
  rope_ = arch_->rope(c);
  params_ = std::make_unique<ParamStore>(backend, c, opts_.lora, opts_.trainable, opts_.external_param_storage);

  const DTypePolicy dt = backend.dtypes();
  const int64_t L = opts_.seq_len;
  opts_.ce_chunk_rows = resolved_ce_chunk_rows(opts_, dt);

  // Plan every activation tensor, then allocate once.
  act_arena_ = std::make_unique<Arena>(backend, "activations");
  const ActivationPlan plan(*act_arena_, opts_, *params_, schema_, dt);
  act_arena_->commit();
  plan.bind(*act_arena_, &acts_, &buf_);
  acts_full_ = acts_;
  buf_full_ = buf_;
  host_ = std::make_unique<HostStaging>(backend);
  if (const int64_t n_host = offloaded_inputs(opts_); n_host > 0) {
    host_->bytes_each = host_staging_bytes(opts_, dt) / size_t(n_host);
    for (int64_t i = 0; i < n_host; ++i) host_->buffers.push_back(backend.allocate_host(host_->bytes_each));
  }
  seq_len_ = 0;
  set_seq_len(L);
}

void Model::set_seq_len(int64_t L) {
  LL_CHECK(L > 0 && L <= opts_.seq_len, "model: sequence length ", L, " is outside the planned range [1, ",
           opts_.seq_len, "]");
  if (L == seq_len_) return;
  const ModelConfig& c = opts_.config;
  const int64_t B = opts_.batch, T = B * L;
  mask_ = arch_->attention_mask(opts_.attention, c, L);
  seq_len_ = L;
  view_for_length(schema_, B, c.num_attention_heads, L, acts_full_, buf_full_, &acts_, &buf_);
  // Positions restart at 0 in every sequence of the batch.
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = int32_t(t % L);
  upload_i32(backend_, buf_.positions, pos.data());
}

Model::~Model() = default;

MemoryPlan Model::memory_plan() const {
  MemoryPlan m;
  m.frozen_weights = params_->frozen_bytes(), m.trainable_weights = params_->trainable_bytes();
  m.gradients = params_->grad_bytes(), m.activations = act_arena_->bytes();
  m.host_staging = host_->buffers.size() * host_->bytes_each;
  return m;
}

int64_t Model::offloaded_input_count(const ModelOptions& options) { return offloaded_inputs(options); }

bool Model::input_offloaded(int64_t layer) const { return layer >= 0 && layer < offloaded_inputs(opts_); }

MemoryPlan Model::plan_memory(Backend& backend, const ModelOptions& options) {
  ModelOptions o = options;
  check_model_options(o);
  const DTypePolicy dt = backend.dtypes();
  o.ce_chunk_rows = resolved_ce_chunk_rows(o, dt);
  // The parameter list without memory (external storage allocates nothing), measured as the store's arenas would be.
  const ParamStore shapes(backend, o.config, o.lora, o.trainable, /*external_storage=*/true);
  Arena frozen(backend, "frozen weights"), trainable(backend, "trainable weights"), grads(backend, "gradients");
  for (const Param& p : shapes.all()) {
    (p.trainable ? trainable : frozen).reserve(p.value.dtype, p.shape);  // a 4-bit base: its format's bytes
    if (p.trainable) grads.reserve(dt.grad, p.shape);
  }
  Arena acts(backend, "activations");
  const ActivationPlan plan(acts, o, shapes, shapes.architecture().activation_schema(o.config), dt);
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

ActivationSet& Model::acts_for(int layer) { return acts_[size_t(activation_set(opts_, layer))]; }

void Model::set_lora_dropout(bool enabled, uint64_t seed) {
  dropout_enabled_ = enabled;
  dropout_seed_ = seed;
}

// PEFT gives every adapted module its own dropout: one independent mask per (layer, linear).
uint64_t Model::dropout_seed(int layer, int slot, int64_t first_row) const {
  const GroupSlots& g = params_->slots(layer);
  const uint64_t linear = uint64_t(g.linear_index[size_t(slot)]);
  const uint64_t seed = mix64(dropout_seed_ ^ mix64(uint64_t(layer) * uint64_t(g.linears) + linear + 1));
  // The mask's element index restarts in every MLP tile: each tile past the first draws from its own seed.
  return first_row == 0 ? seed : mix64(seed ^ mix64(uint64_t(first_row)));
}

// The first rows·cols elements of a [T, widest] scratch buffer, seen as [rows, cols].
Tensor Model::scratch_view(const Tensor& buffer, int64_t rows, int64_t cols) const {
  return Tensor(buffer.data, buffer.dtype, buffer.device, {rows, cols});
}

Tensor Model::lora_xa(const Block& b, int slot) const {
  return b.set_->lora_xa[size_t(slot)].slice_rows(b.row0_, b.rows_);  // the whole [T, r] outside a tile
}

void Model::init_random(uint64_t seed, double init_std) {
  const Param* first = &params_->all().front();
  params_->write_all([&](Param& p) {
    // One stream per parameter, so the values do not depend on the order parameters are visited in.
    Rng rng(mix64(seed ^ mix64(uint64_t(&p - first) + 1)));
    std::vector<double> v(p.numel());
    if (p.role == ParamRole::Norm) {
      std::fill(v.begin(), v.end(), 1.0);
    } else if (p.role == ParamRole::LoraB || p.role == ParamRole::Bias || p.role == ParamRole::NormBias) {
      std::fill(v.begin(), v.end(), 0.0);
    } else if (p.role == ParamRole::LoraA) {
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
class Model::OuterScope {
 public:
  explicit OuterScope(ParamStore& p) : params_(p) { params_.acquire(kOuterGroup); }
  ~OuterScope() { params_.release(kOuterGroup); }

 private:
  ParamStore& params_;
};

// ---- the Block the definitions compute with ----------------------------------------------------------------------
Block Model::block(int layer, ActivationSet* set, const Tensor& input, const Tensor& output) {
  Block b;
  b.model_ = this;
  b.backend_ = &backend_;
  b.config_ = &opts_.config;
  b.layer_ = layer;
  b.batch_ = opts_.batch;
  b.seq_len_ = seq_len_;
  b.rows_ = opts_.batch * seq_len_;
  b.input_ = input;
  b.output_ = output;
  b.d_resid_ = buf_.d_resid;
  b.d_hidden_ = buf_.d_xn;
  b.saved_ = set ? set->saved.data() : buf_.final_norm.data();
  b.scratch_ = buf_.scratch.data();
  b.positions_ = &buf_.positions;
  b.rope_ = &rope_;
  b.set_ = set;
  return b;
}

const Param& Block::param(int slot) const { return *model_->params_->slots(layer_).param[size_t(slot)]; }

void Block::project(int slot, const Tensor& y, const Tensor& x) const { model_->project_forward(*this, slot, y, x); }

void Block::project_backward(int slot, const Tensor& dx, const Tensor& dy, const Tensor& x, bool accumulate_dx) const {
  model_->project_backward(*this, slot, dx, dy, x, accumulate_dx);
}

void Block::attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v) const {
  model_->attention_forward(*this, out, lse, q, k, v);
}

void Block::attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& d_out,
                               const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                               const Tensor& lse) const {
  const ModelConfig& c = *config_;
  const int64_t B = batch_, L = seq_len_, H = c.num_attention_heads, Hkv = c.num_key_value_heads, Dh = c.head_dim();
  backend_->attention_backward(dq.view({B, L, H, Dh}), dk.view({B, L, Hkv, Dh}), dv.view({B, L, Hkv, Dh}),
                               d_out.view({B, L, H, Dh}), q.view({B, L, H, Dh}), k.view({B, L, Hkv, Dh}),
                               v.view({B, L, Hkv, Dh}), out.view({B, L, H, Dh}), lse, model_->mask_);
}

void Block::mlp_forward() const { model_->mlp_forward(*this); }
void Block::mlp_backward() const { model_->mlp_backward(*this); }

// ---- the MLP over row tiles ------------------------------------------------------------------------------------
namespace {
// Rows [start, start + count) of a [T, cols] or [T] tensor (empty stays empty).
Tensor row_range(const Tensor& t, int64_t start, int64_t count) {
  if (t.empty()) return t;
  if (t.ndim == 1)
    return Tensor(static_cast<char*>(t.data) + size_t(start) * dtype_size(t.dtype), t.dtype, t.device, {count});
  return t.slice_rows(start, count);
}
}  // namespace

Block Model::mlp_tile(const Block& b, int64_t start, int64_t rows) const {
  Block t = b;
  t.tile_ = true;
  t.row0_ = start, t.rows_ = rows;
  t.input_ = row_range(b.input_, start, rows), t.output_ = row_range(b.output_, start, rows);
  t.d_resid_ = row_range(b.d_resid_, start, rows), t.d_hidden_ = row_range(b.d_hidden_, start, rows);
  t.tile_positions_ = row_range(*b.positions_, start, rows);
  // The mlp_tile buffers hold one tile from their first row; the attention's log-sum-exp is not row-indexed.
  auto view = [&](const TensorSpec& spec, const Tensor& full) {
    if (spec.mlp_tile) return full.slice_rows(0, rows);
    return spec.lse ? full : row_range(full, start, rows);
  };
  t.tile_saved_.clear(), t.tile_scratch_.clear();
  for (size_t i = 0; i < schema_.saved.size(); ++i) t.tile_saved_.push_back(view(schema_.saved[i], b.saved_[i]));
  for (size_t i = 0; i < schema_.scratch.size(); ++i)
    t.tile_scratch_.push_back(view(schema_.scratch[i], b.scratch_[i]));
  return t;
}

void Model::mlp_forward(const Block& b) {
  const int64_t T = b.rows(), N = opts_.mlp_tile_rows;
  if (N == 0) {
    arch_->mlp_intermediates(b);
    arch_->mlp_output(b);
    return;
  }
  for (int64_t start = 0; start < T; start += N) {
    Block t = mlp_tile(b, start, std::min(N, T - start));
    arch_->mlp_intermediates(t);
    arch_->mlp_output(t);
  }
  mlp_tiles_hold_layer_ = b.layer();
}

void Model::mlp_backward(const Block& b) {
  const int64_t T = b.rows(), N = opts_.mlp_tile_rows;
  if (N == 0) {
    arch_->mlp_backward(b);
    return;
  }
  // Last tile first: when this layer's forward (or its recomputation) was the last to run the MLP, the tile buffers
  // still hold its last tile, and only the others are recomputed (with one tile, nothing is).
  const int64_t tiles = (T + N - 1) / N;
  for (int64_t i = tiles - 1; i >= 0; --i) {
    Block t = mlp_tile(b, i * N, std::min(N, T - i * N));
    if (i < tiles - 1 || mlp_tiles_hold_layer_ != b.layer()) arch_->mlp_intermediates(t);
    arch_->mlp_backward(t);
  }
  mlp_tiles_hold_layer_ = kNoLayer;
}

// ---- forward ------------------------------------------------------------------------------------------------
void Model::upload_batch(const int32_t* tokens, const int32_t* targets) {
  const int64_t T = opts_.batch * seq_len_, V = opts_.config.vocab_size;
  for (int64_t t = 0; t < T; ++t)
    LL_CHECK(tokens[t] >= 0 && tokens[t] < V, "input token id ", tokens[t], " at position ", t,
             " is outside the vocabulary [0, ", V, ")");
  upload_i32(backend_, buf_.ids, tokens);
  if (targets) {
    for (int64_t t = 0; t < T; ++t)
      LL_CHECK(targets[t] == -100 || (targets[t] >= 0 && targets[t] < V), "target id ", targets[t], " at position ",
               t, " is neither -100 (ignore) nor inside the vocabulary [0, ", V, ")");
    upload_i32(backend_, buf_.targets, targets);
    host_targets_.assign(targets, targets + T);
  }
}

void Model::project_forward(const Block& b, int slot, const Tensor& y, const Tensor& x) {
  const GroupSlots& g = params_->slots(b.layer());
  const Param& w = *g.param[size_t(slot)];
  const Param* a = g.lora_a[size_t(slot)];
  if (a) {
    Tensor x_lora = x;
    if (dropout_on()) {
      x_lora = scratch_view(buf_.x_lora, x.rows(), x.cols());
      backend_.dropout(x_lora, x, opts_.lora.dropout, dropout_seed(b.layer(), slot, b.first_row()));
    }
    backend_.lora_forward(y, lora_xa(b, slot), x, x_lora, w.value, a->value,
                          g.lora_b[size_t(slot)]->value, opts_.lora.scale());
  } else
    backend_.linear_forward(y, x, w.value, false);
  if (const Param* bias = g.bias[size_t(slot)]) backend_.add_bias(y, bias->value);
}

void Model::attention_forward(const Block& b, const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                              const Tensor& v) {
  const ModelConfig& c = opts_.config;
  const int64_t B = opts_.batch, L = seq_len_, T = B * L, H = c.num_attention_heads;
  const int64_t Hkv = c.num_key_value_heads, Dh = c.head_dim();
  const int layer = b.layer();
  if (cache_active_) {
    // Decoding: append this chunk's keys/values to the cache and attend over everything cached (batch 1).
    const int64_t total = cache_len_ + T;
    backend_.copy(k_cache_[layer].slice_rows(cache_len_, T), k);
    backend_.copy(v_cache_[layer].slice_rows(cache_len_, T), v);
    backend_.attention_forward(out.view({1, T, H, Dh}), lse, q.view({1, T, H, Dh}),
                               k_cache_[layer].slice_rows(0, total).view({1, total, Hkv, Dh}),
                               v_cache_[layer].slice_rows(0, total).view({1, total, Hkv, Dh}), mask_);
  } else {
    backend_.attention_forward(out.view({B, L, H, Dh}), lse, q.view({B, L, H, Dh}), k.view({B, L, Hkv, Dh}),
                               v.view({B, L, Hkv, Dh}), mask_);
  }
}

void Model::layer_forward(int layer, const Tensor& x_in, const Tensor& x_out) {
  Block b = block(layer, &acts_for(layer), x_in, x_out);
  arch_->forward(b);
}

void Model::forward_layers(bool save_inputs) {
  StepBuffers& b = buf_;
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
    layer_forward(l, b.resid[l], b.resid[l + 1]);
    params_->release(l);
  }
  Block final_norm = block(kOuterGroup, nullptr, b.resid.back(), b.xf);
  arch_->final_norm_forward(final_norm);
}

// ---- inference with a KV cache ---------------------------------------------------------------------------------
size_t Model::kv_cache_bytes() const { return cache_arena_ ? cache_arena_->bytes() : 0; }

void Model::enable_kv_cache(int64_t max_tokens, bool evictable) {
  LL_CHECK(opts_.batch == 1, "KV cache: inference runs one sequence at a time; build the model with batch 1");
  LL_CHECK(!opts_.attention.use_s2, "KV cache: inference uses full causal attention; build the model with S2 off");
  LL_CHECK(max_tokens >= 1, "KV cache: capacity must be positive, got ", max_tokens);
  const ModelConfig& c = opts_.config;
  cache_arena_ = std::make_unique<Arena>(backend_, "kv cache");
  std::vector<Arena::Handle> kh, vh;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    kh.push_back(cache_arena_->reserve(backend_.dtypes().act, {max_tokens, c.kv_dim()}));
    vh.push_back(cache_arena_->reserve(backend_.dtypes().act, {max_tokens, c.kv_dim()}));
  }
  // One layer's rows for evict_kv_cache (StreamingLLM) to move through: 1 / (2 · layers) more, only when evictable.
  Arena::Handle scratch;
  if (evictable) scratch = cache_arena_->reserve(backend_.dtypes().act, {max_tokens, c.kv_dim()});
  cache_arena_->commit();
  cache_scratch_ = evictable ? cache_arena_->tensor(scratch) : Tensor();
  k_cache_.clear(), v_cache_.clear();
  for (size_t l = 0; l < kh.size(); ++l) {
    k_cache_.push_back(cache_arena_->tensor(kh[l]));
    v_cache_.push_back(cache_arena_->tensor(vh[l]));
  }
  cache_capacity_ = max_tokens;
  cache_len_ = 0;
}

std::vector<double> Model::append_tokens(const int32_t* tokens, int64_t count) {
  LL_CHECK(cache_capacity_ > 0, "append_tokens: call enable_kv_cache first");
  LL_CHECK(count >= 1, "append_tokens: nothing to append");
  LL_CHECK(cache_len_ + count <= cache_capacity_, "KV cache full: ", cache_len_, " cached + ", count,
           " new tokens exceed its capacity of ", cache_capacity_);
  StepBuffers& b = buf_;
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

void Model::evict_kv_cache(int64_t start, int64_t count) {
  LL_CHECK(cache_capacity_ > 0, "evict_kv_cache: call enable_kv_cache first");
  LL_CHECK(start >= 0 && count >= 0 && start + count <= cache_len_, "evict_kv_cache: positions [", start, ", ",
           start + count, ") are not all cached (", cache_len_, " are)");
  LL_CHECK(cache_scratch_.data != nullptr, "evict_kv_cache: this KV cache was enabled without eviction room; "
                                           "enable_kv_cache(max_tokens, /*evictable=*/true) reserves it");
  const int64_t moved = cache_len_ - (start + count);
  if (count == 0 || moved == 0) {
    cache_len_ -= count;
    return;
  }
  const ModelConfig& c = opts_.config;
  // The planned length's positions buffer (batch 1), all set to `count`: rope_backward rotates by the negative
  // angle, R(p − count) = R(−count)·R(p).
  const int64_t Hkv = c.num_key_value_heads, Dh = c.head_dim(), P = opts_.seq_len;
  Tensor positions = buf_full_.positions.view({P});
  std::vector<int32_t> pos(static_cast<size_t>(P), static_cast<int32_t>(count));
  upload_i32(backend_, positions, pos.data());
  // The kept rows go through the scratch (source and destination overlap when moved > count).
  Tensor scratch = cache_scratch_.slice_rows(0, moved);
  for (size_t layer = 0; layer < k_cache_.size(); ++layer) {
    backend_.copy(scratch, k_cache_[layer].slice_rows(start + count, moved));
    for (int64_t row = 0; row < moved; row += P) {
      const int64_t n = std::min(P, moved - row);
      backend_.rope_backward(scratch.slice_rows(row, n).view({n, Hkv, Dh}),
                             positions.view({P, 1}).slice_rows(0, n).view({n}), rope_);
    }
    backend_.copy(k_cache_[layer].slice_rows(start, moved), scratch);
    backend_.copy(scratch, v_cache_[layer].slice_rows(start + count, moved));
    backend_.copy(v_cache_[layer].slice_rows(start, moved), scratch);
  }
  cache_len_ -= count;
  for (int64_t t = 0; t < P; ++t) pos[size_t(t)] = int32_t(t);  // what the other paths expect (batch 1: t mod L)
  upload_i32(backend_, positions, pos.data());
}

// Cross-entropy over row chunks: logits for C rows, loss (and dlogits in place), then straight back through
// the LM head into d_xn (the gradient of the final norm's output) before the next chunk reuses the buffer.
LossResult Model::head_loss(bool compute_grad, double loss_scale, int32_t* argmax) {
  StepBuffers& b = buf_;
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

LossResult Model::forward(const int32_t* tokens, const int32_t* targets, int32_t* argmax) {
  upload_batch(tokens, targets);
  const OuterScope outer(*params_);
  forward_layers();
  const LossResult r = head_loss(false, 0.0, argmax);
  if (argmax) backend_.copy_to_host(argmax, buf_.argmax);
  return r;
}

std::vector<double> Model::logits(const int32_t* tokens) {
  upload_batch(tokens, nullptr);
  const OuterScope outer(*params_);
  forward_layers();
  StepBuffers& b = buf_;
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
void Model::project_backward(const Block& b, int slot, const Tensor& dx, const Tensor& dy, const Tensor& x,
                             bool accumulate_dx) {
  const GroupSlots& g = params_->slots(b.layer());
  const Param& w = *g.param[size_t(slot)];
  const Param* a = g.lora_a[size_t(slot)];
  const Param* bm = g.lora_b[size_t(slot)];
  // LoRA's [T, r] scratch, the tile's rows in an MLP tile.
  const Tensor d_xa = a ? buf_.d_xa.slice_rows(0, b.rows_) : buf_.d_xa;
  if (a && dropout_on()) {
    // Regenerate the dropped adapter input (same seed, same mask), route its gradient through the same mask.
    const uint64_t seed = dropout_seed(b.layer(), slot, b.first_row());
    Tensor x_lora = scratch_view(buf_.x_lora, x.rows(), x.cols());
    Tensor dx_lora = scratch_view(buf_.dx_lora, x.rows(), x.cols());
    backend_.dropout(x_lora, x, opts_.lora.dropout, seed);
    backend_.lora_backward(dx, dx_lora, w.grad, a->grad, bm->grad, d_xa, dy, x, x_lora, lora_xa(b, slot), w.value,
                           a->value, bm->value, opts_.lora.scale(), accumulate_dx);
    backend_.dropout(dx_lora, dx_lora, opts_.lora.dropout, seed);
    backend_.add(dx, dx, dx_lora);
  } else if (a) {
    backend_.lora_backward(dx, Tensor(), w.grad, a->grad, bm->grad, d_xa, dy, x, x, lora_xa(b, slot), w.value,
                           a->value, bm->value, opts_.lora.scale(), accumulate_dx);
  } else
    backend_.linear_backward(dx, w.grad, dy, x, w.value, accumulate_dx);
  if (const Param* bias = g.bias[size_t(slot)]) backend_.bias_backward(bias->grad, dy);
}

void Model::layer_backward(int layer, const Tensor& x_in) {
  Block b = block(layer, &acts_for(layer), x_in, Tensor());
  arch_->backward(b);
}

LossResult Model::forward_backward(const int32_t* tokens, const int32_t* targets, double loss_scale) {
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

  StepBuffers& b = buf_;
  Block final_norm = block(kOuterGroup, nullptr, b.resid.back(), b.xf);
  arch_->final_norm_backward(final_norm);
  for (int l = layers - 1; l >= 0; --l) {
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
    // done): it goes to d_xn, free until the layer's backward overwrites it — with offload, resid[l + 1] is the slot
    // the prefetch of input l − 1 is filling.
    if (l < opts_.checkpoint_layers - 1) layer_forward(l, b.resid[l], b.d_xn);
    layer_backward(l, b.resid[l]);
    params_->backward_done(l);
    params_->release(l);
  }
  Param& embed = params_->embed();
  if (embed.trainable) backend_.embedding_backward(embed.grad, b.ids, b.d_resid);
  params_->backward_done(kOuterGroup);
  return result;
}

}  // namespace ll
