// The engine: any architecture (+ LoRA, + S2-Attn, + position interpolation), written once as op calls on a Backend.
// The architecture's definition (model/architecture.h) supplies the parameter table, the activation schema and the
// decoder layer's compute; the engine owns the rest:
//   embedding → N decoder layers (the definition's Block) → final norm (the definition's) → logits = x·headᵀ and the
//   mean cross-entropy over scored targets, computed over row chunks so that a [T, V] logits matrix never exists;
// the parameter arenas and ZeRO-3 gathering, activation checkpointing (recompute) and offload, LoRA and its dropout,
// the KV cache for inference.
#pragma once
#include <memory>
#include <ostream>
#include <vector>

#include "core/backend.h"
#include "model/activations.h"
#include "model/arena.h"
#include "model/architecture.h"
#include "model/config.h"
#include "model/params.h"

namespace ll {

struct ModelOptions {
  ModelConfig config;
  LoraConfig lora;
  TrainableConfig trainable;
  AttentionConfig attention;
  int64_t batch = 1;           // B
  int64_t seq_len = 0;         // L: the longest sequence planned for (set_seq_len may run shorter ones)
  // Activation checkpointing: the FIRST checkpoint_layers = k decoder layers (0..num_hidden_layers) keep only their
  // input and write their activations into one set they share; backward recomputes each of them into it before its
  // backward, except layer k − 1, whose activations the forward left there (k − 1 layer forwards recomputed). The
  // other layers keep their own set. 0: nothing checkpointed; num_hidden_layers: every layer (one set in all).
  int64_t checkpoint_layers = 0;
  // Offload the saved inputs of the checkpointed layers to host memory (only meaningful with checkpoint_layers = k
  // > 0; ignored otherwise: nothing is checkpointed). The inputs of layers 0..k−1 rotate through two device slots;
  // the forward of a training step copies each input whose slot is reused later (layers 0..k−3) to its own host
  // buffer (Backend::allocate_host, pinned on CUDA) while the next layer computes, and the backward copies it back
  // into the free slot while the layer above runs its backward. The inputs of layers k−2 and k−1 never leave their
  // slots; the input of layer k (output of k−1, needed by kept layer k's backward) stays on the device. Host bytes:
  // max(0, k−2) × B·L × hidden × activation size (MemoryPlan::host_staging). Results are bit-identical.
  bool offload_checkpoints = false;
  int64_t ce_chunk_rows = 0;   // rows of logits per cross-entropy chunk (0: sized to ~32 MiB)
  // Sequence-tiled MLP (0: off). N > 0: every layer's MLP runs over row tiles of at most N rows (N ≥ B·L: one tile)
  // into tile buffers shared by all layers; its intermediates ([T, intermediate] each: Llama's gate, up, act and
  // their gradients) are not kept: backward recomputes each tile's from the saved MLP input before its backward.
  // Activation memory O(N·F) instead of O(layers·T·F); the price is the MLP's up-projections once more in backward.
  // Needs a definition with MLP hooks (Architecture::mlp_intermediates). Results equal the untiled ones up to the
  // order of the weight-gradient sums; LoRA dropout draws each tile's mask from its own seed.
  int64_t mlp_tile_rows = 0;
  bool external_param_storage = false;  // parameters get memory from a ParamStorage (ZeRO-3), not the store
};

struct LossResult {
  double loss_sum = 0;  // Σ per-token cross-entropy over scored targets
  int64_t scored = 0;   // number of targets ≠ −100
  double mean() const { return scored ? loss_sum / double(scored) : 0.0; }
};

struct MemoryPlan {
  size_t frozen_weights = 0, trainable_weights = 0, gradients = 0, activations = 0;  // device memory
  size_t host_staging = 0;  // host memory: the offloaded layer inputs (offload_checkpoints); not in total()
  size_t total() const { return frozen_weights + trainable_weights + gradients + activations; }
  void print(std::ostream& os) const;
};

class Model {
 public:
  Model(Backend& backend, const ModelOptions& options);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelOptions& options() const { return opts_; }
  ParamStore& params() { return *params_; }
  const Architecture& architecture() const { return *arch_; }
  Backend& backend() { return backend_; }
  const AttentionMask& mask() const { return mask_; }
  MemoryPlan memory_plan() const;
  // What a model with these options would allocate on `backend` (weights and gradients as the store's arenas
  // hold them without external storage, and the activation arena), computed without allocating anything: the
  // start-up memory check runs it before the first large allocation.
  static MemoryPlan plan_memory(Backend& backend, const ModelOptions& options);
  // With offload_checkpoints: how many checkpointed layers' inputs go to host memory (the last two checkpointed
  // layers' inputs stay in their device slots).
  static int64_t offloaded_input_count(const ModelOptions& options);

