// CudaBackend: validates each op's arguments (src/core/op_checks.cpp, plus cuda/op_checks.cpp where the kernels need
// more), then enqueues the kernels of cuda/*.cu or the cuBLASLt products on the backend's stream.
#include "cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda/attention.cuh"
#include "cuda/bias.cuh"
#include "cuda/common.cuh"
#include "cuda/cross_entropy.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/embedding.cuh"
#include "cuda/launch_plan.h"
#include "cuda/layernorm.cuh"
#include "cuda/lora.cuh"
#include "cuda/matmul.cuh"
#include "cuda/memory_report.h"
#include "cuda/op_checks.h"
#include "cuda/optimizer.cuh"
#include "cuda/qkv.cuh"
#include "cuda/quant_4bit.cuh"
#include "cuda/rmsnorm.cuh"
#include "cuda/rope.cuh"
#include "cuda/vec8.cuh"

namespace ll {

namespace checks = cuda_checks;  // the CUDA additions to the shared op_checks
using cuda_checks::kContext;
using cuda::bf16;

namespace {
constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's recommendation for Hopper
constexpr size_t kScratchGranularity = size_t(1) << 20;

template <typename T> T* dev(const Tensor& t) { return static_cast<T*>(t.data); }
inline size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
}  // namespace

struct CudaBackend::Impl {
  int device = 0;
  std::string name;
  cudaStream_t stream = nullptr;
  std::unique_ptr<cuda::GemmRunner> gemm;
  void* gemm_workspace = nullptr;
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  // The bf16 workspace a 4-bit weight is dequantized into before its product (cuda/quant_4bit.cuh): grows to the
  // largest 4-bit weight once, then is reused by every linear and LoRA call.
  void* dequant = nullptr;
  size_t dequant_bytes = 0;
  int64_t scratch_reallocations = 0;
  double* host_result = nullptr;  // pinned, for sum_squares
  std::unordered_map<void*, size_t> allocations;
  size_t in_use = 0, peak = 0;
  // Asynchronous host copies (copy_to_host_async / copy_from_host_async): their own stream, ordered after the
  // compute stream's work by `compute_done` (recorded before each copy), and `copies_done`, recorded after each copy
  // (copies run in order on copy_stream, so the last record covers them all), which wait_for_copies makes the
  // compute stream wait on. Created on first use. Pinned host buffers from allocate_host.
  cudaStream_t copy_stream = nullptr;
  cudaEvent_t compute_done = nullptr, copies_done = nullptr;
  std::unordered_map<void*, size_t> host_allocations;

  void ensure_copy_stream() {
    if (copy_stream) return;
    LL_CUDA_CHECK(cudaEventCreateWithFlags(&compute_done, cudaEventDisableTiming));
    LL_CUDA_CHECK(cudaEventCreateWithFlags(&copies_done, cudaEventDisableTiming));
    LL_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking));
  }

  // Frees everything, also after a partial construction; never throws (it runs in destructors).
  ~Impl() {
    if (stream) cudaStreamSynchronize(stream);
    if (copy_stream) cudaStreamSynchronize(copy_stream);
    gemm.reset();
    if (gemm_workspace) cudaFree(gemm_workspace);
    if (scratch) cudaFree(scratch);
    if (dequant) cudaFree(dequant);
    if (host_result) cudaFreeHost(host_result);
    for (auto& [ptr, bytes] : allocations) cudaFree(ptr);
    for (auto& [ptr, bytes] : host_allocations) cudaFreeHost(ptr);
    if (copy_stream) cudaStreamDestroy(copy_stream);
    if (compute_done) cudaEventDestroy(compute_done);
    if (copies_done) cudaEventDestroy(copies_done);
    if (stream) cudaStreamDestroy(stream);
    cudaGetLastError();
  }

  // A scratch block of at least `bytes`, valid until the next call; grows (after draining the stream) only when a
  // larger request arrives, so the steady state of a training loop never allocates.
  void* get_scratch(size_t bytes) {
    if (bytes <= scratch_bytes) return scratch;
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (scratch) LL_CUDA_CHECK(cudaFree(scratch));
    scratch = nullptr;
    scratch_bytes = 0;
    const size_t want = align_up(bytes, kScratchGranularity);
    const cudaError_t st = cudaMalloc(&scratch, want);
    if (st != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail(device_allocation_failure(want, free_b, total_b, in_use, name, "the backend's scratch block"));
    }
    scratch_bytes = want;
    ++scratch_reallocations;
    return scratch;
  }

  // The dequantization workspace of at least `bytes` (grows like the scratch block, after draining the stream).
  void* get_dequant(size_t bytes) {
    if (bytes <= dequant_bytes) return dequant;
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (dequant) LL_CUDA_CHECK(cudaFree(dequant));
    dequant = nullptr;
    dequant_bytes = 0;
    const size_t want = align_up(bytes, kScratchGranularity);
    const cudaError_t st = cudaMalloc(&dequant, want);
    if (st != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail(device_allocation_failure(want, free_b, total_b, in_use, name, "the 4-bit weights' bf16 workspace"));
    }
    dequant_bytes = want;
    return dequant;
  }
};

