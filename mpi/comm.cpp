// LocalComm and the launcher detection shared by every build.
#include "mpi/comm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <set>

#include <unistd.h>

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

void check_split(const Tensor& full, const std::vector<int64_t>& counts, int ranks, const char* op) {
  LL_CHECK(int(counts.size()) == ranks, op, ": split has ", counts.size(), " ranges for ", ranks, " ranks");
  int64_t total = 0;
  for (int64_t c : counts) {
    LL_CHECK(c >= 0, op, ": negative count in the split");
    total += c;
  }
  LL_CHECK(total == full.numel(), op, ": split covers ", total, " of ", full.numel(), " elements");
}

char* element_ptr(const Tensor& t, int64_t element) {
  return static_cast<char*>(t.data) + element * int64_t(dtype_size(t.dtype));
}

int choose_local_device(int local_rank, int local_size, int visible_devices) {
  LL_CHECK(local_size >= 1 && local_rank >= 0 && local_rank < local_size, "choose_local_device: local rank ",
           local_rank, " of ", local_size);
  LL_CHECK(visible_devices >= 1, "rank ", local_rank, " of the ", local_size, " ranks on this node sees no CUDA "
           "device (check CUDA_VISIBLE_DEVICES and the launcher's GPU binding)");
  return local_rank % visible_devices;
}

void check_comm_flag(const std::string& flag, const std::string& device, bool nccl_built) {
  LL_CHECK(flag == "auto" || flag == "nccl" || flag == "mpi", "--comm: expected auto, nccl or mpi, got `", flag, "`");
  if (flag != "nccl") return;
  LL_CHECK(device != "cpu", "--comm nccl: NCCL moves device buffers, and --device cpu ranks have none; use --comm "
                            "auto or mpi (MPI on host buffers), or --device cuda");
  LL_CHECK(nccl_built, "--comm nccl: this build has no NCCL (it needs nvcc, mpicxx and $(CUDA_HOME)/include/nccl.h "
                       "when compiled; see the Makefile's NCCL setting); use --comm mpi or auto (device buffers over "
                       "MPI through host staging)");
}

DeviceCommChoice choose_device_comm(const std::string& flag, bool nccl_built, int local_rank, int local_size,
                                    int visible_devices, int distinct_gpus) {
  check_comm_flag(flag, "cuda", nccl_built);
  DeviceCommChoice c;
  c.device = choose_local_device(local_rank, local_size, visible_devices);
  LL_CHECK(distinct_gpus >= 1 && distinct_gpus <= local_size, "choose_device_comm: ", distinct_gpus,
           " distinct GPUs for ", local_size, " ranks on this node");
  const bool own = distinct_gpus == local_size;  // no two ranks of the node on the same GPU
  const std::string sharing =
      str_cat(local_size, " ranks on this node share ", distinct_gpus, " GPU", distinct_gpus == 1 ? "" : "s");
  if (flag == "nccl") {
    LL_CHECK(own, "--comm nccl: ", sharing, ", and NCCL needs one GPU per rank; use --comm mpi or auto (ranks "
                  "share GPUs over MPI through host staging), or start at most ", distinct_gpus, " ranks per node");
    c.nccl = true;
    c.why = "NCCL, one GPU per rank (--comm nccl)";
  } else if (flag == "auto" && nccl_built && own) {
    c.nccl = true;
    c.why = "NCCL, one GPU per rank (--comm auto)";
  } else {
    c.why = flag == "mpi" ? std::string("MPI through host staging (--comm mpi)")
            : !nccl_built ? std::string("MPI through host staging (--comm auto: this build has no NCCL)")
                          : str_cat("MPI through host staging (--comm auto: ", sharing, ")");
    if (!own) c.why += str_cat("; ", sharing, ": local rank ", local_rank, " takes GPU ", c.device, " = ",
                               local_rank, " % ", visible_devices);
  }
  return c;
}

int distinct_gpus_on_node(Comm& world, const std::string& gpu_id) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const uint64_t mine[2] = {std::hash<std::string>{}(host), std::hash<std::string>{}(gpu_id)};
  const int n = world.size();
  std::vector<int32_t> all(size_t(n) * 4);  // per rank: host hash, GPU hash (two int32 words each)
  std::memcpy(&all[size_t(world.rank()) * 4], mine, sizeof mine);
  world.all_gather_in_place(Tensor(all.data(), DType::I32, Device::CPU, {int64_t(n) * 4}),
                            std::vector<int64_t>(size_t(n), 4));
  std::set<uint64_t> gpus;
  for (int r = 0; r < n; ++r) {
    uint64_t theirs[2];
    std::memcpy(theirs, &all[size_t(r) * 4], sizeof theirs);
    if (theirs[0] == mine[0]) gpus.insert(theirs[1]);
  }
  return int(gpus.size());
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
  fail("NCCL (--comm nccl) was asked for, and this build has none (it needs nvcc, mpicxx and "
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