  // Hugging Face initialisation (normal(0, init_std) for matrices, ones for norm weights, zeros for biases) and PEFT's
  // LoRA initialisation (A Kaiming-uniform with a = √5, B = 0). Deterministic in `seed`.
  void init_random(uint64_t seed, double init_std = 0.02);

  // tokens, targets: host int32 arrays of B·L entries (row b·L + l). targets[t] is the token that position t
  // predicts (already shifted), or −100 to ignore it.
  // When `argmax` is given, it receives the arg-max of every row's logits (B·L entries; evaluation accuracy).
  LossResult forward(const int32_t* tokens, const int32_t* targets, int32_t* argmax = nullptr);
  // Forward, then backward: parameter gradients ACCUMULATE the gradient of loss_scale·Σ losses, where
  // loss_scale defaults (0) to 1/scored, i.e. the gradient of the mean loss of this batch.
  LossResult forward_backward(const int32_t* tokens, const int32_t* targets, double loss_scale = 0);
  // Runs the following calls on sequences of length L ≤ options().seq_len (e.g. SFT examples, which are not
  // padded): re-views the planned buffers, recomputes positions and the attention mask for L.
  void set_seq_len(int64_t seq_len);
  int64_t seq_len() const { return seq_len_; }

  // LoRA dropout (when options().lora.dropout > 0) is applied only while enabled; each seed draws new masks.
  // The trainer enables it with a fresh seed per micro-batch; evaluation leaves it off.
  void set_lora_dropout(bool enabled, uint64_t seed);
  // Inference with a KV cache (batch 1, full causal attention): enable_kv_cache plans a cache of max_tokens
  // positions per layer (KV heads only, GQA-native); append_tokens runs the new tokens through the model in
  // chunks of at most options().seq_len (bounded prefill memory; 1 token = a decode step), caches their keys
  // and values, and returns the logits of the last one. reset_kv_cache forgets the cached tokens. `evictable`
  // also reserves the rows evict_kv_cache moves through (one layer's keys: StreamingLLM sessions only).
  void enable_kv_cache(int64_t max_tokens, bool evictable = false);
  size_t kv_cache_bytes() const;  // what the cache allocated (0 before enable_kv_cache)
  std::vector<double> append_tokens(const int32_t* tokens, int64_t count);
  void reset_kv_cache() { cache_len_ = 0; }
  // Keeps the first min(n, length) cached tokens: a prompt sharing them continues from there (keys are cached after
  // RoPE at their absolute positions, so a prefix stays valid). Used by the passkey harness to reuse common prefixes.
  void truncate_kv_cache(int64_t n) { cache_len_ = n < 0 ? 0 : n < cache_len_ ? n : cache_len_; }
  int64_t kv_cache_length() const { return cache_len_; }
  // StreamingLLM's eviction: forgets cached positions [start, start + count); the later ones move down by count
  // and their keys are rotated by −count positions (RoPE rotations compose), so every cached key is rotated by its
  // index in the cache — what caching keys before RoPE and rotating them by cache position gives, up to rounding.
  // Needs a cache enabled with evictable = true.
  void evict_kv_cache(int64_t start, int64_t count);

