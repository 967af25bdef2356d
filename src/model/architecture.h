// The seam between the engine (model/model.h, written once) and an architecture's definition (model/arch/*.cpp, one
// file per family). A definition states what is particular to its family and nothing else:
//   - its names and config.json fields (read, written, validated) and its --model_config presets;
//   - its PARAMETER TABLE: every tensor with its Hugging Face name, role, group (outer or decoder layer), local slot
//     and shape, in the order the parameter arenas and checkpoints use;
//   - its ACTIVATION SCHEMA: what one decoder layer saves for backward, its backward scratch, the final norm's saved
//     statistics — the engine derives the memory plan, the allocation, the views for shorter sequences and the
//     buffers shared across layers from this one list;
//   - its BLOCK: one decoder layer's forward and backward, and the final norm's, as backend ops on the tensors a
//     Block hands out (parameters by slot, saved tensors and scratch by schema index), with the engine's helpers for
//     projections (linear or LoRA, dropout, bias) and attention (training mask or KV cache).
// The engine owns everything else: embedding, chunked cross-entropy head, checkpointing and recomputation, offload,
// ZeRO-3 gathering, KV cache, LoRA parameters and dropout.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/backend.h"
#include "model/config.h"
#include "model/param_storage.h"

namespace ll {

struct Param;
class ConfigReader;  // model/config_json.h

// What a parameter is to the engine. LoraA/LoraB are added by the parameter store next to the linears they adapt.
enum class ParamRole { Embedding, Norm, NormBias, Linear, Bias, OutputHead, LoraA, LoraB };
const char* param_role_name(ParamRole role);

struct ParamSpec {
  std::string name;  // Hugging Face name, e.g. model.layers.3.self_attn.q_proj.weight
  ParamRole role = ParamRole::Linear;
  int layer = kOuterGroup;      // decoder layer, or kOuterGroup (embedding, final norm, output head)
  int slot = 0;                 // local slot: the definition's index of this tensor within its group
  std::vector<int64_t> shape;   // [out, in] for Linear / Embedding / OutputHead, [n] for norms and biases
  int bias_of = -1;             // Bias: the slot of the Linear it is added to (the projection helper adds it)
  std::string tied_to;          // non-empty: this tensor IS that parameter (a tied output head): no storage of its own

  ParamSpec(std::string name_, ParamRole role_, int layer_, int slot_, std::vector<int64_t> shape_)
      : name(std::move(name_)), role(role_), layer(layer_), slot(slot_), shape(std::move(shape_)) {}
  // The module path (PEFT's module name): the name without its last component (".weight", ".bias").
  std::string module() const;
};

// One tensor of the activation schema, sized for the planned rows T = B·L.
enum class ActClass { Act, Stat };  // backend activation dtype, or statistics dtype
struct TensorSpec {
  std::string name;
  ActClass cls = ActClass::Act;
  int64_t cols = 0;   // [T, cols]; 0: one value per row, [T]
  bool lse = false;   // the attention's log-sum-exp, [B, H, L] (cols ignored)
  // Saved tensors that backward never reads (a forward temporary) share one buffer across the layers' sets; so do
  // those that backward reads only as the input of the Linear in slot only_input_of (for its weight gradient or
  // adapter) when that linear neither trains nor carries an adapter.
  bool read_in_backward = true;
  int only_input_of = -1;
  // Scratch: tensors of different phases (≥ 0) are never live together and share memory; −1: memory of its own.
  int phase = -1;
  // A row-local MLP intermediate (saved or scratch), written by Architecture::mlp_intermediates or read and written
  // only by Architecture::mlp_backward. With ModelOptions::mlp_tile_rows = N > 0 it holds one tile (N rows), one
  // buffer for every layer: the MLP runs tile by tile and backward recomputes it (Block::mlp_forward/mlp_backward).
  bool mlp_tile = false;

  static TensorSpec matrix(std::string name, int64_t cols) { return make(std::move(name), ActClass::Act, cols, false); }
  static TensorSpec row_stat(std::string name) { return make(std::move(name), ActClass::Stat, 0, false); }
  static TensorSpec attention_lse(std::string name) { return make(std::move(name), ActClass::Stat, 0, true); }

