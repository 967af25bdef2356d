// The backend seam: every op the models need (Llama; GPT-NeoX's LayerNorm, bias, GELU, partial rotary, fused QKV),
// forward and backward, on tensors a backend owns.
//
// Conventions for every op below
//  * Rows: activations are matrices of T = B·L rows (row t = b·L + l), hidden features contiguous.
//  * dtypes: "act" is the backend's activation dtype (CPU: f32, or f64 for the gradient-check backend;
//    CUDA: bf16). "stat" is the statistics dtype (f32; f64 on the f64 backend). "grad" is the
//    parameter-gradient dtype (f32; f64 on the f64 backend). Token ids and targets are i32.
//  * Parameter gradients always ACCUMULATE (+=) so that micro-batches can be summed; an empty Tensor
//    for a parameter gradient means "this parameter is frozen: do not compute it".
//  * Activation gradients OVERWRITE their output unless the op takes `accumulate_dx` and it is true.
//  * Outputs never alias inputs unless the op says so.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/attention_mask.h"
#include "core/rope_frequencies.h"
#include "core/tensor.h"

namespace ll {

// RoPE with linear position interpolation, Hugging Face "rotate_half" layout, over the first R = rotary_dims dims of
// each head (R = Dh when rotary_dims is 0, Llama's case; GPT-NeoX rotates R = Dh·rotary_pct). For position p and
// frequency index i in [0, R/2): angle = (p / factor) · inv_freq[i], inv_freq = theta^(−2i/R) with Llama-3's
// per-frequency rule applied when `llama3` is set (core/rope_frequencies.h);
// x'[i] = x[i]·cos − x[i+R/2]·sin, x'[i+R/2] = x[i+R/2]·cos + x[i]·sin; dims [R, Dh) pass through unchanged.
struct RopeParams {
  double theta = 10000.0;
  double factor = 1.0;       // linear position interpolation: positions are multiplied by 1/factor
  int64_t rotary_dims = 0;   // 0: the whole head; else even and in [2, Dh] (partial rotary, GPT-NeoX)
  RopeLlama3 llama3 = {};    // Llama-3.1's per-frequency scaling; off by default
};

// One AdamW update with PyTorch's semantics (decoupled weight decay, bias correction):
//   p ← p − lr·wd·p;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
//   p ← p − (lr / (1−β1^t)) · m / (sqrt(v / (1−β2^t)) + eps)
struct AdamWStep {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  int64_t step = 1;  // t, 1-based, for the bias corrections
};

struct DTypePolicy {
  DType weight;  // frozen weights and trainable working copies
  DType act;     // activations and activation gradients
  DType stat;    // rstd, log-sum-exp, per-row losses
  DType grad;    // parameter gradients
};

// Memory of a device backend: free and total device memory, and what this backend holds.
struct DeviceMemoryState {
  size_t free_bytes = 0, total_bytes = 0, in_use_bytes = 0;
  std::string device;  // e.g. "NVIDIA H100 80GB HBM3 (device 0)"
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  virtual DTypePolicy dtypes() const = 0;

  // ---- memory -------------------------------------------------------------------------------------
  virtual void* allocate(size_t bytes) = 0;  // aligned to at least 256 bytes
  virtual void release(void* ptr) = 0;
  virtual void copy_from_host(Tensor dst, const void* host_src) = 0;  // dst.nbytes() bytes
  virtual void copy_to_host(void* host_dst, const Tensor& src) = 0;
  virtual void copy(Tensor dst, const Tensor& src) = 0;  // same dtype and element count
  // dst = src converted to dst's dtype element by element (floating dtypes f32/f64/bf16/f16, same element count,
  // round to nearest even; a NaN stays a NaN). The widening copy that initialises f32 master weights.
  virtual void convert(Tensor dst, const Tensor& src) = 0;
  virtual void zero(Tensor t) = 0;
  virtual void synchronize() {}

