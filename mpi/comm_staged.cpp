// StagedComm: collectives on a rank's device buffers over an MPI communicator, chunk by chunk through host staging
// (mpi/stager.h moves the chunks; the CUDA stager is cuda/cuda_stager.cu, the host stager below). For GPU ranks
// without NCCL, or several ranks sharing one GPU (NCCL refuses that): --comm mpi.
//
// Chunks. An all-reduce or broadcast is cut into ranges of chunk_bytes. A reduce-scatter or all-gather is cut into
// rounds: round j takes piece j (at most chunk_bytes / ranks) of every rank's range, packed back to back in the
// staging slot, and runs the host collective on them with the pieces' counts — so every round is itself a
// reduce-scatter / all-gather with an uneven split, and a rank whose range is empty (or used up) contributes zero.
//
// Pipeline (three staging slots, used round-robin across collectives): while the host runs MPI on chunk i, the
// device→host copy of chunk i+1 and the host→device copy of chunk i−1 are in flight (the CUDA stager's two copy
// streams). A slot is refilled only after its copies out (the stager orders that), so three slots suffice.
//
// Completion at wait. start_* records a mark on the compute stream and queues the collective; wait(request) runs
// every queued collective up to that one, in the order they were started (as NCCL's single stream would), then makes
// the compute stream wait for the copies back. The MPI calls thus stay on the calling thread: MpiComm initialises
// MPI_THREAD_FUNNELED (only the main thread may call MPI), and a progress thread would need MPI_THREAD_MULTIPLE and
// its own communicator to keep the collectives in the same order on every rank. The host does not wait at start_*,
// so the GPU keeps running what was enqueued before while the host stages and reduces at wait; the copies of a
// collective wait only for the compute work enqueued before its start. Collectives not yet waited for when the
// communicator is destroyed are dropped (every rank drops the same ones).
//
// Scalars, barriers, abort and the watchdog are the host communicator's (a peer dying mid-collective leaves this
// rank in an MPI call, which MpiComm's watchdog ends after --comm_timeout_sec).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "mpi/comm.h"
#include "mpi/stager.h"
#include "util/error.h"

namespace ll {

namespace {

constexpr int kSlots = 3;  // MPI on one chunk, the next chunk's copy in, the previous chunk's copy out

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// memcpy. Lazy: every copy runs at the latest moment the CUDA stager's ordering allows — a copy in when the host
// waits for its slot (after the copies out of that slot enqueued before it), a copy out when its slot is refilled
// or at end() — so a pipeline that reads a slot before waiting for it, or overwrites a slot whose copy out is still
// pending, computes wrong values on CPU ranks as it would on a GPU.
class HostStager final : public Stager {
 public:
  explicit HostStager(bool lazy) : lazy_(lazy) {}
  std::string name() const override { return lazy_ ? "host (lazy)" : "host"; }
  bool stages(const Tensor&) const override { return true; }
  void allocate(int count, size_t bytes) override {
    slots_.assign(size_t(count), std::vector<char>(bytes));
  }
  char* slot(int index) override { return slots_.at(size_t(index)).data(); }
  uint64_t mark() override { return 0; }
  void begin(uint64_t) override {}
  void to_host(int index, size_t offset, const void* src, size_t bytes) override {
    if (!lazy_) return void(std::memcpy(slot(index) + offset, src, bytes));
    drain_out(index);  // the copies out of this slot enqueued so far come first (the CUDA stager orders them so)
    in_.push_back({index, offset, const_cast<char*>(static_cast<const char*>(src)), bytes});
  }
  void wait_host(int index) override {
    drain_out(index);
    for (size_t i = in_.size(); i-- > 0;)
      if (in_[i].slot == index) {
        for (size_t k = 0; k <= i; ++k) std::memcpy(slot(in_[k].slot) + in_[k].offset, in_[k].buffer, in_[k].bytes);
        in_.erase(in_.begin(), in_.begin() + std::ptrdiff_t(i + 1));
        return;
      }
  }
  void to_device(void* dst, int index, size_t offset, size_t bytes) override {
    if (!lazy_) return void(std::memcpy(dst, slot(index) + offset, bytes));
    out_.push_back({index, offset, static_cast<char*>(dst), bytes});
  }
  void end() override {
    for (int s = 0; s < int(slots_.size()); ++s) wait_host(s);
    run_out(out_.size());
  }

