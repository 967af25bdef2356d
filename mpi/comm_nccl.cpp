// NcclComm: collectives on device buffers with NCCL, one GPU per rank; scalars, host buffers, barriers and abort go
// through the MPI communicator it was built from (which also bootstraps it: rank 0's ncclUniqueId is broadcast
// over MPI). Built only with LONGLORA_WITH_NCCL (CUDA + MPI + nccl.h; see the Makefile).
//
// Streams: every collective runs on one dedicated communication stream (created at the device's highest priority).
// start_* records an event on the backend's compute stream and makes the communication stream wait for it (so the
// collective sees everything enqueued before), enqueues the NCCL call(s), and records a completion event; wait()
// makes the compute stream wait for that event — the host never blocks. One stream keeps the NCCL calls in the
// order they were issued, which is the same on every rank.
//
// Uneven splits: ncclReduceScatter / ncclAllGather need equal counts; other splits run as grouped ncclReduce /
// ncclBroadcast calls, one per rank's range (what PyTorch does for uneven sizes).
//
// Faults: a watchdog thread polls the completion events of collectives in flight and ncclCommGetAsyncError. A
// collective still running after the timeout (a peer died or hangs), a CUDA error, or an asynchronous NCCL error
// ends this rank (exit code 3) with a message naming the rank and the collective; mpirun then ends the others.
// Destroyed during exception unwinding, or with collectives still in flight, the communicator is aborted
// (ncclCommAbort) so the GPU kernels of unfinished collectives stop and the compute stream drains. The watchdog also
// times ncclCommDestroy / ncclCommAbort, which NCCL documents as intra-node collective calls that can hang.
#ifdef LONGLORA_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda/check.cuh"
#include "cuda/cuda_backend.h"
#include "mpi/comm.h"
#include "util/error.h"