 private:
  static TensorSpec make(std::string name, ActClass cls, int64_t cols, bool lse) {
    TensorSpec s;
    s.name = std::move(name), s.cls = cls, s.cols = cols, s.lse = lse;
    return s;
  }
};

struct ActivationSchema {
  std::vector<TensorSpec> saved;       // one decoder layer's tensors kept for backward (Block::saved(i))
  std::vector<TensorSpec> scratch;     // backward scratch, one set for all layers (Block::scratch(i))
  std::vector<TensorSpec> final_norm;  // the final norm's saved statistics (Block::saved(i) of the final norm)
};

// A tensor a Hugging Face folder holds: its shape, and the file it is in (for messages).
struct FolderTensor {
  std::vector<int64_t> shape;
  std::string file;
};

class Block;

// What the RoPE op computes for `c`: theta, rotary dims, and linear interpolation by rope_scaling_factor — or, for a
// llama3 config, the llama3 rule with factor llama3.factor × rope_scaling_factor and no linear factor.
RopeParams rope_params(const ModelConfig& c);

class Architecture {
 public:
  virtual ~Architecture() = default;

  // ---- names, config.json, presets -----------------------------------------------------------------------------
  virtual const char* model_type() const = 0;                    // config.json's model_type, the registry key
  virtual std::vector<std::string> hf_architectures() const = 0;  // class names in config.json's `architectures`
  // Fills every field of `c` but model_type from config.json; errors name the field (ConfigReader adds the file).
  virtual void read_config(const ConfigReader& json, ModelConfig& c) const = 0;
  // The config.json transformers would write for `c`, without torch_dtype and the special token ids (the generic
  // writer adds those).
  virtual nlohmann::json config_json(const ModelConfig& c) const = 0;
  // The family's own checks, after the neutral ones (ModelConfig::validate calls it).
  virtual void validate(const ModelConfig& c) const = 0;
  // Built-in shapes for --model_config (random initialisation).
  virtual std::vector<std::pair<std::string, ModelConfig>> presets() const { return {}; }
  // A tensor a Hugging Face folder may hold that the model does not use (e.g. rotary_emb.inv_freq buffers).
  virtual bool ignored_tensor(const std::string& name) const { (void)name; return false; }
  // config.json's sizes against the folder's tensors (by name), before anything is sized from them: an error names
  // `where`, the tensor, its shape and file. Tensors that are absent are left to the loader. The default compares the
  // outer tensors and layer 0's with the table; a definition overrides it to name the config field that disagrees.
  virtual void check_folder_shapes(const ModelConfig& c, const std::map<std::string, FolderTensor>& tensors,
                                   const std::string& where) const;

  // ---- parameters --------------------------------------------------------------------------------------------------
  virtual std::vector<ParamSpec> parameter_table(const ModelConfig& c) const = 0;
  // Short LoRA target names and the module names they stand for (Llama: {"q", "q_proj"}, …), so that flag values
  // like "q,k,v,o" keep working.
  virtual std::vector<std::pair<std::string, std::string>> lora_aliases() const { return {}; }
  // The LoRA targets LongLoRA's fine-tune.py uses for this family (a comma list of module names), taken when
  // --lora_target is not given.
  virtual std::string default_lora_targets() const = 0;

  // ---- activations and compute -------------------------------------------------------------------------------------
  virtual ActivationSchema activation_schema(const ModelConfig& c) const = 0;
  virtual RopeParams rope(const ModelConfig& c) const { return rope_params(c); }
  virtual AttentionMask attention_mask(const AttentionConfig& a, const ModelConfig& c, int64_t seq_len) const {
    return training_mask(a, c, seq_len);
  }
  // One decoder layer: reads b.input(), writes b.output() and the schema's saved tensors. A forward temporary is a
  // saved tensor with read_in_backward false, never b.d_hidden(): a recomputed layer's output goes there.
  virtual void forward(Block& b) const = 0;
  // One decoder layer: b.d_resid() holds ∂loss/∂output on entry and must hold ∂loss/∂input on exit; parameter
  // gradients accumulate; b.d_hidden() and the scratch are free to use.
  virtual void backward(Block& b) const = 0;
  // The final norm (b.layer() == kOuterGroup): b.input() is the last hidden state, b.output() its normalised form;
  // b.saved(i) are the schema's final_norm tensors, b.param(slot) the outer group's (no projections here).
  virtual void final_norm_forward(Block& b) const = 0;
  // b.d_hidden() holds ∂loss/∂output; writes (overwrites) ∂loss/∂input into b.d_resid().
  virtual void final_norm_backward(Block& b) const = 0;