 private:
  struct Copy {
    int slot;
    size_t offset;
    char* buffer;
    size_t bytes;
  };
  void drain_out(int index) {  // every copy out up to the last one out of slot `index`, in order
    for (size_t i = out_.size(); i-- > 0;)
      if (out_[i].slot == index) return run_out(i + 1);
  }
  void run_out(size_t count) {  // the first `count` copies out, in order
    for (size_t k = 0; k < count; ++k) std::memcpy(out_[k].buffer, slot(out_[k].slot) + out_[k].offset, out_[k].bytes);
    out_.erase(out_.begin(), out_.begin() + std::ptrdiff_t(count));
  }
  bool lazy_;
  std::vector<std::vector<char>> slots_;
  std::vector<Copy> in_, out_;  // lazy: enqueued and not yet run, in stream order
};

// One copy between a rank's buffer and a staging slot.
struct Piece {
  char* buffer;
  size_t slot_offset, bytes;
};

// One chunk: what goes to host, the host collective on the slot, what comes back.
struct Chunk {
  std::vector<Piece> in, out;
  std::function<void(char* slot)> run;
};

class StagedComm final : public HostBackedComm {
 public:
  StagedComm(Comm& host, std::unique_ptr<Stager> stager, int64_t chunk_bytes)
      : HostBackedComm(host), stager_(std::move(stager)), chunk_bytes_(size_t(chunk_bytes)) {
    LL_CHECK(chunk_bytes >= 1, "--comm_chunk_bytes: expected at least 1 byte, got ", chunk_bytes);
    LL_CHECK(stager_ != nullptr, "StagedComm: no stager");
    // A round of a reduce-scatter / all-gather packs at most max(chunk, ranks) elements, then the rank's piece.
    const size_t n = size_t(host.size());
    full_cap_ = round_up(std::max(chunk_bytes_, n * 8), 64);
    stager_->allocate(kSlots, full_cap_ + round_up(std::max(chunk_bytes_ / n, size_t(8)), 64));
  }

  std::string name() const override { return "mpi-staged"; }

  void all_reduce_sum(Tensor t) override { wait(start_all_reduce_sum(t)); }
  void reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) override {
    wait(start_reduce_scatter_sum(shard, full, counts));
  }
  void all_gather_in_place(Tensor full, const std::vector<int64_t>& counts) override {
    wait(start_all_gather_in_place(full, counts));
  }
  void broadcast(Tensor t, int root) override {
    if (!stager_->stages(t)) return host_.broadcast(t, root);
    LL_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " of ", size(), " ranks");
    wait(queue([this, t, root] {
      std::vector<Chunk> chunks;
      for_ranges(t.numel(), t.dtype, [&](int64_t begin, int64_t count) {
        const Piece p{element_ptr(t, begin), 0, size_t(count) * dtype_size(t.dtype)};
        Chunk c;
        (rank() == root ? c.in : c.out).push_back(p);
        c.run = [this, t, count, root](char* slot) {
          host_.broadcast(Tensor(slot, t.dtype, Device::CPU, {count}), root);
        };
        chunks.push_back(std::move(c));
      });
      return chunks;
    }));
  }

  CommRequest start_all_reduce_sum(Tensor t) override {
    if (!stager_->stages(t)) return host_.all_reduce_sum(t), CommRequest{};
    LL_CHECK(t.dtype == DType::F32 || t.dtype == DType::F64, "all_reduce_sum: sums f32 or f64, got ",
             dtype_name(t.dtype));
    return queue([this, t] {
      std::vector<Chunk> chunks;
      for_ranges(t.numel(), t.dtype, [&](int64_t begin, int64_t count) {
        const Piece p{element_ptr(t, begin), 0, size_t(count) * dtype_size(t.dtype)};
        chunks.push_back({{p}, {p}, [this, t, count](char* slot) {
                            host_.all_reduce_sum(Tensor(slot, t.dtype, Device::CPU, {count}));
                          }});
      });
      return chunks;
    });
  }

