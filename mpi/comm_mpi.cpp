// MpiComm: collectives on host buffers with MPI (one process per rank). Built only with LONGLORA_WITH_MPI.
#ifdef LONGLORA_WITH_MPI
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "mpi/comm.h"
#include "util/error.h"

namespace ll {

namespace {

#define LL_MPI_CHECK(stmt)                                                                       \
  do {                                                                                           \
    const int ll_mpi_rc_ = (stmt);                                                               \
    if (ll_mpi_rc_ != MPI_SUCCESS) {                                                             \
      char ll_msg_[MPI_MAX_ERROR_STRING];                                                        \
      int ll_len_ = 0;                                                                           \
      MPI_Error_string(ll_mpi_rc_, ll_msg_, &ll_len_);                                           \
      ::ll::fail("MPI call `", #stmt, "` failed at ", __FILE__, ":", __LINE__, ": ", ll_msg_);   \
    }                                                                                            \
  } while (0)

// `reduce`: the type is summed (16-bit floats can only be moved: gathers and broadcasts).
MPI_Datatype mpi_type(DType t, bool reduce = true) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
    case DType::BF16:
    case DType::F16:
      if (!reduce) return MPI_UINT16_T;
      [[fallthrough]];
    default:
      fail("MPI collectives on host buffers ", reduce ? "reduce f32, f64 and i32" : "move f32, f64, i32, bf16 and f16",
           ", got ", dtype_name(t));
  }
}

// LONGLORA_COMM_DEFER=1: the start_* forms run their collective only in wait() — the latest moment an
// asynchronous implementation may complete it. A caller that reads a result before waiting, or writes an input
// between start and wait, then computes wrong values, which the multi-rank tests detect on CPU ranks.
bool defer_requested() {
  const char* v = std::getenv("LONGLORA_COMM_DEFER");
  return v && *v && std::string(v) != "0";
}

std::vector<int> as_int(const std::vector<int64_t>& v, const char* what) {
  std::vector<int> out;
  for (int64_t x : v) {
    LL_CHECK(x >= 0 && x <= INT32_MAX, what, ": count ", x, " exceeds MPI's int range");
    out.push_back(int(x));
  }
  return out;
}

class MpiComm final : public Comm {
 public:
  MpiComm() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      LL_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      owns_init_ = true;
    }
    // Errors come back as codes (and become ll::Error) instead of MPI's default abort without context.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // The ranks sharing this node's memory: the local rank picks the GPU.
    MPI_Comm node = MPI_COMM_NULL;
    LL_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
    if (const char* t = std::getenv("LONGLORA_COMM_TIMEOUT_SEC")) timeout_s_ = std::atof(t);
    watchdog_ = std::thread([this] { watch(); });
  }
  ~MpiComm() override {
    stop_ = true;
    watchdog_.join();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_init_ && !finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  void all_reduce_sum(Tensor t) override {
    const Pending pending(this, "all_reduce_sum");
    LL_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data, int(t.numel()), mpi_type(t.dtype), MPI_SUM, MPI_COMM_WORLD));
  }
  double all_reduce_sum(double v) override {
    const Pending pending(this, "all_reduce_sum");
    double out = 0;
    LL_MPI_CHECK(MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    return out;
  }
  double all_reduce_max(double v) override {
    const Pending pending(this, "all_reduce_max");
    double out = 0;
    LL_MPI_CHECK(MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    return out;
  }
  void reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) override {
    const Pending pending(this, "reduce_scatter_sum");
    LL_CHECK(int(counts.size()) == size_ && shard.numel() == counts[rank_] && shard.dtype == full.dtype,
             "reduce_scatter_sum: shard of ", shard.numel(), " elements does not match the split");
    const std::vector<int> c = as_int(counts, "reduce_scatter_sum");
    LL_MPI_CHECK(MPI_Reduce_scatter(full.data, shard.data, c.data(), mpi_type(full.dtype), MPI_SUM, MPI_COMM_WORLD));
  }
  void all_gather_in_place(Tensor full, const std::vector<int64_t>& counts) override {
    const Pending pending(this, "all_gather_in_place");
    LL_CHECK(int(counts.size()) == size_, "all_gather_in_place: split has ", counts.size(), " ranges for ", size_,
             " ranks");
    const std::vector<int> c = as_int(counts, "all_gather_in_place");
    std::vector<int> displs(size_, 0);
    for (int r = 1; r < size_; ++r) displs[r] = displs[r - 1] + c[r - 1];
    LL_MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, full.data, c.data(), displs.data(),
                                mpi_type(full.dtype, false), MPI_COMM_WORLD));
  }
  void broadcast(Tensor t, int root) override {
    const Pending pending(this, "broadcast");
    LL_MPI_CHECK(MPI_Bcast(t.data, int(t.numel()), mpi_type(t.dtype, false), root, MPI_COMM_WORLD));
  }

  // Synchronous (MPI_THREAD_FUNNELED gives no progress outside MPI calls), or deferred to wait() for the tests.
  CommRequest start_all_reduce_sum(Tensor t) override {
    return run_or_defer([this, t] { all_reduce_sum(t); });
  }
  CommRequest start_reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) override {
    return run_or_defer([this, shard, full, counts] { reduce_scatter_sum(shard, full, counts); });
  }
  CommRequest start_all_gather_in_place(Tensor full, const std::vector<int64_t>& counts) override {
    return run_or_defer([this, full, counts] { all_gather_in_place(full, counts); });
  }
  void wait(CommRequest request) override {
    if (request.id == 0) return;
    const auto it = deferred_.find(request.id);
    LL_CHECK(it != deferred_.end(), "wait: request ", request.id, " is unknown or was already waited for");
    const std::function<void()> run = std::move(it->second);
    deferred_.erase(it);
    run();
  }
  void barrier() override {
    const Pending pending(this, "barrier");
    LL_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  }
  [[noreturn]] void abort(int code, const std::string& message) override {
    std::fprintf(stderr, "rank %d of %d failed: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

  void set_timeout(double seconds) override { timeout_s_ = seconds; }

 private:
  CommRequest run_or_defer(std::function<void()> run) {
    if (!defer_requested()) {
      run();
      return {};
    }
    deferred_[++next_request_] = std::move(run);
    return {next_request_};
  }

  // Marks a collective in flight for the watchdog.
  struct Pending {
    Pending(MpiComm* c, const char* what) : comm(c) {
      comm->pending_name_ = what;
      comm->pending_since_ns_ = now_ns();
    }
    ~Pending() { comm->pending_since_ns_ = 0; }
    MpiComm* comm;
  };
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void watch() {
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      const int64_t since = pending_since_ns_;
      const double limit = timeout_s_;
      if (since == 0 || limit <= 0 || double(now_ns() - since) < limit * 1e9) continue;
      // Exiting non-zero makes the launcher (mpirun) end every other rank; MPI_Abort is not allowed from here.
      std::fprintf(stderr,
                   "rank %d of %d: collective `%s` did not complete within %g s — a peer rank failed or hangs; "
                   "ending this rank (LONGLORA_COMM_TIMEOUT_SEC / --comm_timeout_sec sets the limit)\n",
                   rank_, size_, pending_name_.load(), limit);
      std::fflush(stderr);
      std::_Exit(3);
    }
  }

  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool owns_init_ = false;
  std::map<uint64_t, std::function<void()>> deferred_;
  uint64_t next_request_ = 0;
  std::atomic<double> timeout_s_{600.0};
  std::atomic<int64_t> pending_since_ns_{0};
  std::atomic<const char*> pending_name_{""};
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm() { return std::make_unique<MpiComm>(); }

}  // namespace ll
#endif  // LONGLORA_WITH_MPI