  // ---- host staging and asynchronous copies (activation offload) -----------------------------------------
  // Host memory for staging device tensors: allocate_host returns `bytes` of host memory aligned to at least 256
  // bytes (CUDA: page-locked, cudaMallocHost, so that the copies below really run in the background; default:
  // ordinary aligned heap memory); release_host frees it (null is ignored) and must not be called while a copy
  // touching it is pending (synchronize() first; it never throws).
  virtual void* allocate_host(size_t bytes);
  virtual void release_host(void* ptr);
  // Asynchronous copies between a device tensor and host memory from allocate_host. Contract:
  //  * A copy is ORDERED AFTER all work enqueued before the call: it sees every earlier write of its source and
  //    does not disturb an earlier read of its destination. Copies complete in the order they were started (a
  //    copy from a host buffer sees an earlier copy into it).
  //  * It may complete at any time until the next wait_for_copies(). Until then, later work must not WRITE the
  //    source tensor of a to-host copy, and must not READ OR WRITE the destination tensor of a from-host copy;
  //    reading the source of a to-host copy is allowed. The host must not touch the host buffer of a pending copy.
  //  * wait_for_copies(): everything enqueued after it (ops and copies) sees every copy started before it
  //    complete. It does not block the host: the host may read the buffer of a to-host copy (or reuse the
  //    buffer of a from-host copy) only after wait_for_copies() followed by synchronize().
  // Defaults (host backends): the synchronous copy_to_host / copy_from_host, and wait_for_copies does nothing.
  // CUDA: a dedicated copy stream; each copy waits on an event recorded on the compute stream, and
  // wait_for_copies makes the compute stream wait on the last copy's event.
  virtual void copy_to_host_async(void* host_dst, const Tensor& src) { copy_to_host(host_dst, src); }
  virtual void copy_from_host_async(Tensor dst, const void* host_src) { copy_from_host(dst, host_src); }
  virtual void wait_for_copies() {}
  // Device backends fill `state` and return true (the start-up memory check compares the run's plan with it);
  // host backends return false: host memory is not checked.
  virtual bool device_memory(DeviceMemoryState* state) const {
    (void)state;
    return false;
  }

  // ---- token embedding ------------------------------------------------------------------------------
  // out[T,D] act = table[ids[t], :]. ids: [T] i32, each in [0, V). table: [V,D] weight.
  virtual void embedding_forward(Tensor out, const Tensor& ids, const Tensor& table) = 0;
  // dtable[V,D] grad += scatter-add of dout[T,D] act into rows ids[t]; deterministic (no float atomics).
  virtual void embedding_backward(Tensor dtable, const Tensor& ids, const Tensor& dout) = 0;

  // ---- RMSNorm --------------------------------------------------------------------------------------
  // rstd[T] stat = 1/sqrt(mean_d x[t,d]² + eps); out[T,D] act = x · rstd · w. x: [T,D] act, w: [D] weight.
  virtual void rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& w, double eps) = 0;
  // dx[T,D] act (+)= ∂/∂x; dw[D] grad += Σ_t dout·x·rstd (skipped when dw is empty).
  virtual void rmsnorm_backward(Tensor dx, Tensor dw, const Tensor& dout, const Tensor& x, const Tensor& w,
                                const Tensor& rstd, bool accumulate_dx) = 0;

  // ---- LayerNorm (torch.nn.LayerNorm: biased variance, eps inside the square root) ------------------------------
  // mean[T] stat = mean_d x[t,d]; rstd[T] stat = 1/sqrt(mean_d (x[t,d] − mean)² + eps);
  // out[T,D] act = (x − mean)·rstd·w + b. x: [T,D] act, w, b: [D] weight. out must not alias x.
  virtual void layernorm_forward(Tensor out, Tensor mean, Tensor rstd, const Tensor& x, const Tensor& w,
                                 const Tensor& b, double eps) = 0;
  // With x̂ = (x − mean)·rstd and g = dout ⊙ w: dx[T,D] act (+)= rstd·(g − mean_d g − x̂·mean_d(g·x̂)) (skipped when
  // dx is empty); dw[D] grad += Σ_t dout·x̂, db[D] grad += Σ_t dout (each skipped when empty). Deterministic.
  virtual void layernorm_backward(Tensor dx, Tensor dw, Tensor db, const Tensor& dout, const Tensor& x,
                                  const Tensor& w, const Tensor& mean, const Tensor& rstd, bool accumulate_dx) = 0;