CudaBackend::CudaBackend(int device_index) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.device = device_index;
  int count = 0;
  const cudaError_t st = cudaGetDeviceCount(&count);
  if (st != cudaSuccess) {
    cudaGetLastError();
    fail("cuda backend: no usable CUDA device (", cudaGetErrorName(st), ": ", cudaGetErrorString(st), ")");
  }
  LL_CHECK(device_index >= 0 && device_index < count, "cuda backend: device ", device_index, " does not exist (",
           count, " devices)");
  LL_CUDA_CHECK(cudaSetDevice(device_index));
  cudaDeviceProp prop{};
  LL_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_index));
  LL_CHECK(prop.major >= 8, "cuda backend: ", prop.name, " is sm_", prop.major, prop.minor,
           "; the kernels need sm_80 or newer (bf16 tensor cores)");
  m.name = std::string(prop.name) + " (device " + std::to_string(device_index) + ")";
  LL_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  LL_CUDA_CHECK(cudaMallocHost(&m.host_result, sizeof(double)));
  LL_CUDA_CHECK(cudaMalloc(&m.gemm_workspace, kGemmWorkspaceBytes));
  m.gemm = std::make_unique<cuda::GemmRunner>();
  m.gemm->set_workspace(m.gemm_workspace, kGemmWorkspaceBytes);
}

CudaBackend::~CudaBackend() = default;  // Impl::~Impl frees the device resources

DTypePolicy CudaBackend::dtypes() const { return checks::policy(); }

// ---- memory ------------------------------------------------------------------------------------------------------
void* CudaBackend::allocate(size_t bytes) {
  Impl& m = *impl_;
  void* p = nullptr;
  const cudaError_t st = cudaMalloc(&p, bytes == 0 ? 256 : bytes);  // cudaMalloc aligns to 256 bytes at least
  if (st != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail(device_allocation_failure(bytes, free_b, total_b, m.in_use, m.name, "an arena"));
  }
  m.allocations[p] = bytes;
  m.in_use += bytes;
  m.peak = std::max(m.peak, m.in_use);
  return p;
}

// Called from arena destructors: never throws. Unknown pointers are ignored; CUDA errors (e.g. after a kernel fault,
// which the next checked call reports) are cleared.
void CudaBackend::release(void* ptr) {
  if (!ptr) return;
  Impl& m = *impl_;
  auto it = m.allocations.find(ptr);
  if (it == m.allocations.end()) return;
  m.in_use -= it->second;
  m.allocations.erase(it);
  cudaStreamSynchronize(m.stream);
  if (m.copy_stream) cudaStreamSynchronize(m.copy_stream);
  cudaFree(ptr);
  cudaGetLastError();
}

void CudaBackend::copy_from_host(Tensor dst, const void* host_src) {
  LL_ASSERT(dst.empty() || dst.device == Device::CUDA, "copy_from_host: destination is not a device tensor");
  if (dst.nbytes() == 0) return;
  // Pageable source: cudaMemcpyAsync returns once the bytes are staged, so the caller may free its buffer.
  LL_CUDA_CHECK(cudaMemcpyAsync(dst.data, host_src, dst.nbytes(), cudaMemcpyHostToDevice, impl_->stream));
}

void CudaBackend::copy_to_host(void* host_dst, const Tensor& src) {
  LL_ASSERT(src.empty() || src.device == Device::CUDA, "copy_to_host: source is not a device tensor");
  if (src.nbytes() == 0) return;
  LL_CUDA_CHECK(cudaMemcpyAsync(host_dst, src.data, src.nbytes(), cudaMemcpyDeviceToHost, impl_->stream));
  LL_CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
}

void CudaBackend::copy(Tensor dst, const Tensor& src) {
  checks::copy(dst, src);
  if (dst.nbytes() == 0 || dst.data == src.data) return;
  LL_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, dst.nbytes(), cudaMemcpyDeviceToDevice, impl_->stream));
}

void CudaBackend::convert(Tensor dst, const Tensor& src) {
  const int64_t n = op_checks::convert(kContext, dst, src);
  if (dst.dtype == src.dtype) {
    if (dst.data != src.data)
      LL_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, dst.nbytes(), cudaMemcpyDeviceToDevice, impl_->stream));
    return;
  }
  cuda::launch_convert(dst.data, dst.dtype, src.data, src.dtype, n, impl_->stream);
}

void CudaBackend::zero(Tensor t) {
  LL_ASSERT(t.empty() || t.device == Device::CUDA, "zero: not a device tensor");
  if (t.nbytes()) LL_CUDA_CHECK(cudaMemsetAsync(t.data, 0, t.nbytes(), impl_->stream));
}

void CudaBackend::synchronize() {
  LL_CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
  if (impl_->copy_stream) LL_CUDA_CHECK(cudaStreamSynchronize(impl_->copy_stream));
}

// ---- host staging and asynchronous copies --------------------------------------------------------------------------
void* CudaBackend::allocate_host(size_t bytes) {
  void* p = nullptr;
  const cudaError_t st = cudaMallocHost(&p, bytes == 0 ? 256 : bytes);  // page-aligned
  if (st != cudaSuccess) {
    cudaGetLastError();
    fail("out of pinned host memory: cudaMallocHost of ", format_gib(bytes), " failed (", cudaGetErrorName(st),
         ": ", cudaGetErrorString(st), "); the host staging of --offload_checkpoints needs it — free host memory, or "
         "checkpoint fewer layers, or turn the offload off");
  }
  impl_->host_allocations[p] = bytes;
  return p;
}