  CommRequest start_reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) override {
    if (!stager_->stages(full)) return host_.reduce_scatter_sum(shard, full, counts), CommRequest{};
    check_split(full, counts, size(), "reduce_scatter_sum");
    LL_CHECK(shard.numel() == counts[size_t(rank())] && shard.dtype == full.dtype, "reduce_scatter_sum: shard of ",
             shard.numel(), " ", dtype_name(shard.dtype), " elements does not match this rank's ",
             counts[size_t(rank())], " ", dtype_name(full.dtype), " elements");
    LL_CHECK(full.dtype == DType::F32 || full.dtype == DType::F64, "reduce_scatter_sum: sums f32 or f64, got ",
             dtype_name(full.dtype));
    return queue([this, shard, full, counts] {
      const size_t es = dtype_size(full.dtype);
      return rounds(full, counts, [&](const std::vector<int64_t>& piece, const std::vector<int64_t>& from,
                                      const std::vector<size_t>& packed, int64_t total, Chunk& c) {
        const int r = rank();
        for (int q = 0; q < size(); ++q) {
          const size_t i = size_t(q);
          if (piece[i] > 0) c.in.push_back({element_ptr(full, from[i]), packed[i], size_t(piece[i]) * es});
        }
        const int64_t mine = piece[size_t(r)];
        const int64_t into_shard = from[size_t(r)] - split_offset(counts, r);
        if (mine > 0) c.out.push_back({element_ptr(shard, into_shard), full_cap_, size_t(mine) * es});
        c.run = [this, dtype = full.dtype, piece, total, mine](char* slot) {
          host_.reduce_scatter_sum(Tensor(slot + full_cap_, dtype, Device::CPU, {mine}),
                                   Tensor(slot, dtype, Device::CPU, {total}), piece);
        };
      });
    });
  }

  CommRequest start_all_gather_in_place(Tensor full, const std::vector<int64_t>& counts) override {
    if (!stager_->stages(full)) return host_.all_gather_in_place(full, counts), CommRequest{};
    check_split(full, counts, size(), "all_gather_in_place");
    return queue([this, full, counts] {
      const size_t es = dtype_size(full.dtype);
      return rounds(full, counts, [&](const std::vector<int64_t>& piece, const std::vector<int64_t>& from,
                                      const std::vector<size_t>& packed, int64_t total, Chunk& c) {
        for (int q = 0; q < size(); ++q) {
          if (piece[size_t(q)] == 0) continue;
          const Piece p{element_ptr(full, from[size_t(q)]), packed[size_t(q)], size_t(piece[size_t(q)]) * es};
          (q == rank() ? c.in : c.out).push_back(p);
        }
        c.run = [this, dtype = full.dtype, piece, total](char* slot) {
          host_.all_gather_in_place(Tensor(slot, dtype, Device::CPU, {total}), piece);
        };
      });
    });
  }

  void wait(CommRequest request) override {
    if (request.id == 0) return;
    if (done_.erase(request.id)) return;  // completed by the wait of a later collective
    LL_CHECK(queued_.count(request.id), "wait: request ", request.id, " is unknown or was already waited for");
    while (!queued_.empty() && queued_.begin()->first <= request.id) {
      const auto it = queued_.begin();
      Queued q = std::move(it->second);
      const uint64_t id = it->first;
      queued_.erase(it);
      stager_->begin(q.mark);
      pipeline(q.plan());
      if (id != request.id) done_.insert(id);
    }
    stager_->end();
  }

 private:
  struct Queued {
    uint64_t mark;
    std::function<std::vector<Chunk>()> plan;  // the chunks, built when the collective runs
  };

  CommRequest queue(std::function<std::vector<Chunk>()> plan) {
    const uint64_t id = ++next_id_;
    queued_[id] = Queued{stager_->mark(), std::move(plan)};
    return {id};
  }

  size_t chunk_elems(DType dtype) const { return std::max<size_t>(1, chunk_bytes_ / dtype_size(dtype)); }

  // Calls f(begin, count) for consecutive ranges of at most one chunk covering n elements.
  template <typename F>
  void for_ranges(int64_t n, DType dtype, F&& f) const {
    const int64_t step = int64_t(chunk_elems(dtype));
    for (int64_t b = 0; b < n; b += step) f(b, std::min(step, n - b));
  }

  // The rounds of a reduce-scatter / all-gather over `counts`: f(piece counts, their first elements in `full`, their
  // byte offsets in the slot, the round's element total, the chunk to fill) once per round.
  template <typename F>
  std::vector<Chunk> rounds(const Tensor& full, const std::vector<int64_t>& counts, F&& f) const {
    const int n = size();
    const int64_t per_rank = int64_t(std::max<size_t>(1, chunk_elems(full.dtype) / size_t(n)));
    int64_t longest = 0;
    for (int64_t c : counts) longest = std::max(longest, c);
    std::vector<Chunk> chunks;
    for (int64_t begin = 0; begin < longest; begin += per_rank) {
      std::vector<int64_t> piece(static_cast<size_t>(n)), from(static_cast<size_t>(n));
      std::vector<size_t> packed(static_cast<size_t>(n));
      int64_t total = 0;
      for (int q = 0; q < n; ++q) {
        piece[size_t(q)] = std::clamp<int64_t>(counts[size_t(q)] - begin, 0, per_rank);
        from[size_t(q)] = split_offset(counts, q) + begin;
        packed[size_t(q)] = size_t(total) * dtype_size(full.dtype);
        total += piece[size_t(q)];
      }
      LL_ASSERT(size_t(total) * dtype_size(full.dtype) <= full_cap_, "StagedComm: a round exceeds its slot");
      Chunk c;
      f(piece, from, packed, total, c);
      chunks.push_back(std::move(c));
    }
    return chunks;
  }

  // Chunk i's MPI runs while chunk i+1 is copied in and chunk i−1 copied out.
  void pipeline(const std::vector<Chunk>& chunks) {
    const auto send = [&](size_t k) {
      for (const Piece& p : chunks[k].in) stager_->to_host(slot_of(k), p.slot_offset, p.buffer, p.bytes);
    };
    if (!chunks.empty()) send(0);
    for (size_t k = 0; k < chunks.size(); ++k) {
      if (k + 1 < chunks.size()) send(k + 1);
      const int s = slot_of(k);
      stager_->wait_host(s);
      chunks[k].run(stager_->slot(s));
      for (const Piece& p : chunks[k].out) stager_->to_device(p.buffer, s, p.slot_offset, p.bytes);
    }
    next_slot_ = slot_of(chunks.size());
  }
  int slot_of(size_t k) const { return int((next_slot_ + k) % kSlots); }


  std::unique_ptr<Stager> stager_;
  size_t chunk_bytes_ = 0, full_cap_ = 0;
  std::map<uint64_t, Queued> queued_;
  std::set<uint64_t> done_;
  uint64_t next_id_ = 0;
  size_t next_slot_ = 0;
};

}  // namespace

std::unique_ptr<Stager> make_host_stager(bool lazy) { return std::make_unique<HostStager>(lazy); }

std::unique_ptr<Comm> make_staged_comm(Comm& host, std::unique_ptr<Stager> stager, int64_t chunk_bytes) {
  return std::make_unique<StagedComm>(host, std::move(stager), chunk_bytes);
}

#ifndef LONGLORA_WITH_CUDA
std::unique_ptr<Stager> make_cuda_stager(Backend&, int) {
  fail("--comm mpi with --device cuda stages device buffers through CUDA copies, and this build has no CUDA");
}
#endif

}  // namespace ll
