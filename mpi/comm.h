// Collective communication between training ranks. One small interface, four implementations:
//   LocalComm  — one process (every collective is the identity); always available;
//   MpiComm    — MPI on host buffers (the CPU backend, and the multi-rank tests), built when mpicxx is found;
//   NcclComm   — NCCL on device buffers (CUDA backend), scalars and host buffers through MPI; built with CUDA + MPI
//                + NCCL (mpi/comm_nccl.cpp, make_nccl_comm);
//   StagedComm — device buffers over MPI, chunk by chunk through pinned host staging (mpi/comm_staged.cpp,
//                make_staged_comm): GPU ranks without NCCL, or several ranks sharing one GPU (--comm mpi).
// Every rank issues the same sequence of collectives (the ZeRO schedule is deterministic).
//
// Blocking and asynchronous forms. The blocking calls return when the result may be used by what this rank does
// next: on host buffers the data is there; on device buffers (NCCL) the work is ordered before every op enqueued
// afterwards on the backend's compute stream (the host does not wait for the GPU). The start_* forms begin a
// collective and return a request; wait(request) gives the same guarantee as the blocking call. Between start and
// wait the caller must not write the collective's buffers nor read its outputs. A collective begins after
// everything enqueued on the compute stream before the start (NCCL: an event on the compute stream, waited by
// the communication stream), so buffers written just before start_* are safe. Host implementations run the
// collective inside start_* (or, with LONGLORA_COMM_DEFER=1 in MpiComm, inside wait — the tests use it to emulate
// the worst case of asynchronous completion).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace ll {

class Backend;

// A started collective; id 0 means "already complete" (wait is a no-op).
struct CommRequest {
  uint64_t id = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;
  // This rank's index among the ranks of its node (MPI_COMM_TYPE_SHARED split), and their number: what picks
  // the rank's GPU (choose_local_device).
  virtual int local_rank() const { return 0; }
  virtual int local_size() const { return 1; }

  // In place, f32 or f64 tensors of any shape.
  virtual void all_reduce_sum(Tensor t) = 0;
  virtual double all_reduce_sum(double value) = 0;
  virtual double all_reduce_max(double value) = 0;
  // `full` is the same-shaped buffer on every rank, split into contiguous element ranges counts[r] (Σ = numel);
  // rank r receives the sum over ranks of its range in `shard` (counts[r] elements).
  virtual void reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) = 0;
  // Inverse layout: rank r contributes elements [offset_r, offset_r + counts[r]) of `full`, in place; afterwards
  // every rank holds every range. Any dtype that the implementation can move (MPI: f32/f64/i32/bf16/f16).
  virtual void all_gather_in_place(Tensor full, const std::vector<int64_t>& counts) = 0;
  virtual void broadcast(Tensor t, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank's process with `code` after printing `message` naming this rank (never returns).
  [[noreturn]] virtual void abort(int code, const std::string& message) = 0;
  // A collective that has not completed after `seconds` (a peer died or hangs) ends this rank with a message
  // naming it and the collective, which makes the launcher end the others. 0 disables the watchdog.
  virtual void set_timeout(double seconds) { (void)seconds; }

  // ---- asynchronous forms (see the top of this file) ---------------------------------------------------------
  virtual CommRequest start_all_reduce_sum(Tensor t) {
    all_reduce_sum(t);
    return {};
  }
  virtual CommRequest start_reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) {
    reduce_scatter_sum(shard, full, counts);
    return {};
  }
  virtual CommRequest start_all_gather_in_place(Tensor full, const std::vector<int64_t>& counts) {
    all_gather_in_place(full, counts);
    return {};
  }
  virtual void wait(CommRequest request) { (void)request; }
  // Whether start_* return before the collective completes (NCCL): the ZeRO code then buckets and prefetches by
  // default. Host implementations return false.
  virtual bool asynchronous() const { return false; }
};

// The base of the device communicators (NCCL, staged): device buffers are theirs; the ranks, scalar reductions,
// barrier, abort and the watchdog limit belong to the host (MPI) communicator they are built over, which must
// outlive them. Both are asynchronous (start_* returns before the collective completes).
class HostBackedComm : public Comm {
 public:
  explicit HostBackedComm(Comm& host) : host_(host) {}
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  int local_rank() const override { return host_.local_rank(); }
  int local_size() const override { return host_.local_size(); }
  bool asynchronous() const override { return true; }
  double all_reduce_sum(double v) override { return host_.all_reduce_sum(v); }
  double all_reduce_max(double v) override { return host_.all_reduce_max(v); }
  using Comm::all_reduce_sum;
  void barrier() override { host_.barrier(); }
  [[noreturn]] void abort(int code, const std::string& message) override {
    host_.abort(code, message);
    std::_Exit(code);  // not reached: the compiler cannot see that a virtual call does not return
  }
  void set_timeout(double seconds) override { host_.set_timeout(seconds); }