// Never throws; unknown pointers are ignored. Waits for pending copies first (they may still read or write it).
void CudaBackend::release_host(void* ptr) {
  if (!ptr) return;
  Impl& m = *impl_;
  auto it = m.host_allocations.find(ptr);
  if (it == m.host_allocations.end()) return;
  m.host_allocations.erase(it);
  cudaStreamSynchronize(m.stream);
  if (m.copy_stream) cudaStreamSynchronize(m.copy_stream);
  cudaFreeHost(ptr);
  cudaGetLastError();
}

void CudaBackend::copy_to_host_async(void* host_dst, const Tensor& src) {
  LL_ASSERT(src.empty() || src.device == Device::CUDA, "copy_to_host_async: source is not a device tensor");
  if (src.nbytes() == 0) return;
  Impl& m = *impl_;
  m.ensure_copy_stream();
  LL_CUDA_CHECK(cudaEventRecord(m.compute_done, m.stream));  // after everything enqueued so far
  LL_CUDA_CHECK(cudaStreamWaitEvent(m.copy_stream, m.compute_done, 0));
  LL_CUDA_CHECK(cudaMemcpyAsync(host_dst, src.data, src.nbytes(), cudaMemcpyDeviceToHost, m.copy_stream));
  LL_CUDA_CHECK(cudaEventRecord(m.copies_done, m.copy_stream));
}

void CudaBackend::copy_from_host_async(Tensor dst, const void* host_src) {
  LL_ASSERT(dst.empty() || dst.device == Device::CUDA, "copy_from_host_async: destination is not a device tensor");
  if (dst.nbytes() == 0) return;
  Impl& m = *impl_;
  m.ensure_copy_stream();
  LL_CUDA_CHECK(cudaEventRecord(m.compute_done, m.stream));
  LL_CUDA_CHECK(cudaStreamWaitEvent(m.copy_stream, m.compute_done, 0));
  LL_CUDA_CHECK(cudaMemcpyAsync(dst.data, host_src, dst.nbytes(), cudaMemcpyHostToDevice, m.copy_stream));
  LL_CUDA_CHECK(cudaEventRecord(m.copies_done, m.copy_stream));
}

void CudaBackend::wait_for_copies() {
  Impl& m = *impl_;
  if (!m.copy_stream) return;  // no copy was ever started
  // cudaStreamWaitEvent waits for the event's latest record: the last copy, and so (one stream) all of them.
  LL_CUDA_CHECK(cudaStreamWaitEvent(m.stream, m.copies_done, 0));
}

// ---- embedding -----------------------------------------------------------------------------------------------------
void CudaBackend::embedding_forward(Tensor out, const Tensor& ids, const Tensor& table) {
  const auto d = op_checks::embedding_forward(kContext, out, ids, table);
  cuda::launch_embedding_forward(dev<bf16>(out), dev<int32_t>(ids), dev<bf16>(table), d.rows, d.cols, table.rows(),
                                 impl_->stream);
}

void CudaBackend::embedding_backward(Tensor dtable, const Tensor& ids, const Tensor& dout) {
  const auto d = op_checks::embedding_backward(kContext, dtable, ids, dout);
  if (d.rows == 0) return;
  // The grouping by id is planned on the host (one small copy of the ids): deterministic, no atomics.
  std::vector<int32_t> host_ids(size_t(d.rows));
  copy_to_host(host_ids.data(), ids);
  const cuda_plan::EmbeddingBackwardPlan plan = cuda_plan::plan_embedding_backward(host_ids.data(), d.rows, dtable.rows());
  const size_t n_order = plan.order.size(), n_start = plan.run_start.size(), n_id = plan.run_id.size();
  std::vector<int32_t> packed;
  packed.reserve(n_order + n_start + n_id);
  packed.insert(packed.end(), plan.order.begin(), plan.order.end());
  packed.insert(packed.end(), plan.run_start.begin(), plan.run_start.end());
  packed.insert(packed.end(), plan.run_id.begin(), plan.run_id.end());
  int32_t* buf = static_cast<int32_t*>(impl_->get_scratch(packed.size() * sizeof(int32_t)));
  LL_CUDA_CHECK(cudaMemcpyAsync(buf, packed.data(), packed.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                                impl_->stream));
  cuda::launch_embedding_backward(dev<float>(dtable), buf, buf + n_order, buf + n_order + n_start, plan.runs(),
                                  dev<bf16>(dout), d.cols, impl_->stream);
  // `packed` is pageable: the copy above was staged before returning, so it may go out of scope.
}

// ---- RMSNorm -------------------------------------------------------------------------------------------------------
void CudaBackend::rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& w, double eps) {
  const auto d = checks::rmsnorm_forward(out, rstd, x, w, eps);
  cuda::launch_rmsnorm_forward(dev<bf16>(out), dev<float>(rstd), dev<bf16>(x), dev<bf16>(w), d.rows, d.cols, eps,
                               impl_->stream);
}

