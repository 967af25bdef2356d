// How StagedComm (mpi/comm_staged.cpp) moves the chunks of a collective between a rank's buffers and host staging
// memory. Two implementations: the CUDA stager (cuda/cuda_stager.cu: pinned staging, cudaMemcpyAsync on two copy
// streams, events against the backend's compute stream) and the host stager (memcpy; every tensor is staged), which
// lets the CPU-rank tests run StagedComm's chunking and pipelining — the same code — over MPI without a GPU.
//
// Ordering, as the CUDA stager implements it: copies into a slot (to_host) wait for the copies out of that slot
// enqueued before (to_device), so StagedComm can reuse a slot as soon as it has enqueued its copies out; the host
// reads or writes a slot (MPI) only after wait_host, which also waits for the slot's earlier copies out (a rank that
// only receives into a slot copies nothing in first); everything is ordered after a mark taken on the compute stream
// (begin), and the compute stream waits for every copy at end().
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace ll {

class Backend;

class Stager {
 public:
  virtual ~Stager() = default;
  virtual std::string name() const = 0;
  // Whether a collective on `t` goes through staging (CUDA: device tensors; the host stager: every tensor). Tensors
  // that are not staged go straight to the host communicator.
  virtual bool stages(const Tensor& t) const = 0;
  // `count` staging buffers of `bytes` each (CUDA: pinned host memory), allocated once; slot(i) stays valid.
  virtual void allocate(int count, size_t bytes) = 0;
  virtual char* slot(int index) = 0;
  // A point on the compute stream (taken when a collective starts); begin(mark) orders every copy enqueued
  // afterwards after it, and releases the mark.
  virtual uint64_t mark() = 0;
  virtual void begin(uint64_t mark) = 0;
  // Enqueues a copy of `bytes` from the rank's buffer `src` into slot `index` at `offset`.
  virtual void to_host(int index, size_t offset, const void* src, size_t bytes) = 0;
  // Blocks the host until every to_host copy into slot `index` has landed and every to_device copy out of it has
  // read it: the host may then read and write the slot.
  virtual void wait_host(int index) = 0;
  // Enqueues a copy of `bytes` from slot `index` at `offset` into the rank's buffer `dst`.
  virtual void to_device(void* dst, int index, size_t offset, size_t bytes) = 0;
  // The compute stream waits for every copy enqueued so far (the collective's wait / blocking return).
  virtual void end() = 0;
};

// memcpy on the calling thread; staging in ordinary host memory. `lazy`: each copy runs as late as the CUDA
// stager's ordering allows (the tests' way to check StagedComm's slot handling on CPU ranks).
std::unique_ptr<Stager> make_host_stager(bool lazy = false);
// The CUDA stager for `backend` (the CUDA backend of `device`); throws naming the reason in a build without CUDA.
std::unique_ptr<Stager> make_cuda_stager(Backend& backend, int device);

}  // namespace ll
