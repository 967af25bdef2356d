// The CUDA backend: every op of backend.h on device memory. bf16 weights and activations, f32 statistics and
// gradients (fp32 accumulation everywhere), cuBLASLt for the matrix products, hand-written kernels for the rest
// (cuda/*.cu). Plain C++ header: no CUDA types leak out, so host code and tests include it without nvcc.
//
// Streams and memory: one non-blocking stream per backend; every op is enqueued on it (the asynchronous host copies
// of the activation offload run on a second stream, ordered against it with events). Backend::allocate is a
// cudaMalloc (the arenas of the model call it a handful of times at start-up); the backend's own scratch
// (cuBLASLt workspace, reduction partials, the decode split buffers) is one growable block that reaches its
// steady size in the first step, so no cudaMalloc happens inside the step loop afterwards
// (scratch_reallocations() counts them; a GPU test asserts it stays constant).
//
// Determinism: no float atomics anywhere; every reduction has a fixed order that depends only on the shape.
#pragma once
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>

#include "core/backend.h"
#include "cuda/attention_plan.h"
#include "cuda/launch_plan.h"

namespace ll {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device_index = 0);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  Device device() const override { return Device::CUDA; }
  DTypePolicy dtypes() const override;

  void* allocate(size_t bytes) override;
  void release(void* ptr) override;
  void copy_from_host(Tensor dst, const void* host_src) override;
  void copy_to_host(void* host_dst, const Tensor& src) override;
  void copy(Tensor dst, const Tensor& src) override;
  void convert(Tensor dst, const Tensor& src) override;
  void zero(Tensor t) override;
  void synchronize() override;  // both streams: the compute stream and the host-copy stream
  // Pinned host memory (cudaMallocHost) and copies on a dedicated copy stream (the contract: backend.h).
  void* allocate_host(size_t bytes) override;
  void release_host(void* ptr) override;
  void copy_to_host_async(void* host_dst, const Tensor& src) override;
  void copy_from_host_async(Tensor dst, const void* host_src) override;
  void wait_for_copies() override;
  bool device_memory(DeviceMemoryState* state) const override;

  void embedding_forward(Tensor out, const Tensor& ids, const Tensor& table) override;
  void embedding_backward(Tensor dtable, const Tensor& ids, const Tensor& dout) override;
  void rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& w, double eps) override;
  void rmsnorm_backward(Tensor dx, Tensor dw, const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        bool accumulate_dx) override;
  void layernorm_forward(Tensor out, Tensor mean, Tensor rstd, const Tensor& x, const Tensor& w, const Tensor& b,
                         double eps) override;
  void layernorm_backward(Tensor dx, Tensor dw, Tensor db, const Tensor& dout, const Tensor& x, const Tensor& w,
                          const Tensor& mean, const Tensor& rstd, bool accumulate_dx) override;
  void linear_forward(Tensor y, const Tensor& x, const Tensor& w, bool accumulate) override;
  void linear_backward(Tensor dx, Tensor dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                       bool accumulate_dx) override;
  void add_bias(Tensor y, const Tensor& b) override;
  void bias_backward(Tensor db, const Tensor& dy) override;
  void lora_forward(Tensor y, Tensor xa, const Tensor& x, const Tensor& x_lora, const Tensor& w, const Tensor& a,
                    const Tensor& b, double scale) override;
  void lora_backward(Tensor dx, Tensor dx_lora, Tensor dw, Tensor da, Tensor db, Tensor dxa, const Tensor& dy,
                     const Tensor& x, const Tensor& x_lora, const Tensor& xa, const Tensor& w, const Tensor& a,
                     const Tensor& b, double scale, bool accumulate_dx) override;
  void dropout(Tensor out, const Tensor& x, double p, uint64_t seed) override;
  void rope_forward(Tensor x, const Tensor& positions, const RopeParams& p) override;
  void rope_backward(Tensor dx, const Tensor& positions, const RopeParams& p) override;
  void attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionMask& mask) override;
  void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                          const Tensor& v, const Tensor& out, const Tensor& lse, const AttentionMask& mask) override;
  void swiglu_forward(Tensor out, const Tensor& gate, const Tensor& up) override;
  void swiglu_backward(Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate, const Tensor& up) override;
  void split_qkv(Tensor q, Tensor k, Tensor v, const Tensor& qkv) override;
  void merge_qkv(Tensor qkv, const Tensor& q, const Tensor& k, const Tensor& v) override;
  void gelu_forward(Tensor out, const Tensor& x) override;
  void gelu_backward(Tensor dx, const Tensor& dout, const Tensor& x) override;
  void add(Tensor out, const Tensor& a, const Tensor& b) override;
  void cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double grad_scale,
                     bool compute_grad) override;
  void argmax_rows(Tensor out, const Tensor& logits) override;
  double sum_squares(const Tensor& x) override;
  void scale(Tensor x, double s) override;
  void adamw_step(Tensor param, Tensor master, const Tensor& grad, Tensor m, Tensor v, const AdamWStep& step) override;

  // ---- CUDA-specific (tests, benchmarks) ------------------------------------------------------------------
  // Forces the attention kernel family (Auto = choose by shape); a call the forced path cannot run throws.
  void force_attention_path(cuda_plan::AttentionPath path) { forced_path_ = path; }
  // The thin LoRA products (xa = x_lora·Aᵀ, y += s·xa·Bᵀ, dxa, dA, dB, dxa·A): hand-written kernels (cuda/lora.cuh)
  // or cuBLASLt. Default follows the environment variable LONGLORA_LORA_KERNELS (read once per process: `kernels`,
  // or `cublaslt` = unset, since the kernels are not faster yet); shapes the kernels do not support take cuBLASLt.
  enum class LoraKernels { Default, HandWritten, CuBlasLt };
  void set_lora_kernels(LoraKernels k) { lora_kernels_ = k; }
  // Which tensor-core attention passes at head dim 128 (forward, dQ, dK/dV) run the wgmma kernels
  // (attention_wgmma.cu) instead of mma.sync (attention.cu, sm_80+; other head dims always). By default
  // LONGLORA_ATTENTION_WGMMA decides (read at the first attention call; cuda_plan::parse_attention_wgmma): unset or
  // auto = every pass where the device runs this build's sm_90a code. set_attention_wgmma overrides it (nullopt:
  // back to the default); asking for wgmma where it cannot run throws.
  void set_attention_wgmma(std::optional<cuda_plan::AttentionWgmma> passes);
  cuda_plan::AttentionWgmma attention_wgmma() const;  // the choice in force
  bool attention_wgmma_available() const;
  // Whether the hand-written kernels run for a LoRA call of these shapes (with 16-byte aligned tensors).
  bool lora_kernels_chosen(int64_t rows, int64_t in, int64_t out, int64_t rank) const;
  // Fills a floating tensor with uniform values in [-scale, scale) from a counter-based hash of (seed, index):
  // random weights for benchmarks without a host round trip.
  void fill_uniform(Tensor t, uint64_t seed, double scale);
  // Fills a floating tensor with one value (NaN poisoning in tests).
  void fill(Tensor t, double value);
  // How often the internal scratch block was (re)allocated, and the bytes held by allocate() now / at peak.
  int64_t scratch_reallocations() const;
  size_t bytes_in_use() const;
  size_t peak_bytes_in_use() const;
  // cudaMemGetInfo of this backend's device.
  void memory_info(size_t* free_bytes, size_t* total_bytes) const;
  std::string device_description() const;
  // cuBLASLt plans cached so far (one per distinct product shape/layout/alignment).
  size_t cached_gemm_plans() const;
  // The stream every op is enqueued on (a cudaStream_t): NCCL collectives are ordered against it with events.
  void* native_stream() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  cuda_plan::AttentionPath forced_path_ = cuda_plan::AttentionPath::Auto;
  LoraKernels lora_kernels_ = LoraKernels::Default;
  std::optional<cuda_plan::AttentionWgmma> attention_wgmma_;  // nullopt: LONGLORA_ATTENTION_WGMMA
  mutable int wgmma_available_ = -1;                                  // attention_wgmma_available(), asked once
  mutable std::optional<cuda_plan::AttentionWgmma> default_wgmma_;  // LONGLORA_ATTENTION_WGMMA, resolved once
  bool use_lora_kernels(int64_t rows, int64_t in, int64_t out, int64_t rank,
                        std::initializer_list<const void*> vec16) const;
  // A linear layer's weight as bf16: its own memory, or a 4-bit weight dequantized into the backend's workspace
  // (valid until the next call that dequantizes).
  const void* dense_weight(const Tensor& w);
};

}  // namespace ll
