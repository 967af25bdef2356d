// The CUDA stager of StagedComm (mpi/stager.h): pinned staging slots, device→host copies on one copy stream and
// host→device copies on another (the two directions overlap on the GPU's two copy engines while the host runs
// MPI), ordered against the backend's compute stream with events.
#include <cuda_runtime.h>

#include <map>
#include <vector>

#include "cuda/check.cuh"
#include "cuda/cuda_backend.h"
#include "mpi/stager.h"

namespace ll {

namespace {

class CudaStager final : public Stager {
 public:
  CudaStager(cudaStream_t compute, int device) : compute_(compute), device_(device) {
    LL_CHECK(compute != nullptr, "StagedComm: the CUDA backend has no compute stream");
    LL_CUDA_CHECK(cudaSetDevice(device));
    LL_CUDA_CHECK(cudaStreamCreateWithFlags(&d2h_, cudaStreamNonBlocking));
    LL_CUDA_CHECK(cudaStreamCreateWithFlags(&h2d_, cudaStreamNonBlocking));
    LL_CUDA_CHECK(cudaEventCreateWithFlags(&end_, cudaEventDisableTiming));
    LL_CUDA_CHECK(cudaEventCreateWithFlags(&end_in_, cudaEventDisableTiming));
  }
  ~CudaStager() override {
    // Never throws: the copies still enqueued finish before the memory they use goes away.
    if (d2h_) cudaStreamSynchronize(d2h_);
    if (h2d_) cudaStreamSynchronize(h2d_);
    for (Slot& s : slots_) {
      cudaEventDestroy(s.in);
      cudaEventDestroy(s.out);
    }
    for (auto& [id, e] : marks_) cudaEventDestroy(e);
    for (cudaEvent_t e : free_) cudaEventDestroy(e);
    cudaEventDestroy(end_);
    cudaEventDestroy(end_in_);
    if (host_) cudaFreeHost(host_);
    cudaStreamDestroy(d2h_);
    cudaStreamDestroy(h2d_);
    cudaGetLastError();
  }

  std::string name() const override { return "cuda"; }
  bool stages(const Tensor& t) const override { return t.device == Device::CUDA; }
  void allocate(int count, size_t bytes) override {
    LL_CHECK(host_ == nullptr, "StagedComm: staging allocated twice");
    LL_CUDA_CHECK(cudaSetDevice(device_));
    const cudaError_t rc = cudaHostAlloc(&host_, size_t(count) * bytes, cudaHostAllocDefault);
    LL_CHECK(rc == cudaSuccess, "StagedComm: cannot pin ", count, " staging buffers of ", bytes, " bytes (",
             cudaGetErrorString(rc), "); lower --comm_chunk_bytes");
    bytes_ = bytes;
    slots_.resize(size_t(count));
    for (Slot& s : slots_) {
      LL_CUDA_CHECK(cudaEventCreateWithFlags(&s.in, cudaEventDisableTiming));
      LL_CUDA_CHECK(cudaEventCreateWithFlags(&s.out, cudaEventDisableTiming));
    }
  }
  char* slot(int index) override { return static_cast<char*>(host_) + size_t(index) * bytes_; }

  uint64_t mark() override {
    cudaEvent_t e = nullptr;
    if (!free_.empty()) {
      e = free_.back();
      free_.pop_back();
    } else {
      LL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
    LL_CUDA_CHECK(cudaEventRecord(e, compute_));
    marks_[++next_mark_] = e;
    return next_mark_;
  }
  void begin(uint64_t id) override {
    const auto it = marks_.find(id);
    LL_CHECK(it != marks_.end(), "StagedComm: unknown compute-stream mark ", id);
    LL_CUDA_CHECK(cudaStreamWaitEvent(d2h_, it->second, 0));
    LL_CUDA_CHECK(cudaStreamWaitEvent(h2d_, it->second, 0));
    free_.push_back(it->second);  // the waits captured it; recording it again later does not matter
    marks_.erase(it);
  }

  // Each slot's events are recorded right after its own copies (the last record covers all of them, in stream
  // order), never later: a record at wait time would also capture the copies StagedComm queued since for the next
  // chunks, and the host would wait for those too, losing the pipeline's overlap.
  void to_host(int index, size_t offset, const void* src, size_t bytes) override {
    Slot& s = slots_.at(size_t(index));
    if (s.out_pending) {  // the slot's copies out read it before this copy overwrites it
      LL_CUDA_CHECK(cudaStreamWaitEvent(d2h_, s.out, 0));
      s.out_pending = false;
    }
    LL_CUDA_CHECK(cudaMemcpyAsync(slot(index) + offset, src, bytes, cudaMemcpyDeviceToHost, d2h_));
    LL_CUDA_CHECK(cudaEventRecord(s.in, d2h_));
    s.in_pending = true;
  }
  void wait_host(int index) override {
    Slot& s = slots_.at(size_t(index));
    if (s.out_pending) {  // no copy in since the copies out: the host's MPI must not overwrite what they still read
      LL_CUDA_CHECK(cudaEventSynchronize(s.out));
      s.out_pending = false;
    }
    if (!s.in_pending) return;
    LL_CUDA_CHECK(cudaEventSynchronize(s.in));
    s.in_pending = false;
  }
  void to_device(void* dst, int index, size_t offset, size_t bytes) override {
    Slot& s = slots_.at(size_t(index));
    LL_CUDA_CHECK(cudaMemcpyAsync(dst, slot(index) + offset, bytes, cudaMemcpyHostToDevice, h2d_));
    LL_CUDA_CHECK(cudaEventRecord(s.out, h2d_));
    s.out_pending = true;
  }
  void end() override {
    // The copies in were waited for by the host; the compute stream still waits for both streams (cheap), so a
    // later write to a buffer never races a copy.
    LL_CUDA_CHECK(cudaEventRecord(end_, h2d_));
    LL_CUDA_CHECK(cudaStreamWaitEvent(compute_, end_, 0));
    LL_CUDA_CHECK(cudaEventRecord(end_in_, d2h_));
    LL_CUDA_CHECK(cudaStreamWaitEvent(compute_, end_in_, 0));
  }

 private:
  struct Slot {
    cudaEvent_t in = nullptr, out = nullptr;
    bool in_pending = false, out_pending = false;
  };
  cudaStream_t compute_ = nullptr, d2h_ = nullptr, h2d_ = nullptr;
  int device_ = 0;
  void* host_ = nullptr;
  size_t bytes_ = 0;
  std::vector<Slot> slots_;
  std::map<uint64_t, cudaEvent_t> marks_;
  std::vector<cudaEvent_t> free_;
  uint64_t next_mark_ = 0;
  cudaEvent_t end_ = nullptr, end_in_ = nullptr;
};

}  // namespace

std::unique_ptr<Stager> make_cuda_stager(Backend& backend, int device) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  LL_CHECK(cuda != nullptr, "StagedComm's CUDA copies need the CUDA backend, got `", backend.name(), "`");
  return std::make_unique<CudaStager>(static_cast<cudaStream_t>(cuda->native_stream()), device);
}

}  // namespace ll