  // Full logits [B·L, V] for tokens, copied to the host as doubles (tests and evaluation of small inputs).
  std::vector<double> logits(const int32_t* tokens);

 private:
  friend class Block;
  class OuterScope;
  struct HostStaging;
  void upload_batch(const int32_t* tokens, const int32_t* targets);
  // save_inputs: a training step's forward (the backward follows): offloaded layer inputs are copied to the host.
  void forward_layers(bool save_inputs = false);
  bool input_offloaded(int64_t layer) const;
  // A Block for layer `layer` (or kOuterGroup: the final norm) over activation set `set` (null for the final norm).
  Block block(int layer, ActivationSet* set, const Tensor& input, const Tensor& output);
  void layer_forward(int layer, const Tensor& x_in, const Tensor& x_out);
  void layer_backward(int layer, const Tensor& x_in);
  void project_forward(const Block& b, int slot, const Tensor& y, const Tensor& x);
  void project_backward(const Block& b, int slot, const Tensor& dx, const Tensor& dy, const Tensor& x,
                        bool accumulate_dx);
  void attention_forward(const Block& b, const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v);
  // The MLP hooks over the layer's rows, at once or by tiles (Block::mlp_forward / mlp_backward).
  void mlp_forward(const Block& b);
  void mlp_backward(const Block& b);
  // Layer block `b` seen for rows [start, start + rows): the tile Block the MLP hooks run on.
  // The layer whose last MLP tile the tile buffers hold (its forward ran the MLP last), or kNoLayer.
  static constexpr int kNoLayer = -2;
  int mlp_tiles_hold_layer_ = kNoLayer;
  Block mlp_tile(const Block& b, int64_t start, int64_t rows) const;
  // The saved LoRA input x·Aᵀ of `slot` for the block's rows.
  Tensor lora_xa(const Block& b, int slot) const;
  LossResult head_loss(bool compute_grad, double loss_scale, int32_t* argmax = nullptr);
  ActivationSet& acts_for(int layer);
  bool dropout_on() const { return dropout_enabled_ && opts_.lora.dropout > 0; }
  // PEFT's per-module dropout seed; an MLP tile's (first_row > 0) mixes in its first row.
  uint64_t dropout_seed(int layer, int slot, int64_t first_row) const;
  Tensor scratch_view(const Tensor& buffer, int64_t rows, int64_t cols) const;

  Backend& backend_;
  ModelOptions opts_;
  const Architecture* arch_ = nullptr;
  ActivationSchema schema_;
  AttentionMask mask_;
  RopeParams rope_;
  std::unique_ptr<ParamStore> params_;
  std::unique_ptr<Arena> act_arena_;
  StepBuffers buf_;
  // [0]: the set shared by the recomputed layers (when checkpoint_layers > 0), then one per kept layer (views for
  // seq_len_); acts_for maps a layer to its set.
  std::vector<ActivationSet> acts_;
  std::vector<ActivationSet> acts_full_;  // the same, planned for options().seq_len
  StepBuffers buf_full_;
  int64_t seq_len_ = 0;
  // offload_checkpoints: one host buffer per offloaded layer input (layers 0..k−3), [options().seq_len·B, hidden].
  std::unique_ptr<HostStaging> host_;
  bool copies_pending_ = false;  // an asynchronous copy was started and not yet waited for
  std::vector<int32_t> host_targets_;
  std::unique_ptr<Arena> cache_arena_;
  std::vector<Tensor> k_cache_, v_cache_;  // per layer [capacity, Hkv·Dh], keys after RoPE
  Tensor cache_scratch_;                    // [capacity, Hkv·Dh] when evictable: evict_kv_cache moves rows through it
  int64_t cache_capacity_ = 0, cache_len_ = 0;
  bool cache_active_ = false;  // attention reads and extends the cache
  bool dropout_enabled_ = false;
  uint64_t dropout_seed_ = 0;
};

}  // namespace ll