void CudaBackend::rmsnorm_backward(Tensor dx, Tensor dw, const Tensor& dout, const Tensor& x, const Tensor& w,
                                   const Tensor& rstd, bool accumulate_dx) {
  const auto d = op_checks::rmsnorm_backward(kContext, dx, dw, dout, x, w, rstd);
  if (!dw.empty()) {
    const cuda_plan::ColumnReducePlan plan = cuda_plan::plan_column_reduce(d.rows);
    float* partial = static_cast<float*>(impl_->get_scratch(size_t(plan.chunks * d.cols) * sizeof(float)));
    cuda::launch_rmsnorm_backward_dw(dev<float>(dw), partial, dev<bf16>(dout), dev<bf16>(x), dev<float>(rstd), d.rows,
                                     d.cols, plan.rows_per_chunk, plan.chunks, impl_->stream);
  }
  // dx after dw: dx may alias nothing the dw pass reads (outputs never alias inputs), order is for readability.
  if (!dx.empty())
    cuda::launch_rmsnorm_backward_dx(dev<bf16>(dx), dev<bf16>(dout), dev<bf16>(x), dev<bf16>(w), dev<float>(rstd),
                                     d.rows, d.cols, accumulate_dx, impl_->stream);
}

// ---- LayerNorm -----------------------------------------------------------------------------------------------------
void CudaBackend::layernorm_forward(Tensor out, Tensor mean, Tensor rstd, const Tensor& x, const Tensor& w,
                                    const Tensor& b, double eps) {
  const auto d = op_checks::layernorm_forward(kContext, out, mean, rstd, x, w, b, eps);
  cuda::launch_layernorm_forward(dev<bf16>(out), dev<float>(mean), dev<float>(rstd), dev<bf16>(x), dev<bf16>(w),
                                 dev<bf16>(b), d.rows, d.cols, eps, impl_->stream);
}

void CudaBackend::layernorm_backward(Tensor dx, Tensor dw, Tensor db, const Tensor& dout, const Tensor& x,
                                     const Tensor& w, const Tensor& mean, const Tensor& rstd, bool accumulate_dx) {
  const auto d = op_checks::layernorm_backward(kContext, dx, dw, db, dout, x, w, mean, rstd);
  if (!dw.empty() || !db.empty()) {
    const cuda_plan::ColumnReducePlan plan = cuda_plan::plan_column_reduce(d.rows);
    float* partial = static_cast<float*>(impl_->get_scratch(2 * size_t(plan.chunks * d.cols) * sizeof(float)));
    cuda::launch_layernorm_backward_dw_db(dw.empty() ? nullptr : dev<float>(dw), db.empty() ? nullptr : dev<float>(db),
                                          partial, dev<bf16>(dout), dev<bf16>(x), dev<float>(mean), dev<float>(rstd),
                                          d.rows, d.cols, plan.rows_per_chunk, plan.chunks, impl_->stream);
  }
  if (!dx.empty())
    cuda::launch_layernorm_backward_dx(dev<bf16>(dx), dev<bf16>(dout), dev<bf16>(x), dev<bf16>(w), dev<float>(mean),
                                       dev<float>(rstd), d.rows, d.cols, accumulate_dx, impl_->stream);
}

// ---- linear and LoRA -------------------------------------------------------------------------------------------------
// A dense weight as is; a 4-bit one dequantized (one launch) into the reusable bf16 workspace, then the same
// cuBLASLt products read it (Unsloth's approach; the backward dequantizes again rather than keep a copy).
const void* CudaBackend::dense_weight(const Tensor& w) {
  if (!is_quantized(w.dtype)) return w.data;
  bf16* out = static_cast<bf16*>(impl_->get_dequant(size_t(w.numel()) * sizeof(bf16)));
  cuda::launch_dequantize_4bit(out, static_cast<const uint8_t*>(w.data), w.dtype, w.numel(), impl_->stream);
  return out;
}

void CudaBackend::linear_forward(Tensor y, const Tensor& x, const Tensor& w, bool accumulate) {
  const auto d = op_checks::linear_forward(kContext, y, x, w);
  if (is_quantized(w.dtype) && d.rows == 1) {  // batch-1 decoding: the fused dequantizing matrix-vector product
    cuda::launch_gemv_4bit(dev<bf16>(y), dev<bf16>(x), static_cast<const uint8_t*>(w.data), w.dtype, d.out, d.in,
                           accumulate, impl_->stream);
    return;
  }
  const bf16* wd = static_cast<const bf16*>(dense_weight(w));
  impl_->gemm->gemm(false, true, d.rows, d.out, d.in, 1.f, dev<bf16>(x), d.in, wd, d.in,
                    accumulate ? 1.f : 0.f, y.data, DType::BF16, d.out, impl_->stream);
}

void CudaBackend::linear_backward(Tensor dx, Tensor dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                                  bool accumulate_dx) {
  const auto d = op_checks::linear_backward(kContext, dx, dw, dy, x, w);
  auto& g = *impl_->gemm;
  if (!dx.empty())  // dx[T,K] (+)= dy[T,N]·W[N,K]
    g.gemm(false, false, d.rows, d.in, d.out, 1.f, dev<bf16>(dy), d.out, static_cast<const bf16*>(dense_weight(w)),
           d.in, accumulate_dx ? 1.f : 0.f,
           dx.data, DType::BF16, d.in, impl_->stream);
  if (!dw.empty())  // dW[N,K] += dyᵀ·x (f32)
    g.gemm(true, false, d.out, d.in, d.rows, 1.f, dev<bf16>(dy), d.out, dev<bf16>(x), d.in, 1.f, dw.data, DType::F32,
           d.in, impl_->stream);
}

