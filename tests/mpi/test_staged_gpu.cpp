// StagedComm with the CUDA stager on device buffers (mpirun -np N on one or more GPUs; ranks may share a GPU, as
// --comm mpi allows): every collective gives what MpiComm gives on host copies of the same values, with chunks of
// one element, a few hundred bytes and the default, a collective written by the compute stream just before it
// starts, and unrelated compute work between start and wait. Skips, on every rank alike, without a GPU.
#include <gtest/gtest.h>

#include <vector>

#include "core/backend.h"
#include "core/tensor_host.h"
#include "cuda/device_info.h"
#include "mpi/stager.h"
#include "mpi_test_env.h"

namespace ll {
namespace {

using test::g_comm;

std::string no_gpu() {
  const CudaProbe probe = probe_cuda();
  std::string why = probe.devices.empty() ? "no CUDA device: " + probe.error : "";
  if (g_comm->all_reduce_max(why.empty() ? 0.0 : 1.0) > 0 && why.empty()) why = "another rank has no CUDA device";
  return why;
}

TEST(StagedCommOnGpu, DeviceCollectivesMatchMpiCommOnHostCopies) {
  const std::string why = no_gpu();
  if (!why.empty()) GTEST_SKIP() << "staged GPU tests: " << why;
  const int r = g_comm->rank(), n = g_comm->size();
  const int device = choose_local_device(g_comm->local_rank(), g_comm->local_size(), int(probe_cuda().devices.size()));
  std::unique_ptr<Backend> be = create_backend("cuda", device);
  std::vector<std::shared_ptr<void>> keep;
  auto tensor = [&](DType dtype, int64_t count) {
    keep.push_back(std::shared_ptr<void>(be->allocate(size_t(std::max<int64_t>(count, 1)) * dtype_size(dtype)),
                                         [&](void* p) { be->release(p); }));
    return Tensor(keep.back().get(), dtype, Device::CUDA, {count});
  };
  auto values = [&](int64_t count, int salt) {
    std::vector<double> v(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) v[size_t(i)] = 0.25 * double((i * 7 + salt * 5 + r * 3) % 19 - 9);
    return v;
  };
  auto host = [](std::vector<double>& v) { return Tensor(v.data(), DType::F64, Device::CPU, {int64_t(v.size())}); };
  for (const int64_t chunk : {int64_t(1), int64_t(300), kDefaultCommChunkBytes}) {
    std::unique_ptr<Comm> c = make_staged_comm(*g_comm, make_cuda_stager(*be, device), chunk);
    c->set_timeout(120);
    // all-reduce of values the compute stream writes just before (upload, then a scale by 1 on the stream)
    Tensor a = tensor(DType::F32, 1000);
    std::vector<double> ref = values(1000, 1);
    upload_f64(*be, a, ref);
    be->scale(a, 1.0);
    c->all_reduce_sum(a);
    g_comm->all_reduce_sum(host(ref));
    EXPECT_EQ(download_f64(*be, a), ref) << "chunk " << chunk;
    // reduce-scatter and all-gather (bf16), uneven, with compute work between start and wait
    const std::vector<int64_t> counts = even_split(257 * n + 3, n);
    const int64_t total = 257 * n + 3, mine = counts[size_t(r)];
    Tensor full = tensor(DType::F32, total), shard = tensor(DType::F32, mine);
    std::vector<double> full_v = values(total, 2), shard_ref(static_cast<size_t>(mine));
    upload_f64(*be, full, full_v);
    const CommRequest rs = c->start_reduce_scatter_sum(shard, full, counts);
    Tensor gathered = tensor(DType::BF16, total);
    std::vector<double> g = values(total, 3);
    upload_f64(*be, gathered, g);
    const CommRequest ag = c->start_all_gather_in_place(gathered, counts);
    Tensor other = tensor(DType::F32, 4096);
    upload_f64(*be, other, std::vector<double>(4096, 2.0));
    be->scale(other, 0.5);
    c->wait(ag);
    c->wait(rs);
    g_comm->reduce_scatter_sum(host(shard_ref), host(full_v), counts);
    EXPECT_EQ(download_f64(*be, shard), shard_ref) << "chunk " << chunk;
    g_comm->all_gather_in_place(host(g), counts);
    EXPECT_EQ(download_f64(*be, gathered), g) << "chunk " << chunk;
    EXPECT_EQ(download_f64(*be, other), std::vector<double>(4096, 1.0));
    // broadcast from the last rank
    Tensor b = tensor(DType::F32, 77);
    std::vector<double> bv = values(77, 4);
    upload_f64(*be, b, bv);
    c->broadcast(b, n - 1);
    g_comm->broadcast(host(bv), n - 1);
    EXPECT_EQ(download_f64(*be, b), bv) << "chunk " << chunk;
    // scalars and host tensors go straight to MPI
    EXPECT_EQ(c->all_reduce_sum(double(r + 1)), double(n * (n + 1) / 2));
  }
}

}  // namespace
}  // namespace ll