  // ---- linear: y = x·Wᵀ -----------------------------------------------------------------------------
  // y[T,N] act (+)= x[T,K] act · W[N,K]ᵀ (weight).
  virtual void linear_forward(Tensor y, const Tensor& x, const Tensor& w, bool accumulate) = 0;
  // dx[T,K] act (+)= dy[T,N]·W (skipped when dx is empty); dW[N,K] grad += dyᵀ·x (skipped when empty).
  virtual void linear_backward(Tensor dx, Tensor dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                               bool accumulate_dx) = 0;

  // ---- bias of a linear layer: y = x·Wᵀ + b (after linear_forward or lora_forward) -------------------------------
  // y[T,N] act += b[N] weight, broadcast over the rows (in place).
  virtual void add_bias(Tensor y, const Tensor& b) = 0;
  // db[N] grad += Σ_t dy[t,:] (dy [T,N] act), the rows summed in a fixed order (deterministic); skipped when db is
  // empty (frozen bias).
  virtual void bias_backward(Tensor db, const Tensor& dy) = 0;

  // ---- LoRA linear: y = x·Wᵀ + s·(x_lora·Aᵀ)·Bᵀ, s = α/r ---------------------------------------------
  // x_lora is the adapter's input: x itself, or dropout(x) when LoRA dropout is on.
  // y[T,N] act; xa[T,r] act = x_lora·Aᵀ is saved for backward; x, x_lora [T,K] act; W[N,K], A[r,K], B[N,r] weight.
  virtual void lora_forward(Tensor y, Tensor xa, const Tensor& x, const Tensor& x_lora, const Tensor& w,
                            const Tensor& a, const Tensor& b, double scale) = 0;
  // With dxa = s·dy·B [T,r] (caller-provided scratch): dA[r,K] grad += dxaᵀ·x_lora; dB[N,r] grad += s·dyᵀ·xa;
  // dW[N,K] grad += dyᵀ·x only when dw is non-empty (LoRA normally keeps W frozen); dx[T,K] act (+)= dy·W.
  // The adapter-input gradient dxa·A is added into dx when dx_lora is empty (x_lora is x), else it overwrites
  // dx_lora [T,K] (the caller runs the dropout backward on it and adds it to dx).
  virtual void lora_backward(Tensor dx, Tensor dx_lora, Tensor dw, Tensor da, Tensor db, Tensor dxa, const Tensor& dy,
                             const Tensor& x, const Tensor& x_lora, const Tensor& xa, const Tensor& w, const Tensor& a,
                             const Tensor& b, double scale, bool accumulate_dx) = 0;

  // ---- dropout -----------------------------------------------------------------------------------------
  // out = x ⊙ keep / (1 − p) with keep from dropout_mask.h (element index = flat position, counter-based);
  // out may alias x; p in [0, 1). The backward is the same call on the gradient with the same seed.
  virtual void dropout(Tensor out, const Tensor& x, double p, uint64_t seed) = 0;

  // ---- RoPE (in place) --------------------------------------------------------------------------------
  // x[T, nh, Dh] act rotated in place (the first p.rotary_dims dims of each head; RopeParams); positions[T] i32
  // (token position within its sequence).
  virtual void rope_forward(Tensor x, const Tensor& positions, const RopeParams& p) = 0;
  // The adjoint: dx rotated by the negative angle, in place.
  virtual void rope_backward(Tensor dx, const Tensor& positions, const RopeParams& p) = 0;

