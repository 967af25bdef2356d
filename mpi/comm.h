// Collective communication between training ranks. One small interface, two implementations today:
//   LocalComm — one process (every collective is the identity); always available;
//   MpiComm   — MPI on host buffers (the CPU backend, and the multi-rank tests), built when mpicxx is found.
// NCCL on device buffers arrives with the CUDA backend. Collectives are blocking; the ZeRO schedule calls them
// at fixed points, so every rank issues the same sequence.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace ll {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;

  // In place, f32 or f64 tensors of any shape.
  virtual void all_reduce_sum(Tensor t) = 0;
  virtual double all_reduce_sum(double value) = 0;
  virtual double all_reduce_max(double value) = 0;
  // `full` is the same-shaped buffer on every rank, split into contiguous element ranges counts[r] (Σ = numel);
  // rank r receives the sum over ranks of its range in `shard` (counts[r] elements).
  virtual void reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) = 0;
  // Inverse layout: rank r contributes elements [offset_r, offset_r + counts[r]) of `full`, in place; afterwards
  // every rank holds every range.
  virtual void all_gather_in_place(Tensor full, const std::vector<int64_t>& counts) = 0;
  virtual void broadcast(Tensor t, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank's process with `code` after printing `message` naming this rank (never returns).
  [[noreturn]] virtual void abort(int code, const std::string& message) = 0;
  // A collective that has not completed after `seconds` (a peer died or hangs) ends this rank with a message
  // naming it and the collective, which makes the launcher end the others. 0 disables the watchdog.
  virtual void set_timeout(double seconds) { (void)seconds; }
};

// Splits n elements into `parts` contiguous ranges as evenly as possible (the first n % parts get one more).
std::vector<int64_t> even_split(int64_t n, int parts);
// Start offset of range `index` of a split.
int64_t split_offset(const std::vector<int64_t>& counts, int index);

std::unique_ptr<Comm> make_local_comm();
// MPI when this process was started by an MPI launcher (mpirun/srun) and the build has MPI; otherwise local.
std::unique_ptr<Comm> make_world_comm();
bool built_with_mpi();

}  // namespace ll
