// --comm: which communicator GPU ranks use (choose_device_comm, a pure function of the build and the node), and
// StagedComm's chunking with the host stager at world size 1 (the multi-rank cases are in tests/mpi/).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "mpi/comm.h"
#include "mpi/stager.h"
#include "util/error.h"

namespace ll {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ChooseDeviceComm, AutoTakesNcclOnlyWhenBuiltAndEveryRankHasItsOwnGpu) {
  // built, 4 ranks on 4 GPUs: NCCL, rank r on GPU r
  DeviceCommChoice c = choose_device_comm("auto", true, 2, 4, 4);
  EXPECT_TRUE(c.nccl);
  EXPECT_EQ(c.device, 2);
  // each rank sees one GPU the launcher bound to it (unknown identity): NCCL on device 0
  c = choose_device_comm("auto", true, 3, 4, 1);
  EXPECT_TRUE(c.nccl);
  EXPECT_EQ(c.device, 0);
  // ... but known to be one GPU shared by the four: staged
  c = choose_device_comm("auto", true, 3, 4, 1, 1);
  EXPECT_FALSE(c.nccl);
  EXPECT_EQ(c.device, 0);
  EXPECT_NE(c.why.find("4 ranks on this node share 1 GPU"), std::string::npos) << c.why;
  // no NCCL in the build: staged, one GPU per rank still
  c = choose_device_comm("auto", false, 1, 2, 2);
  EXPECT_FALSE(c.nccl);
  EXPECT_EQ(c.device, 1);
  EXPECT_NE(c.why.find("this build has no NCCL"), std::string::npos) << c.why;
  // 4 ranks, 2 GPUs: staged, two ranks per GPU
  c = choose_device_comm("auto", true, 3, 4, 2);
  EXPECT_FALSE(c.nccl);
  EXPECT_EQ(c.device, 1);
  EXPECT_NE(c.why.find("local rank 3 takes GPU 1 = 3 % 2"), std::string::npos) << c.why;
}

TEST(ChooseDeviceComm, MpiSharesGpusAsLocalRankModuloVisibleDevices) {
  for (int r = 0; r < 6; ++r) {
    const DeviceCommChoice c = choose_device_comm("mpi", true, r, 6, 4);
    EXPECT_FALSE(c.nccl);
    EXPECT_EQ(c.device, r % 4);
    EXPECT_NE(c.why.find("--comm mpi"), std::string::npos) << c.why;
  }
  EXPECT_EQ(choose_device_comm("mpi", true, 1, 2, 1).device, 0);  // two ranks on the one GPU
  EXPECT_EQ(choose_device_comm("mpi", false, 1, 2, 2).device, 1);  // own GPUs: rank r on GPU r
}

TEST(ChooseDeviceComm, NcclWhereItCannotWorkAndUnknownValuesAreErrorsNamingTheFlag) {
  EXPECT_TRUE(choose_device_comm("nccl", true, 0, 2, 2).nccl);
  EXPECT_NE(error_of([] { choose_device_comm("nccl", false, 0, 2, 2); }).find("--comm nccl: this build has no NCCL"),
            std::string::npos);
  const std::string shared = error_of([] { choose_device_comm("nccl", true, 0, 4, 2); });
  EXPECT_NE(shared.find("--comm nccl: 4 ranks on this node share 2 GPUs"), std::string::npos) << shared;
  EXPECT_NE(shared.find("use --comm mpi"), std::string::npos) << shared;
  EXPECT_NE(error_of([] { choose_device_comm("nccl", true, 1, 2, 1, 1); }).find("share 1 GPU"), std::string::npos);
  for (const char* bad : {"", "NCCL", "gloo", "auto "})
    EXPECT_EQ(error_of([&] { choose_device_comm(bad, true, 0, 1, 1); }),
              std::string("--comm: expected auto, nccl or mpi, got `") + bad + "`");
  EXPECT_NE(error_of([] { choose_device_comm("auto", true, 0, 2, 0); }).find("sees no CUDA device"), std::string::npos);
}

TEST(ChooseDeviceComm, CpuRanksAcceptAutoAndMpiAndRefuseNccl) {
  EXPECT_EQ(error_of([] { check_cpu_comm_flag("auto"); }), "");
  EXPECT_EQ(error_of([] { check_cpu_comm_flag("mpi"); }), "");
  EXPECT_NE(error_of([] { check_cpu_comm_flag("nccl"); }).find("--comm nccl: NCCL moves device buffers"),
            std::string::npos);
  EXPECT_NE(error_of([] { check_cpu_comm_flag("x"); }).find("--comm: expected auto, nccl or mpi, got `x`"),
            std::string::npos);
}

// One rank: every collective is the identity (all-gather, broadcast) or a copy (reduce-scatter), through the
// staging slots in chunks of 1, 3 and 8 MiB bytes.
TEST(StagedComm, OneRankMovesEveryElementThroughTheChunks) {
  std::unique_ptr<Comm> local = make_local_comm();
  for (const int64_t chunk : {int64_t(1), int64_t(3), kDefaultCommChunkBytes}) {
    std::unique_ptr<Comm> staged = make_staged_comm(*local, make_host_stager(), chunk);
    EXPECT_EQ(staged->name(), "mpi-staged");
    EXPECT_TRUE(staged->asynchronous());
    std::vector<float> v(11), shard(11, -1.0f);
    for (int i = 0; i < 11; ++i) v[size_t(i)] = 0.5f * float(i) - 2.0f;
    const std::vector<float> before = v;
    staged->all_reduce_sum(Tensor(v.data(), DType::F32, Device::CPU, {11}));
    EXPECT_EQ(v, before) << chunk;
    staged->reduce_scatter_sum(Tensor(shard.data(), DType::F32, Device::CPU, {11}),
                               Tensor(v.data(), DType::F32, Device::CPU, {11}), {11});
    EXPECT_EQ(shard, before) << chunk;
    staged->all_gather_in_place(Tensor(v.data(), DType::F32, Device::CPU, {11}), {11});
    staged->broadcast(Tensor(v.data(), DType::F32, Device::CPU, {11}), 0);
    EXPECT_EQ(v, before) << chunk;
    EXPECT_NE(error_of([&] { staged->all_gather_in_place(Tensor(v.data(), DType::F32, Device::CPU, {11}), {10}); })
                  .find("all_gather_in_place: split covers 10 of 11 elements"),
              std::string::npos);
    EXPECT_NE(error_of([&] { staged->wait(CommRequest{99}); }).find("request 99 is unknown"), std::string::npos);
  }
  EXPECT_NE(error_of([&] { make_staged_comm(*local, make_host_stager(), 0); }).find("--comm_chunk_bytes"),
            std::string::npos);
}

}  // namespace
}  // namespace ll
