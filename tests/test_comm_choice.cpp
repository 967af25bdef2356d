// --comm: which communicator GPU ranks use (choose_device_comm, a pure function of the build and the node), and
// StagedComm's chunking with the host stager at world size 1 (the multi-rank cases are in tests/mpi/).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "mpi/comm.h"
#include "mpi/stager.h"
#include "util/error.h"
#include "test_util.h"

namespace ll {
namespace {

using test::error_of;

TEST(ChooseDeviceComm, AutoTakesNcclOnlyWhenBuiltAndEveryRankHasItsOwnGpu) {
  // built, 4 ranks on 4 GPUs: NCCL, rank r on GPU r
  DeviceCommChoice c = choose_device_comm("auto", true, 2, 4, 4, 4);
  EXPECT_TRUE(c.nccl);
  EXPECT_EQ(c.device, 2);
  // each rank sees one GPU the launcher bound to it, four different ones: NCCL on device 0
  c = choose_device_comm("auto", true, 3, 4, 1, 4);
  EXPECT_TRUE(c.nccl);
  EXPECT_EQ(c.device, 0);
  // ... but the same one for the four: staged
  c = choose_device_comm("auto", true, 3, 4, 1, 1);
  EXPECT_FALSE(c.nccl);
  EXPECT_EQ(c.device, 0);
  EXPECT_NE(c.why.find("4 ranks on this node share 1 GPU"), std::string::npos) << c.why;
  // no NCCL in the build: staged, one GPU per rank still
  c = choose_device_comm("auto", false, 1, 2, 2, 2);
  EXPECT_FALSE(c.nccl);
  EXPECT_EQ(c.device, 1);
  EXPECT_NE(c.why.find("this build has no NCCL"), std::string::npos) << c.why;
  // 4 ranks, 2 GPUs: staged, two ranks per GPU
  c = choose_device_comm("auto", true, 3, 4, 2, 2);
  EXPECT_FALSE(c.nccl);
  EXPECT_EQ(c.device, 1);
  EXPECT_NE(c.why.find("local rank 3 takes GPU 1 = 3 % 2"), std::string::npos) << c.why;
}

// The launcher binds each rank a subset of several GPUs: whether they own their GPU depends on which one each picks
// (local_rank % visible), not on how many each sees.
TEST(ChooseDeviceComm, OwnGpusAreCountedOverTheChosenDevicesWhateverEachRankSees) {
  // 4 ranks each seeing 2 GPUs, the picked ones all different (pairs bound to disjoint GPUs): NCCL
  DeviceCommChoice c = choose_device_comm("auto", true, 3, 4, 2, 4);
  EXPECT_TRUE(c.nccl) << c.why;
  EXPECT_EQ(c.device, 1);
  // 2 ranks each seeing 4 GPUs, bound to the same ones, picking GPU 0 and 1: NCCL
  EXPECT_TRUE(choose_device_comm("auto", true, 1, 2, 4, 2).nccl);
  // 4 ranks each seeing 4 GPUs, but the same card under two orders (two ranks pick one card): staged, and nccl
  // is refused, naming the 3 GPUs they share
  c = choose_device_comm("auto", true, 2, 4, 4, 3);
  EXPECT_FALSE(c.nccl);
  EXPECT_NE(c.why.find("4 ranks on this node share 3 GPUs"), std::string::npos) << c.why;
  EXPECT_NE(error_of([] { choose_device_comm("nccl", true, 2, 4, 4, 3); }).find("share 3 GPUs"), std::string::npos);
  // impossible counts are errors, not guesses
  EXPECT_NE(error_of([] { choose_device_comm("auto", true, 0, 2, 2, 0); }).find("0 distinct GPUs for 2 ranks"),
            std::string::npos);
  EXPECT_NE(error_of([] { choose_device_comm("auto", true, 0, 2, 2, 3); }).find("3 distinct GPUs for 2 ranks"),
            std::string::npos);
}

TEST(ChooseDeviceComm, MpiSharesGpusAsLocalRankModuloVisibleDevices) {
  for (int r = 0; r < 6; ++r) {
    const DeviceCommChoice c = choose_device_comm("mpi", true, r, 6, 4, 4);
    EXPECT_FALSE(c.nccl);
    EXPECT_EQ(c.device, r % 4);
    EXPECT_EQ(c.device, choose_local_device(r, 6, 4));  // the one rule train and eval share
    EXPECT_NE(c.why.find("--comm mpi"), std::string::npos) << c.why;
  }
  EXPECT_EQ(choose_device_comm("mpi", true, 1, 2, 1, 1).device, 0);  // two ranks on the one GPU
  EXPECT_EQ(choose_device_comm("mpi", false, 1, 2, 2, 2).device, 1);  // own GPUs: rank r on GPU r
}

TEST(ChooseDeviceComm, NcclWhereItCannotWorkAndUnknownValuesAreErrorsNamingTheFlag) {
  EXPECT_TRUE(choose_device_comm("nccl", true, 0, 2, 2, 2).nccl);
  EXPECT_NE(error_of([] { choose_device_comm("nccl", false, 0, 2, 2, 2); }).find("--comm nccl: this build has no NCCL"),
            std::string::npos);
  const std::string shared = error_of([] { choose_device_comm("nccl", true, 0, 4, 2, 2); });
  EXPECT_NE(shared.find("--comm nccl: 4 ranks on this node share 2 GPUs"), std::string::npos) << shared;
  EXPECT_NE(shared.find("use --comm mpi"), std::string::npos) << shared;
  EXPECT_NE(error_of([] { choose_device_comm("nccl", true, 1, 2, 1, 1); }).find("share 1 GPU"), std::string::npos);
  for (const char* bad : {"", "NCCL", "gloo", "auto "})
    EXPECT_EQ(error_of([&] { choose_device_comm(bad, true, 0, 1, 1, 1); }),
              std::string("--comm: expected auto, nccl or mpi, got `") + bad + "`");
  EXPECT_NE(error_of([] { choose_device_comm("auto", true, 0, 2, 0, 1); }).find("sees no CUDA device"),
            std::string::npos);
}

TEST(ChooseDeviceComm, CheckCommFlagValidatesTheValueForTheDeviceAndBuild) {
  for (const char* device : {"cpu", "cuda"}) {
    EXPECT_EQ(error_of([&] { check_comm_flag("auto", device, false); }), "") << device;
    EXPECT_EQ(error_of([&] { check_comm_flag("mpi", device, false); }), "") << device;
    EXPECT_NE(error_of([&] { check_comm_flag("x", device, true); }).find("--comm: expected auto, nccl or mpi, got `x`"),
              std::string::npos)
        << device;
  }
  EXPECT_NE(error_of([] { check_comm_flag("nccl", "cpu", true); }).find("--comm nccl: NCCL moves device buffers"),
            std::string::npos);
  EXPECT_EQ(error_of([] { check_comm_flag("nccl", "cuda", true); }), "");
  EXPECT_NE(error_of([] { check_comm_flag("nccl", "cuda", false); }).find("--comm nccl: this build has no NCCL"),
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