  // ---- attention (GQA-native; scale 1/sqrt(Dh)) -------------------------------------------------------
  // q[B,L,H,Dh], k,v[B,Lk,Hkv,Dh] act (H % Hkv == 0; query head h reads KV head h/(H/Hkv)). Lk ≥ L: the
  // queries are the LAST L positions of the Lk keys (bottom-right aligned, for decoding from a KV cache; the
  // S2 masks need Lk == L). out[B,L,H,Dh] act; lse[B,H,L] stat = log Σ_j exp(s_ij) over attended keys.
  virtual void attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const AttentionMask& mask) = 0;
  // dq[B,L,H,Dh], dk, dv[B,Lk,Hkv,Dh] act, all overwritten; recomputes probabilities from lse.
  virtual void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse, const AttentionMask& mask) = 0;

  // ---- fused QKV projection (GPT-NeoX's query_key_value) -------------------------------------------------------
  // qkv[T, H·3·Dh] act in Hugging Face's per-head layout: column h·3·Dh + j·Dh + d holds head h's query (j = 0), key
  // (j = 1) or value (j = 2) dimension d. q, k, v [T, H, Dh] act (column h·Dh + d).
  // split_qkv copies the three parts out; merge_qkv interleaves them back (overwrites qkv) — its inverse, and the
  // backward of split_qkv (dq, dk, dv → dqkv). Pure copies: every backend gives the same bits.
  virtual void split_qkv(Tensor q, Tensor k, Tensor v, const Tensor& qkv) = 0;
  virtual void merge_qkv(Tensor qkv, const Tensor& q, const Tensor& k, const Tensor& v) = 0;

  // ---- SwiGLU: out = silu(gate) ⊙ up -------------------------------------------------------------------
  // out, gate, up: [T,F] act.
  virtual void swiglu_forward(Tensor out, const Tensor& gate, const Tensor& up) = 0;
  virtual void swiglu_backward(Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate, const Tensor& up) = 0;

  // ---- GELU, exact (erf) form: transformers' "gelu" (not "gelu_new", the tanh approximation) --------------------
  // out = x·Φ(x) = 0.5·x·(1 + erf(x/√2)); out, x: [T,F] act. out may alias x, but the backward needs x: a training
  // forward keeps x (the up-projection's output) and writes out elsewhere.
  virtual void gelu_forward(Tensor out, const Tensor& x) = 0;
  // dx = dout·(Φ(x) + x·φ(x)), φ the standard normal density; dx, dout, x: [T,F] act. dx may alias dout (in place).
  virtual void gelu_backward(Tensor dx, const Tensor& dout, const Tensor& x) = 0;

  // ---- residual add -----------------------------------------------------------------------------------
  // out = a + b, all [T,D] act; out may alias a or b. Its backward is the identity into both inputs,
  // which the model expresses with the accumulate_dx flags of the producing ops (no kernel needed).
  virtual void add(Tensor out, const Tensor& a, const Tensor& b) = 0;

  // ---- cross-entropy over a chunk of rows ---------------------------------------------------------------
  // logits[R,V] act, targets[R] i32 (−100 = ignore), losses[R] stat: loss_r = logsumexp(logits_r) − logits_r[target]
  // (0 for ignored rows). When compute_grad, logits is overwritten IN PLACE with
  // grad_scale·(softmax(logits_r) − onehot(target)) (zero rows for ignored targets).
  // The model calls this on row chunks so the full fp32 logits matrix never exists.
  virtual void cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double grad_scale,
                             bool compute_grad) = 0;
  // out[R] i32 = index of the largest logit of each row (the first one on ties). logits[R,V] act.
  virtual void argmax_rows(Tensor out, const Tensor& logits) = 0;

  // ---- optimizer support (grad-dtype tensors of any shape) --------------------------------------------
  // Σ x² accumulated in double in a fixed order (deterministic whatever the thread count); inf/NaN propagate,
  // which is how the trainer detects a non-finite gradient.
  virtual double sum_squares(const Tensor& x) = 0;
  // x ← s·x
  virtual void scale(Tensor x, double s) = 0;
  // AdamW on one parameter. m, v: moments (grad dtype). master: fp32 master copy when the working weights are
  // stored in a lower precision (then param ← round(master) after the update); empty when param is itself the
  // master (CPU backends).
  virtual void adamw_step(Tensor param, Tensor master, const Tensor& grad, Tensor m, Tensor v,
                          const AdamWStep& step) = 0;
};

// ---- backend registry ------------------------------------------------------------------------------------
struct BackendInfo {
  std::string name;         // "cpu", "cpu-f64", "cuda"
  bool available;           // can be created on this machine
  std::string description;  // what it is, or why it is unavailable
};

std::vector<BackendInfo> list_backends();
// The backend a run uses when none is named: "cuda" when this build has it and a usable GPU is present, else "cpu".
std::string default_device();
// Creates a backend by name; throws ll::Error naming the backend and the reason when it is unavailable.
// `device_index` (cuda only): the GPU to run on (makes it the calling thread's current device); −1 = the first
// usable one. Multi-rank runs pass the rank's GPU (choose_local_device in mpi/comm.h).
std::unique_ptr<Backend> create_backend(const std::string& name, int device_index = -1);

}  // namespace ll