namespace {
// LONGLORA_LORA_KERNELS, read once per process: `kernels` → hand-written; unset, empty or `cublaslt` → cuBLASLt.
// cuBLASLt is the default: on an H200 (7B projection, 8k tokens, r = 8) the hand-written kernels measured a LoRA
// overhead of 0.128 ms forward / 0.266 ms backward against cuBLASLt's 0.096 / 0.127 (bench_cuda lora).
bool lora_kernels_by_default() {
  static const bool hand_written = [] {
    const char* v = std::getenv("LONGLORA_LORA_KERNELS");
    if (v == nullptr || *v == '\0' || std::string(v) == "cublaslt") return false;
    LL_CHECK(std::string(v) == "kernels", "LONGLORA_LORA_KERNELS must be `kernels` or `cublaslt`, got `", v, "`");
    return true;
  }();
  return hand_written;
}

}  // namespace

bool CudaBackend::lora_kernels_chosen(int64_t rows, int64_t in, int64_t out, int64_t rank) const {
  const bool wanted = lora_kernels_ == LoraKernels::Default ? lora_kernels_by_default()
                                                            : lora_kernels_ == LoraKernels::HandWritten;
  return wanted && cuda::lora_kernels_support(rows, in, out, rank);
}

bool CudaBackend::use_lora_kernels(int64_t rows, int64_t in, int64_t out, int64_t rank,
                                   std::initializer_list<const void*> vec16) const {
  if (!lora_kernels_chosen(rows, in, out, rank)) return false;
  for (const void* p : vec16)
    if (!cuda::aligned16(p)) return false;
  return true;
}

void CudaBackend::add_bias(Tensor y, const Tensor& b) {
  const auto d = op_checks::add_bias(kContext, y, b);
  cuda::launch_add_bias(dev<bf16>(y), dev<bf16>(b), d.rows, d.cols, impl_->stream);
}

void CudaBackend::bias_backward(Tensor db, const Tensor& dy) {
  const auto d = op_checks::bias_backward(kContext, db, dy);
  if (db.empty()) return;
  const cuda_plan::ColumnReducePlan plan = cuda_plan::plan_column_reduce(d.rows);
  float* partial = static_cast<float*>(impl_->get_scratch(size_t(plan.chunks * d.cols) * sizeof(float)));
  cuda::launch_bias_backward(dev<float>(db), partial, dev<bf16>(dy), d.rows, d.cols, plan.rows_per_chunk,
                             plan.chunks, impl_->stream);
}

void CudaBackend::lora_forward(Tensor y, Tensor xa, const Tensor& x, const Tensor& x_lora, const Tensor& w,
                               const Tensor& a, const Tensor& b, double scale) {
  const auto d = op_checks::lora_forward(kContext, y, xa, x, x_lora, w, a, b);
  const bf16* wd = static_cast<const bf16*>(dense_weight(w));
  auto& g = *impl_->gemm;
  cudaStream_t s = impl_->stream;
  g.gemm(false, true, d.rows, d.out, d.in, 1.f, dev<bf16>(x), d.in, wd, d.in, 0.f, y.data, DType::BF16,
         d.out, s);
  if (use_lora_kernels(d.rows, d.in, d.out, d.rank, {x_lora.data, y.data})) {
    // xa[t,j] = Σ_k x_lora[t,k]·A[j,k];  y[t,n] += s·Σ_j xa[t,j]·B[n,j]
    cuda::launch_lora_down(dev<bf16>(xa), dev<bf16>(x_lora), d.rows, d.in, dev<bf16>(a), d.in, 1, d.rank, 1.f, s);
    cuda::launch_lora_up(dev<bf16>(y), dev<bf16>(xa), d.rows, d.out, d.rank, dev<bf16>(b), d.rank, 1, float(scale),
                         true, s);
    return;
  }
  g.gemm(false, true, d.rows, d.rank, d.in, 1.f, dev<bf16>(x_lora), d.in, dev<bf16>(a), d.in, 0.f, xa.data,
         DType::BF16, d.rank, s);
  // The adapter's product accumulates into the base output (beta = 1) with the scale folded into alpha.
  g.gemm(false, true, d.rows, d.out, d.rank, float(scale), dev<bf16>(xa), d.rank, dev<bf16>(b), d.rank, 1.f, y.data,
         DType::BF16, d.out, s);
}