namespace ll {

namespace {

#define LL_NCCL_CHECK(comm, stmt)                                                                            \
  do {                                                                                                       \
    const ncclResult_t ll_nccl_rc_ = (stmt);                                                                 \
    if (ll_nccl_rc_ != ncclSuccess && ll_nccl_rc_ != ncclInProgress)                                         \
      ::ll::fail("NCCL call `", #stmt, "` failed at ", __FILE__, ":", __LINE__, ": ",                        \
                 ncclGetErrorString(ll_nccl_rc_), (comm) ? std::string(" (") + ncclGetLastError(comm) + ")"  \
                                                         : std::string());                                   \
  } while (0)

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    case DType::F16: return ncclFloat16;
    case DType::I32: return ncclInt32;
    default: fail("NCCL collectives support f32, f64, bf16, f16 and i32, got ", dtype_name(t));
  }
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

bool all_equal(const std::vector<int64_t>& counts) {
  for (int64_t c : counts)
    if (c != counts[0]) return false;
  return true;
}

// Runs `calls` (NCCL calls that throw on failure) between ncclGroupStart and ncclGroupEnd. A failing call still
// closes the group before the error propagates: the group is this thread's state, and left open, every later NCCL
// call of the thread (the ncclCommAbort of the unwinding path included) would be queued into a group that is never
// ended. After a failed call ncclGroupEnd returns the group's error, which is the one already being reported.
template <typename F>
void nccl_group(ncclComm_t comm, F&& calls) {
  LL_NCCL_CHECK(comm, ncclGroupStart());
  try {
    calls();
  } catch (...) {
    (void)ncclGroupEnd();
    throw;
  }
  LL_NCCL_CHECK(comm, ncclGroupEnd());
}

class NcclComm final : public HostBackedComm {
 public:
  NcclComm(Comm& host, cudaStream_t compute, int device) : HostBackedComm(host), compute_(compute), device_(device) {
    LL_CHECK(compute != nullptr, "NCCL: the CUDA backend has no compute stream");
    LL_CUDA_CHECK(cudaSetDevice(device));
    int least = 0, greatest = 0;
    LL_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    LL_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest));
    if (const char* t = std::getenv("LONGLORA_COMM_TIMEOUT_SEC")) timeout_s_ = std::atof(t);
    watchdog_ = std::thread([this] { watch(); });
    try {
      ncclUniqueId id{};
      static_assert(sizeof(id) % 4 == 0, "ncclUniqueId is broadcast as int32 words");
      if (host.rank() == 0) LL_NCCL_CHECK(nullptr, ncclGetUniqueId(&id));
      host.broadcast(Tensor(&id, DType::I32, Device::CPU, {int64_t(sizeof(id) / 4)}), 0);
      host_pending_name_ = "ncclCommInitRank";
      host_pending_since_ns_ = now_ns();
      ncclComm_t comm = nullptr;
      const ncclResult_t rc = ncclCommInitRank(&comm, host.size(), id, host.rank());
      host_pending_since_ns_ = 0;
      comm_ = comm;
      LL_CHECK(rc == ncclSuccess, "NCCL: ncclCommInitRank on rank ", host.rank(), " of ", host.size(), " (device ",
               device, ") failed: ", ncclGetErrorString(rc), " — two ranks on one GPU? (each rank needs its own; "
               "see CUDA_VISIBLE_DEVICES; --comm mpi lets ranks share one), or set NCCL_DEBUG=INFO for the transport setup");
    } catch (...) {
      shutdown(/*abort_comm=*/true);
      throw;
    }
  }
  ~NcclComm() override {
    bool unfinished = std::uncaught_exceptions() > 0;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      for (auto& [id, f] : inflight_)
        if (!f.completed && cudaEventQuery(f.done) == cudaErrorNotReady) unfinished = true;
    }
    shutdown(unfinished);
  }

  std::string name() const override { return "nccl"; }

  void all_reduce_sum(Tensor t) override {
    if (t.device == Device::CPU) return host_.all_reduce_sum(t);
    wait(start_all_reduce_sum(t));
  }
  void reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) override {
    if (full.device == Device::CPU) return host_.reduce_scatter_sum(shard, full, counts);
    wait(start_reduce_scatter_sum(shard, full, counts));
  }
  void all_gather_in_place(Tensor full, const std::vector<int64_t>& counts) override {
    if (full.device == Device::CPU) return host_.all_gather_in_place(full, counts);
    wait(start_all_gather_in_place(full, counts));
  }
  void broadcast(Tensor t, int root) override {
    if (t.device == Device::CPU) return host_.broadcast(t, root);
    check_device(t, "broadcast");
    LL_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " of ", size(), " ranks");
    wait(launch("broadcast", [&] {
      const ncclComm_t nc = comm_;
      LL_NCCL_CHECK(nc, ncclBroadcast(t.data, t.data, size_t(t.numel()), nccl_type(t.dtype), root, nc, stream_));
    }));
  }
  void set_timeout(double seconds) override {
    timeout_s_ = seconds;
    HostBackedComm::set_timeout(seconds);
  }

  CommRequest start_all_reduce_sum(Tensor t) override {
    check_device(t, "all_reduce_sum");
    LL_CHECK(t.dtype == DType::F32 || t.dtype == DType::F64, "all_reduce_sum: sums f32 or f64, got ",
             dtype_name(t.dtype));
    return launch("all_reduce_sum", [&] {
      const ncclComm_t nc = comm_;
      LL_NCCL_CHECK(nc, ncclAllReduce(t.data, t.data, size_t(t.numel()), nccl_type(t.dtype), ncclSum, nc,
                                         stream_));
    });
  }

  CommRequest start_reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) override {
    check_device(full, "reduce_scatter_sum");
    check_split(full, counts, size(), "reduce_scatter_sum");
    const int r = rank();
    LL_CHECK(shard.numel() == counts[size_t(r)] && shard.dtype == full.dtype &&
                 (shard.numel() == 0 || shard.device == Device::CUDA),
             "reduce_scatter_sum: shard of ", shard.numel(), " ", dtype_name(shard.dtype), " elements does not match "
             "this rank's ", counts[size_t(r)], " ", dtype_name(full.dtype), " elements");
    LL_CHECK(full.dtype == DType::F32 || full.dtype == DType::F64, "reduce_scatter_sum: sums f32 or f64, got ",
             dtype_name(full.dtype));
    const ncclDataType_t type = nccl_type(full.dtype);
    return launch("reduce_scatter_sum", [&] {
      const ncclComm_t nc = comm_;
      if (all_equal(counts)) {
        if (counts[0] == 0) return;
        LL_NCCL_CHECK(nc, ncclReduceScatter(full.data, shard.data, size_t(counts[0]), type, ncclSum, nc, stream_));
        return;
      }
      nccl_group(nc, [&] {
        for (int q = 0; q < size(); ++q) {
          if (counts[size_t(q)] == 0) continue;
          LL_NCCL_CHECK(nc, ncclReduce(element_ptr(full, split_offset(counts, q)), q == r ? shard.data : nullptr,
                                       size_t(counts[size_t(q)]), type, ncclSum, q, nc, stream_));
        }
      });
    });
  }

  CommRequest start_all_gather_in_place(Tensor full, const std::vector<int64_t>& counts) override {
    check_device(full, "all_gather_in_place");
    check_split(full, counts, size(), "all_gather_in_place");
    const ncclDataType_t type = nccl_type(full.dtype);
    return launch("all_gather_in_place", [&] {
      const ncclComm_t nc = comm_;
      if (all_equal(counts)) {
        if (counts[0] == 0) return;
        // In place: this rank's send buffer is its own range of the receive buffer.
        LL_NCCL_CHECK(nc, ncclAllGather(element_ptr(full, int64_t(rank()) * counts[0]), full.data,
                                        size_t(counts[0]), type, nc, stream_));
        return;
      }
      nccl_group(nc, [&] {
        for (int q = 0; q < size(); ++q) {
          if (counts[size_t(q)] == 0) continue;
          char* range = element_ptr(full, split_offset(counts, q));
          LL_NCCL_CHECK(nc, ncclBroadcast(range, range, size_t(counts[size_t(q)]), type, q, nc, stream_));
        }
      });
    });
  }

  void wait(CommRequest request) override {
    if (request.id == 0) return;
    const std::lock_guard<std::mutex> lock(mu_);
    const auto it = inflight_.find(request.id);
    LL_CHECK(it != inflight_.end() && !it->second.waited, "wait: request ", request.id,
             " is unknown or was already waited for");
    LL_CUDA_CHECK(cudaStreamWaitEvent(compute_, it->second.done, 0));
    it->second.waited = true;
    if (it->second.completed) retire(it);
  }

 private:
  struct InFlight {
    cudaEvent_t done = nullptr;
    const char* what = "";
    int64_t since_ns = 0;
    bool waited = false, completed = false;
  };

  void check_device(const Tensor& t, const char* op) const {
    LL_CHECK(t.numel() == 0 || t.device == Device::CUDA, op, ": NCCL needs device buffers (got a ",
             t.device == Device::CPU ? "host" : "non-CUDA", " tensor)");
  }

  cudaEvent_t take_event() {  // callers hold mu_
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    LL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void retire(std::map<uint64_t, InFlight>::iterator it) {  // callers hold mu_
    free_events_.push_back(it->second.done);
    inflight_.erase(it);
  }

  // Orders the collective after the compute stream's work so far, enqueues it, and registers it for wait() and
  // the watchdog. The lock is not held while NCCL enqueues: the first collective can block on the host while
  // NCCL connects the ranks, and the watchdog must still be able to time that out.
  CommRequest launch(const char* what, const std::function<void()>& enqueue) {
    LL_CHECK(comm_.load() != nullptr, "NCCL: the communicator was not created");
    cudaEvent_t ready = nullptr, done = nullptr;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      ready = take_event();
      done = take_event();
    }
    LL_CUDA_CHECK(cudaEventRecord(ready, compute_));
    LL_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    host_pending_name_ = what;
    host_pending_since_ns_ = now_ns();
    try {
      enqueue();
    } catch (...) {
      host_pending_since_ns_ = 0;
      throw;
    }
    host_pending_since_ns_ = 0;
    LL_CUDA_CHECK(cudaEventRecord(done, stream_));
    const std::lock_guard<std::mutex> lock(mu_);
    free_events_.push_back(ready);  // the stream wait above captured it; re-recording it later does not matter
    const uint64_t id = ++next_id_;
    inflight_[id] = InFlight{done, what, now_ns(), false, false};
    return {id};
  }

  [[noreturn]] void fatal(const std::string& message) {
    std::fprintf(stderr, "rank %d of %d: %s; ending this rank (LONGLORA_COMM_TIMEOUT_SEC / --comm_timeout_sec sets "
                 "the limit)\n", rank(), size(), message.c_str());
    std::fflush(stderr);
    std::_Exit(3);  // mpirun ends the other ranks; MPI_Abort is not allowed from this thread
  }

  void watch() {
    cudaSetDevice(device_);
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const double limit = timeout_s_;
      const int64_t now = now_ns();
      const int64_t host_since = host_pending_since_ns_;
      if (host_since && limit > 0 && double(now - host_since) >= limit * 1e9)
        fatal(std::string("`") + host_pending_name_.load() + "` did not complete within " + seconds(limit) +
              " s — a peer rank failed or hangs");
      {
        const std::lock_guard<std::mutex> lock(mu_);
        for (auto it = inflight_.begin(); it != inflight_.end();) {
          InFlight& f = it->second;
          if (!f.completed) {
            const cudaError_t q = cudaEventQuery(f.done);
            if (q == cudaSuccess) {
              f.completed = true;
            } else if (q != cudaErrorNotReady) {
              cudaGetLastError();
              fatal(std::string("CUDA error while collective `") + f.what + "` ran: " + cudaGetErrorName(q) + " (" +
                    cudaGetErrorString(q) + ")");
            } else if (limit > 0 && double(now - f.since_ns) >= limit * 1e9) {
              fatal(std::string("collective `") + f.what + "` did not complete within " + seconds(limit) +
                    " s — a peer rank failed or hangs");
            }
          }
          if (f.completed && f.waited) {
            free_events_.push_back(f.done);
            it = inflight_.erase(it);
          } else {
            ++it;
          }
        }
      }
      {
        const std::lock_guard<std::mutex> lock(comm_mu_);  // shutdown() takes the communicator under it
        if (ncclComm_t comm = comm_.load()) {
          ncclResult_t async = ncclSuccess;
          if (ncclCommGetAsyncError(comm, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress)
            fatal(std::string("NCCL reported an asynchronous error: ") + ncclGetErrorString(async) + " (" +
                  ncclGetLastError(comm) + ")");
        }
      }
    }
  }

  // Never throws (destructor and constructor-failure path). A clean shutdown drains the communication stream with
  // the watchdog still watching. ncclCommDestroy and ncclCommAbort are intra-node collective calls (NCCL: all ranks
  // on the node should call them, else they may hang), so the watchdog keeps watching them too, as a host-side wait
  // (a peer that never gets there ends this rank after the timeout instead of hanging it); it stops touching the
  // communicator once shutdown has taken it (under comm_mu_), and is stopped after.
  void shutdown(bool abort_comm) {
    if (!abort_comm && stream_) cudaStreamSynchronize(stream_);
    ncclComm_t comm = nullptr;
    {
      const std::lock_guard<std::mutex> lock(comm_mu_);
      comm = comm_.exchange(nullptr);
    }
    if (comm) {
      host_pending_name_ = abort_comm ? "ncclCommAbort" : "ncclCommDestroy";
      host_pending_since_ns_ = now_ns();
      if (abort_comm) ncclCommAbort(comm);  // stops the kernels of unfinished collectives; their events complete
      else ncclCommDestroy(comm);
      host_pending_since_ns_ = 0;
    }
    stop_ = true;
    if (watchdog_.joinable()) watchdog_.join();
    if (stream_) cudaStreamSynchronize(stream_);
    for (auto& [id, f] : inflight_) cudaEventDestroy(f.done);
    inflight_.clear();
    for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
    free_events_.clear();
    if (stream_) cudaStreamDestroy(stream_);
    stream_ = nullptr;
    cudaGetLastError();
  }

  cudaStream_t compute_ = nullptr, stream_ = nullptr;
  int device_ = 0;
  std::atomic<ncclComm_t> comm_{nullptr};
  std::mutex comm_mu_;  // the watchdog's ncclCommGetAsyncError against shutdown's destroy/abort
  std::mutex mu_;
  std::map<uint64_t, InFlight> inflight_;
  std::vector<cudaEvent_t> free_events_;
  uint64_t next_id_ = 0;
  std::atomic<double> timeout_s_{600.0};
  std::atomic<int64_t> host_pending_since_ns_{0};
  std::atomic<const char*> host_pending_name_{""};
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
};

}  // namespace

bool built_with_nccl() { return true; }

std::unique_ptr<Comm> make_nccl_comm(Comm& host, Backend& backend, int device) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  LL_CHECK(cuda != nullptr, "NCCL collectives need the CUDA backend, got `", backend.name(), "`");
  LL_CHECK(host.size() >= 1, "NCCL: the host communicator has no ranks");
  return std::make_unique<NcclComm>(host, static_cast<cudaStream_t>(cuda->native_stream()), device);
}

}  // namespace ll
#endif  // LONGLORA_WITH_NCCL
