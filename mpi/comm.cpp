// LocalComm and the launcher detection shared by every build.
#include "mpi/comm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace ll {

std::vector<int64_t> even_split(int64_t n, int parts) {
  LL_ASSERT(parts >= 1 && n >= 0, "even_split: ", n, " elements into ", parts, " parts");
  std::vector<int64_t> counts(parts, n / parts);
  for (int64_t i = 0; i < n % parts; ++i) ++counts[i];
  return counts;
}

int64_t split_offset(const std::vector<int64_t>& counts, int index) {
  int64_t off = 0;
  for (int i = 0; i < index; ++i) off += counts[i];
  return off;
}

int choose_local_device(int local_rank, int local_size, int visible_devices) {
  LL_CHECK(local_size >= 1 && local_rank >= 0 && local_rank < local_size, "choose_local_device: local rank ",
           local_rank, " of ", local_size);
  LL_CHECK(visible_devices >= 1, "rank ", local_rank, " of the ", local_size, " ranks on this node sees no CUDA "
           "device (check CUDA_VISIBLE_DEVICES and the launcher's GPU binding)");
  if (visible_devices == 1) return 0;  // one GPU per rank, chosen by the launcher (or a single-rank node)
  LL_CHECK(local_rank < visible_devices, "this node runs ", local_size, " ranks but they see only ",
           visible_devices, " CUDA devices: start at most ", visible_devices, " ranks per node (one GPU each), or "
           "give every rank its own GPU through CUDA_VISIBLE_DEVICES");
  return local_rank;
}

namespace {

class LocalComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "local"; }
  void all_reduce_sum(Tensor) override {}
  double all_reduce_sum(double v) override { return v; }
  double all_reduce_max(double v) override { return v; }
  void reduce_scatter_sum(Tensor shard, const Tensor& full, const std::vector<int64_t>& counts) override {
    LL_ASSERT(counts.size() == 1 && counts[0] == full.numel() && shard.numel() == full.numel(),
             "reduce_scatter_sum: a single rank's shard is the whole buffer");
    if (shard.data != full.data) std::memcpy(shard.data, full.data, full.nbytes());
  }
  void all_gather_in_place(Tensor, const std::vector<int64_t>&) override {}
  void broadcast(Tensor, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code, const std::string& message) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    std::exit(code);
  }
};

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

}  // namespace

std::unique_ptr<Comm> make_local_comm() { return std::make_unique<LocalComm>(); }

#ifndef LONGLORA_WITH_NCCL
bool built_with_nccl() { return false; }
std::unique_ptr<Comm> make_nccl_comm(Comm&, Backend&, int) {
  fail("several ranks with --device cuda need NCCL, and this build has none (it needs nvcc, mpicxx and "
       "$(CUDA_HOME)/include/nccl.h when compiled; see the Makefile's NCCL setting)");
}
#endif

#ifdef LONGLORA_WITH_MPI
std::unique_ptr<Comm> make_mpi_comm();  // comm_mpi.cpp
bool built_with_mpi() { return true; }
std::unique_ptr<Comm> make_world_comm() { return launched_by_mpi() ? make_mpi_comm() : make_local_comm(); }
#else
bool built_with_mpi() { return false; }
std::unique_ptr<Comm> make_world_comm() {
  LL_CHECK(!launched_by_mpi(), "this process was started by an MPI launcher, but this build has no MPI "
                               "(mpicxx was not found when it was compiled); rebuild with Open MPI installed");
  return make_local_comm();
}
#endif

}  // namespace ll