void CudaBackend::lora_backward(Tensor dx, Tensor dx_lora, Tensor dw, Tensor da, Tensor db, Tensor dxa,
                                const Tensor& dy, const Tensor& x, const Tensor& x_lora, const Tensor& xa,
                                const Tensor& w, const Tensor& a, const Tensor& b, double scale, bool accumulate_dx) {
  const auto d = op_checks::lora_backward(kContext, dx, dx_lora, dw, da, db, dxa, dy, x, x_lora, xa, w, a, b);
  const bf16* wd = dx.empty() ? nullptr : static_cast<const bf16*>(dense_weight(w));  // only dx reads the base weight
  auto& g = *impl_->gemm;
  cudaStream_t s = impl_->stream;
  const float sc = float(scale);
  Tensor& dx_adapter = dx_lora.empty() ? dx : dx_lora;  // where dxa·A goes
  if (use_lora_kernels(d.rows, d.in, d.out, d.rank, {dy.data, x_lora.data, dx_adapter.data})) {
    // One scratch block for both row reductions (run one after the other on the stream).
    const size_t scratch = std::max(cuda::lora_reduce_rows_scratch_bytes(d.rows, d.out, d.rank),
                                    cuda::lora_reduce_rows_scratch_bytes(d.rows, d.in, d.rank));
    float* partial = static_cast<float*>(impl_->get_scratch(scratch));
    // dB[n,j] += s·Σ_t xa[t,j]·dy[t,n]  (G(j,n) = dB[n,j]: strides (1, r))
    cuda::launch_lora_reduce_rows(dev<float>(db), 1, d.rank, dev<bf16>(xa), dev<bf16>(dy), d.rows, d.out, d.rank, sc,
                                  partial, s);
    // dxa[t,j] = s·Σ_n dy[t,n]·B[n,j]  (W(j,n) = B[n,j]: strides (1, r))
    cuda::launch_lora_down(dev<bf16>(dxa), dev<bf16>(dy), d.rows, d.out, dev<bf16>(b), 1, d.rank, d.rank, sc, s);
    // dA[j,k] += Σ_t dxa[t,j]·x_lora[t,k]
    cuda::launch_lora_reduce_rows(dev<float>(da), d.in, 1, dev<bf16>(dxa), dev<bf16>(x_lora), d.rows, d.in, d.rank,
                                  1.f, partial, s);
    if (!dx.empty())
      g.gemm(false, false, d.rows, d.in, d.out, 1.f, dev<bf16>(dy), d.out, wd, d.in,
             accumulate_dx ? 1.f : 0.f, dx.data, DType::BF16, d.in, s);
    // dx += dxa·A, or dx_lora = dxa·A  (V(k,j) = A[j,k]: strides (1, K))
    cuda::launch_lora_up(dev<bf16>(dx_adapter), dev<bf16>(dxa), d.rows, d.in, d.rank, dev<bf16>(a), 1, d.in, 1.f,
                         dx_lora.empty(), s);
    if (!dw.empty())
      g.gemm(true, false, d.out, d.in, d.rows, 1.f, dev<bf16>(dy), d.out, dev<bf16>(x), d.in, 1.f, dw.data, DType::F32,
             d.in, s);
    return;
  }
  // dB += s·dyᵀ·xa;  dxa = s·dy·B;  dA += dxaᵀ·x_lora
  g.gemm(true, false, d.out, d.rank, d.rows, sc, dev<bf16>(dy), d.out, dev<bf16>(xa), d.rank, 1.f, db.data, DType::F32,
         d.rank, s);
  g.gemm(false, false, d.rows, d.rank, d.out, sc, dev<bf16>(dy), d.out, dev<bf16>(b), d.rank, 0.f, dxa.data,
         DType::BF16, d.rank, s);
  g.gemm(true, false, d.rank, d.in, d.rows, 1.f, dev<bf16>(dxa), d.rank, dev<bf16>(x_lora), d.in, 1.f, da.data,
         DType::F32, d.in, s);
  if (!dx.empty())
    g.gemm(false, false, d.rows, d.in, d.out, 1.f, dev<bf16>(dy), d.out, wd, d.in, accumulate_dx ? 1.f : 0.f,
           dx.data, DType::BF16, d.in, s);
  if (dx_lora.empty())
    g.gemm(false, false, d.rows, d.in, d.rank, 1.f, dev<bf16>(dxa), d.rank, dev<bf16>(a), d.in, 1.f, dx.data,
           DType::BF16, d.in, s);
  else
    g.gemm(false, false, d.rows, d.in, d.rank, 1.f, dev<bf16>(dxa), d.rank, dev<bf16>(a), d.in, 0.f, dx_lora.data,
           DType::BF16, d.in, s);
  if (!dw.empty())
    g.gemm(true, false, d.out, d.in, d.rows, 1.f, dev<bf16>(dy), d.out, dev<bf16>(x), d.in, 1.f, dw.data, DType::F32,
           d.in, s);
}

void CudaBackend::dropout(Tensor out, const Tensor& x, double p, uint64_t seed) {
  const int64_t n = op_checks::dropout(kContext, out, x, p);
  cuda::launch_dropout(dev<bf16>(out), dev<bf16>(x), n, p, seed, impl_->stream);
}

// ---- RoPE ----------------------------------------------------------------------------------------------------------
namespace {
cuda::RopeRates rope_rates(const RopeParams& p, int64_t rotary_dims) {
  cuda::RopeRates r{};
  const std::vector<float> rates = cuda_plan::rope_angle_rates(p.theta, p.factor, rotary_dims, p.llama3);
  for (size_t i = 0; i < rates.size(); ++i) r.rate[i] = rates[i];
  return r;
}
}  // namespace

void CudaBackend::rope_forward(Tensor x, const Tensor& positions, const RopeParams& p) {
  const auto d = checks::rope(x, positions, p, "rope_forward");
  cuda::launch_rope(dev<bf16>(x), dev<int32_t>(positions), d.rows, d.heads, d.head_dim, d.rotary_dims,
                    rope_rates(p, d.rotary_dims), +1, impl_->stream);
}

void CudaBackend::rope_backward(Tensor dx, const Tensor& positions, const RopeParams& p) {
  const auto d = checks::rope(dx, positions, p, "rope_backward");
  cuda::launch_rope(dev<bf16>(dx), dev<int32_t>(positions), d.rows, d.heads, d.head_dim, d.rotary_dims,
                    rope_rates(p, d.rotary_dims), -1, impl_->stream);
}