 protected:
  Comm& host_;
};

// Splits n elements into `parts` contiguous ranges as evenly as possible (the first n % parts get one more).
std::vector<int64_t> even_split(int64_t n, int parts);
// Start offset of range `index` of a split.
int64_t split_offset(const std::vector<int64_t>& counts, int index);
// Throws naming `op` unless `counts` is a split of `full` over `ranks`: one non-negative count per rank, Σ = numel.
void check_split(const Tensor& full, const std::vector<int64_t>& counts, int ranks, const char* op);
// The address of element `element` of `t` (host or device memory: byte arithmetic only).
char* element_ptr(const Tensor& t, int64_t element);

// The GPU of a rank: local_rank % visible_devices. Rank r of the node takes GPU r when it sees at least as many
// as the node runs ranks, device 0 when it sees one (the launcher bound one to it, or the ranks share it), and with
// fewer GPUs than ranks they share them round-robin (NCCL refuses that: choose_device_comm). Throws, naming the
// numbers and what to check, when the rank sees no GPU.
int choose_local_device(int local_rank, int local_size, int visible_devices);

std::unique_ptr<Comm> make_local_comm();
// MPI when this process was started by an MPI launcher (mpirun/srun) and the build has MPI; otherwise local.
std::unique_ptr<Comm> make_world_comm();
bool built_with_mpi();
bool built_with_nccl();
// NCCL over the ranks of `host` (an MpiComm, which must outlive the result: it bootstraps the communicator by
// broadcasting the ncclUniqueId, and carries the scalar reductions, host buffers, barriers and abort). `backend`
// must be the CUDA backend of `device` (its compute stream orders the collectives). Throws when the build has no
// NCCL.
std::unique_ptr<Comm> make_nccl_comm(Comm& host, Backend& backend, int device);

class Stager;  // mpi/stager.h
// --comm_chunk_bytes' default: the staging granularity of StagedComm.
constexpr int64_t kDefaultCommChunkBytes = int64_t(8) << 20;
// StagedComm over the ranks of `host` (an MpiComm that outlives the result; it carries every MPI call, the scalars,
// barriers, abort and the watchdog): each collective on a tensor the stager stages moves through host staging in
// chunks of at most `chunk_bytes` (the last may be shorter), pipelined (mpi/comm_staged.cpp says how).
std::unique_ptr<Comm> make_staged_comm(Comm& host, std::unique_ptr<Stager> stager, int64_t chunk_bytes);

// --comm: which communicator moves device buffers between GPU ranks.
struct DeviceCommChoice {
  bool nccl = false;  // NcclComm; otherwise StagedComm over MPI
  int device = 0;     // this rank's GPU
  std::string why;    // for the start-up line
};
// auto: NCCL when the build has it and every rank of the node has its own GPU, else the staged MPI comm; nccl:
// NCCL, an error naming --comm when the build has none or ranks would share a GPU; mpi: the staged comm. The device
// is choose_local_device's. `distinct_gpus`: how many different GPUs the node's ranks hold (distinct_gpus_on_node
// over the chosen devices' PCI addresses): every rank has its own exactly when it equals local_size. Throws naming
// --comm on a value other than auto, nccl or mpi.
DeviceCommChoice choose_device_comm(const std::string& flag, bool nccl_built, int local_rank, int local_size,
                                    int visible_devices, int distinct_gpus);
// Collective over `world`: how many different GPUs the ranks on this rank's host hold, `gpu_id` naming this rank's
// (its PCI address: the same in every process that sees that GPU).
int distinct_gpus_on_node(Comm& world, const std::string& gpu_id);
// --comm's value for ranks on `device` (cpu or cuda), before anything runs: auto, nccl or mpi; nccl is refused on
// CPU ranks (NCCL moves device buffers only; auto and mpi mean MpiComm there) and in a build without NCCL.
void check_comm_flag(const std::string& flag, const std::string& device, bool nccl_built);

}  // namespace ll
