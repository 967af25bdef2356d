// The activation memory of a model, derived from its architecture's activation schema: the one place it is laid out.
// The model allocates it, plan_memory only measures it, and set_seq_len re-views it for shorter sequences.
//
// Layer sets: with checkpoint_layers = k > 0 the first k layers share one set (recomputed in backward), then every
// other layer has its own. A saved tensor that backward will not read (TensorSpec::read_in_backward false, or
// only_input_of a linear that neither trains nor carries an adapter) is one buffer shared by all sets; so is each
// MLP intermediate (TensorSpec::mlp_tile) with mlp_tile_rows = N > 0, then only N rows (recomputed in backward).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/arena.h"
#include "model/architecture.h"
#include "model/params.h"

namespace ll {

struct ModelOptions;

// One layer set: the schema's saved tensors, then the LoRA inputs x·Aᵀ [T, r] of the adapted slots.
struct ActivationSet {
  std::vector<Tensor> saved;    // schema.saved order
  std::vector<Tensor> lora_xa;  // by slot; empty where the slot has no adapter
};

// Everything else a step needs.
struct StepBuffers {
  Tensor ids, targets, positions, argmax;  // [T] i32
  std::vector<Tensor> resid;               // n_layers+1 × [T,D]: input of each layer, then the final hidden state
  Tensor xf;                               // final norm output [T,D]
  std::vector<Tensor> final_norm;          // its saved statistics (schema.final_norm)
  Tensor logits;                           // [C,V] one chunk
  Tensor losses;                           // [T]
  Tensor d_resid, d_xn;                    // [T,D] gradient of the residual stream, of a norm's output
  std::vector<Tensor> scratch;             // schema.scratch
  Tensor d_xa;                             // [T,r]
  Tensor x_lora, dx_lora;  // [T, widest linear input] LoRA-dropout input and its gradient (dropout > 0 only)
};

// Layer sets: one shared by the recomputed layers [0, k) when k > 0, then one per kept layer [k, N).
int64_t activation_set_count(const ModelOptions& o);
int64_t activation_set(const ModelOptions& o, int64_t layer);

// With offload_checkpoints: the inputs of the checkpointed layers 0..k−1 rotate through two device slots (input of
// layer l in slot l mod 2); an input goes to the host when its slot is reused during the forward (by the input of
// layer l + 2 < k), i.e. for layers 0..k−3.
bool offloading(const ModelOptions& o);
int64_t offloaded_inputs(const ModelOptions& o);

// With mlp_tile_rows = N > 0: the rows of an MLP tile buffer, min(N, B·L); 0 when the MLP is not tiled.
int64_t mlp_tile_buffer_rows(const ModelOptions& o);

struct ActivationLayout;

// Reserves (does not commit) every activation tensor of a model with options `o` (ce_chunk_rows resolved) whose
// parameters are `params` in A. Then, after A.commit(), bind() hands out the tensors.
class ActivationPlan {
 public:
  ActivationPlan(Arena& A, const ModelOptions& o, const ParamStore& params, const ActivationSchema& schema,
                 const DTypePolicy& dt);
  ~ActivationPlan();
  void bind(const Arena& A, std::vector<ActivationSet>* sets, StepBuffers* buffers) const;

 private:
  std::unique_ptr<ActivationLayout> layout_;
};

// The planned (full-length) tensors seen for sequences of length L (T = B·L rows).
void view_for_length(const ActivationSchema& schema, int64_t B, int64_t H, int64_t L,
                     const std::vector<ActivationSet>& full_sets, const StepBuffers& full,
                     std::vector<ActivationSet>* sets, StepBuffers* buffers);

}  // namespace ll