// ---- attention -----------------------------------------------------------------------------------------------------
void CudaBackend::attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionMask& mask) {
  const auto s = checks::attention_forward(out, lse, q, k, v, mask, forced_path_);
  cuda::AttentionForwardArgs a{{s.batch, s.seq_len, s.kv_len, s.heads, s.kv_heads, s.head_dim},
                               mask,
                               dev<bf16>(q),
                               dev<bf16>(k),
                               dev<bf16>(v),
                               dev<bf16>(out),
                               dev<float>(lse)};
  switch (s.path) {
    case cuda_plan::AttentionPath::TensorCore:
      if (s.head_dim == 128 && attention_wgmma().forward)
        cuda::launch_attention_forward_wgmma(a, impl_->stream);
      else
        cuda::launch_attention_forward_tc(a, impl_->stream);
      break;
    case cuda_plan::AttentionPath::Decode: {
      const cuda_plan::DecodePlan plan = cuda_plan::plan_decode(s.kv_len);
      const size_t floats = cuda::decode_scratch_floats(a.dims, plan);
      float* buf = static_cast<float*>(impl_->get_scratch(floats * sizeof(float)));
      const size_t o_floats = size_t(s.batch * s.heads * plan.splits * s.seq_len * s.head_dim);
      cuda::launch_attention_decode(a, plan, buf, buf + o_floats, impl_->stream);
      break;
    }
    default: cuda::launch_attention_forward_generic(a, impl_->stream); break;
  }
}

bool CudaBackend::attention_wgmma_available() const {
  if (wgmma_available_ < 0) wgmma_available_ = cuda::attention_wgmma_available() ? 1 : 0;
  return wgmma_available_ == 1;
}

void CudaBackend::set_attention_wgmma(std::optional<cuda_plan::AttentionWgmma> passes) {
  LL_CHECK(!passes || *passes == cuda_plan::AttentionWgmma{} || attention_wgmma_available(),
           "cuda backend: the wgmma attention kernels need a compute capability 9.0 device and a build with "
           "CUDA_ARCH containing 90 (sm_90a machine code)");
  attention_wgmma_ = passes;
}

cuda_plan::AttentionWgmma CudaBackend::attention_wgmma() const {
  if (attention_wgmma_) return *attention_wgmma_;
  if (!default_wgmma_) {  // once per backend, not on every attention call
    const char* spec = std::getenv("LONGLORA_ATTENTION_WGMMA");
    default_wgmma_ = cuda_plan::parse_attention_wgmma(spec == nullptr ? "" : spec, attention_wgmma_available(),
                                                      "LONGLORA_ATTENTION_WGMMA");
  }
  return *default_wgmma_;
}

void CudaBackend::attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                                     const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                                     const AttentionMask& mask) {
  const auto s = checks::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, mask, forced_path_);
  float* delta = static_cast<float*>(impl_->get_scratch(size_t(s.batch * s.heads * s.seq_len) * sizeof(float)));
  cuda::AttentionBackwardArgs a{{s.batch, s.seq_len, s.kv_len, s.heads, s.kv_heads, s.head_dim},
                                mask,
                                dev<bf16>(q),
                                dev<bf16>(k),
                                dev<bf16>(v),
                                dev<bf16>(out),
                                dev<bf16>(dout),
                                dev<float>(lse),
                                dev<bf16>(dq),
                                dev<bf16>(dk),
                                dev<bf16>(dv),
                                delta};
  const cuda_plan::AttentionWgmma wgmma = s.head_dim == 128 ? attention_wgmma() : cuda_plan::AttentionWgmma{};
  a.dq_wgmma = wgmma.dq;
  a.dkdv_wgmma = wgmma.dkdv;
  if (s.path == cuda_plan::AttentionPath::TensorCore)
    cuda::launch_attention_backward_tc(a, impl_->stream);
  else
    cuda::launch_attention_backward_generic(a, impl_->stream);
}

// ---- SwiGLU, GELU, add -----------------------------------------------------------------------------------------------
void CudaBackend::swiglu_forward(Tensor out, const Tensor& gate, const Tensor& up) {
  const int64_t n = op_checks::swiglu_forward(kContext, out, gate, up);
  cuda::launch_swiglu_forward(dev<bf16>(out), dev<bf16>(gate), dev<bf16>(up), n, impl_->stream);
}

void CudaBackend::swiglu_backward(Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate, const Tensor& up) {
  const int64_t n = op_checks::swiglu_backward(kContext, dgate, dup, dout, gate, up);
  cuda::launch_swiglu_backward(dev<bf16>(dgate), dev<bf16>(dup), dev<bf16>(dout), dev<bf16>(gate), dev<bf16>(up), n,
                               impl_->stream);
}

void CudaBackend::split_qkv(Tensor q, Tensor k, Tensor v, const Tensor& qkv) {
  const auto d = op_checks::fused_qkv(kContext, qkv, q, k, v, "split_qkv");
  cuda::launch_split_qkv(dev<bf16>(q), dev<bf16>(k), dev<bf16>(v), dev<bf16>(qkv), d.rows, d.heads, d.head_dim,
                         impl_->stream);
}