  // ---- the MLP as a row-local piece (optional) ------------------------------------------------------------------
  // A definition whose schema marks its MLP intermediates mlp_tile calls b.mlp_forward() / b.mlp_backward() from
  // forward / backward, and the engine runs these hooks over the layer's rows at once, or over row tiles of at most
  // ModelOptions::mlp_tile_rows rows. In a tile Block input(), output(), d_resid(), d_hidden(), positions() and the
  // [T, cols] / [T] saved and scratch tensors are the tile's rows; the mlp_tile ones are the tile buffers. A hook sizes
  // its work by t.rows() (batch() and seq_len() still describe the whole layer).
  // The mlp_tile tensors from the MLP's input (which must be a saved tensor or input(): backward recomputes them).
  virtual void mlp_intermediates(const Block& t) const;
  // The tile's rows of what the MLP's result goes into (e.g. output() = residual + down(act)).
  virtual void mlp_output(const Block& t) const;
  // d_resid() holds ∂loss/∂(MLP result) rows; writes (overwrites) ∂loss/∂(MLP input) rows into d_hidden(), the
  // mlp_tile scratch being free; parameter gradients accumulate.
  virtual void mlp_backward(const Block& t) const;
};

// Whether `schema` marks MLP intermediates (the definition implements the MLP hooks: ModelOptions::mlp_tile_rows).
bool has_mlp_tiles(const ActivationSchema& schema);

class Model;
struct ActivationSet;

// The engine's context for one decoder layer (or the final norm) of one pass: views for the current sequence length.
class Block {
 public:
  Backend& backend() const { return *backend_; }
  const ModelConfig& config() const { return *config_; }
  int layer() const { return layer_; }
  int64_t batch() const { return batch_; }
  int64_t seq_len() const { return seq_len_; }
  int64_t rows() const { return rows_; }  // T; in an MLP tile, the tile's rows
  int64_t first_row() const { return row0_; }  // in an MLP tile: its first row within the layer; else 0
  const Tensor& input() const { return input_; }      // [T, D]
  const Tensor& output() const { return output_; }    // [T, D] (forward)
  const Tensor& d_resid() const { return d_resid_; }  // [T, D] (backward)
  const Tensor& d_hidden() const { return d_hidden_; }  // [T, D] (backward)
  // The group's parameter in `slot` (the tied tensor for a tied output head).
  const Param& param(int slot) const;
  const Tensor& saved(int i) const { return tile_ ? tile_saved_[size_t(i)] : saved_[i]; }
  const Tensor& scratch(int i) const { return tile_ ? tile_scratch_[size_t(i)] : scratch_[i]; }
  const Tensor& positions() const { return tile_ ? tile_positions_ : *positions_; }  // [T] i32
  const RopeParams& rope() const { return *rope_; }

  // y = x·Wᵀ (+ s·(dropout(x)·Aᵀ)·Bᵀ when the slot carries an adapter) (+ bias when the table gives it one).
  void project(int slot, const Tensor& y, const Tensor& x) const;
  // The projection's backward: parameter gradients accumulate; dx is overwritten, or accumulated with accumulate_dx.
  void project_backward(int slot, const Tensor& dx, const Tensor& dy, const Tensor& x, bool accumulate_dx) const;
  // out, q: [T, H·Dh]; k, v: [T, Hkv·Dh] (q and k rotated). Training: the step's mask over each sequence. KV-cache
  // inference: appends k and v to the layer's cache and attends over everything cached.
  void attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v) const;
  void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& d_out, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse) const;
  // The definition's MLP hooks over this layer's rows: at once (mlp_tile_rows 0), or tile by tile — forward:
  // mlp_intermediates then mlp_output per tile; backward: per tile, mlp_intermediates again (the intermediates were
  // not kept) then mlp_backward. Parameter gradients accumulate over the tiles.
  void mlp_forward() const;
  void mlp_backward() const;

 private:
  friend class Model;
  Block() = default;
  Model* model_ = nullptr;
  Backend* backend_ = nullptr;
  const ModelConfig* config_ = nullptr;
  int layer_ = kOuterGroup;
  int64_t batch_ = 0, seq_len_ = 0, rows_ = 0, row0_ = 0;
  Tensor input_, output_, d_resid_, d_hidden_;
  bool tile_ = false;  // an MLP tile: the tile_ views below stand for saved_, scratch_ and positions_
  std::vector<Tensor> tile_saved_, tile_scratch_;
  Tensor tile_positions_;
  const Tensor* saved_ = nullptr;
  const Tensor* scratch_ = nullptr;
  const Tensor* positions_ = nullptr;
  const RopeParams* rope_ = nullptr;
  ActivationSet* set_ = nullptr;  // the layer's activation set (LoRA inputs)
};

}  // namespace ll