void CudaBackend::merge_qkv(Tensor qkv, const Tensor& q, const Tensor& k, const Tensor& v) {
  const auto d = op_checks::fused_qkv(kContext, qkv, q, k, v, "merge_qkv");
  cuda::launch_merge_qkv(dev<bf16>(qkv), dev<bf16>(q), dev<bf16>(k), dev<bf16>(v), d.rows, d.heads, d.head_dim,
                         impl_->stream);
}

void CudaBackend::gelu_forward(Tensor out, const Tensor& x) {
  const int64_t n = op_checks::gelu_forward(kContext, out, x);
  cuda::launch_gelu_forward(dev<bf16>(out), dev<bf16>(x), n, impl_->stream);
}

void CudaBackend::gelu_backward(Tensor dx, const Tensor& dout, const Tensor& x) {
  const int64_t n = op_checks::gelu_backward(kContext, dx, dout, x);
  cuda::launch_gelu_backward(dev<bf16>(dx), dev<bf16>(dout), dev<bf16>(x), n, impl_->stream);
}

void CudaBackend::add(Tensor out, const Tensor& a, const Tensor& b) {
  const int64_t n = op_checks::add(kContext, out, a, b);
  cuda::launch_add(dev<bf16>(out), dev<bf16>(a), dev<bf16>(b), n, impl_->stream);
}

// ---- cross-entropy -------------------------------------------------------------------------------------------------------
void CudaBackend::cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double grad_scale,
                                bool compute_grad) {
  const auto d = checks::cross_entropy(logits, losses, targets);
  cuda::launch_cross_entropy(dev<bf16>(logits), dev<float>(losses), dev<int32_t>(targets), d.rows, d.cols, grad_scale,
                             compute_grad, impl_->stream);
}

void CudaBackend::argmax_rows(Tensor out, const Tensor& logits) {
  const auto d = op_checks::argmax_rows(kContext, out, logits);
  cuda::launch_argmax_rows(dev<int32_t>(out), dev<bf16>(logits), d.rows, d.cols, impl_->stream);
}

// ---- optimizer support ---------------------------------------------------------------------------------------------------
double CudaBackend::sum_squares(const Tensor& x) {
  const int64_t n = op_checks::sum_squares(kContext, x);
  const cuda_plan::SumSquaresPlan plan = cuda_plan::plan_sum_squares(n);
  double* buf = static_cast<double*>(impl_->get_scratch(size_t(plan.blocks + 1) * sizeof(double)));
  cuda::launch_sum_squares(buf, buf + 1, dev<float>(x), n, plan.block_elems, plan.blocks, impl_->stream);
  LL_CUDA_CHECK(cudaMemcpyAsync(impl_->host_result, buf, sizeof(double), cudaMemcpyDeviceToHost, impl_->stream));
  LL_CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
  return *impl_->host_result;
}

void CudaBackend::scale(Tensor x, double s) {
  const int64_t n = op_checks::scale(kContext, x);
  cuda::launch_scale_f32(dev<float>(x), n, s, impl_->stream);
}

void CudaBackend::adamw_step(Tensor param, Tensor master, const Tensor& grad, Tensor m, Tensor v,
                             const AdamWStep& st) {
  const int64_t n = checks::adamw_step(param, master, grad, m, v, st);
  const cuda_plan::AdamWArgs args =
      cuda_plan::make_adamw_args(st.lr, st.beta1, st.beta2, st.eps, st.weight_decay, st.step);
  const bool low = param.dtype != DType::F32;
  cuda::launch_adamw(low ? dev<bf16>(param) : nullptr, low ? nullptr : dev<float>(param),
                     master.empty() ? nullptr : dev<float>(master), dev<float>(grad), dev<float>(m), dev<float>(v), n,
                     args, impl_->stream);
}

// ---- CUDA-specific -------------------------------------------------------------------------------------------------------
void CudaBackend::fill_uniform(Tensor t, uint64_t seed, double scale) {
  LL_ASSERT(t.empty() || t.device == Device::CUDA, "fill_uniform: not a device tensor");
  LL_ASSERT(t.dtype != DType::I32, "fill_uniform: needs a floating tensor");
  cuda::launch_fill_uniform(t.data, t.dtype, t.numel(), seed, scale, impl_->stream);
}

void CudaBackend::fill(Tensor t, double value) {
  LL_ASSERT(t.empty() || t.device == Device::CUDA, "fill: not a device tensor");
  LL_ASSERT(t.dtype != DType::I32, "fill: needs a floating tensor");
  cuda::launch_fill(t.data, t.dtype, t.numel(), value, impl_->stream);
}

int64_t CudaBackend::scratch_reallocations() const { return impl_->scratch_reallocations; }
size_t CudaBackend::bytes_in_use() const { return impl_->in_use; }
size_t CudaBackend::peak_bytes_in_use() const { return impl_->peak; }
void CudaBackend::memory_info(size_t* free_bytes, size_t* total_bytes) const {
  LL_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}
std::string CudaBackend::device_description() const { return impl_->name; }
bool CudaBackend::device_memory(DeviceMemoryState* state) const {
  const Impl& m = *impl_;
  memory_info(&state->free_bytes, &state->total_bytes);
  state->in_use_bytes = m.in_use + kGemmWorkspaceBytes + m.scratch_bytes;  // arenas, cuBLASLt workspace, scratch
  state->device = m.name;
  return true;
}
size_t CudaBackend::cached_gemm_plans() const { return impl_->gemm->cached_plans(); }
void* CudaBackend::native_stream() const { return impl_->stream; }

}  // namespace ll
