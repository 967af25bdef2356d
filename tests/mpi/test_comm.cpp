// Collectives on CPU ranks: sums, uneven reduce-scatter / all-gather splits, broadcast.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "mpi_test_env.h"

namespace ll {
namespace {

using test::g_comm;

TEST(Comm, AllReduceSumsEveryRanksValues) {
  const int r = g_comm->rank(), n = g_comm->size();
  std::vector<float> v = {float(r), 1.0f, float(r * r)};
  g_comm->all_reduce_sum(Tensor(v.data(), DType::F32, Device::CPU, {3}));
  EXPECT_EQ(v[0], float(n * (n - 1) / 2));
  EXPECT_EQ(v[1], float(n));
  double sq = 0;
  for (int i = 0; i < n; ++i) sq += i * i;
  EXPECT_EQ(v[2], float(sq));
  EXPECT_EQ(g_comm->all_reduce_sum(double(r + 1)), double(n * (n + 1) / 2));
  EXPECT_EQ(g_comm->all_reduce_max(double(r)), double(n - 1));
}

TEST(Comm, ReduceScatterAndAllGatherWithUnevenSplits) {
  const int r = g_comm->rank(), n = g_comm->size();
  const int64_t total = 10 * n + 3;  // not divisible by the rank count
  const std::vector<int64_t> counts = even_split(total, n);
  std::vector<double> full(total);
  for (int64_t i = 0; i < total; ++i) full[i] = double(i) * (r + 1);
  std::vector<double> shard(counts[r]);
  g_comm->reduce_scatter_sum(Tensor(shard.data(), DType::F64, Device::CPU, {counts[r]}),
                             Tensor(full.data(), DType::F64, Device::CPU, {total}), counts);
  const int64_t off = split_offset(counts, r);
  for (int64_t i = 0; i < counts[r]; ++i) EXPECT_EQ(shard[i], double(off + i) * n * (n + 1) / 2);
  // Every rank writes its range, all-gather assembles the whole.
  std::vector<double> gathered(total, -1.0);
  for (int64_t i = 0; i < counts[r]; ++i) gathered[off + i] = 1000.0 * r + double(i);
  g_comm->all_gather_in_place(Tensor(gathered.data(), DType::F64, Device::CPU, {total}), counts);
  for (int q = 0; q < n; ++q)
    for (int64_t i = 0; i < counts[q]; ++i) EXPECT_EQ(gathered[split_offset(counts, q) + i], 1000.0 * q + double(i));
}

TEST(Comm, BroadcastFromTheLastRank) {
  const int r = g_comm->rank(), n = g_comm->size();
  std::vector<int32_t> v = {r, r, r};
  g_comm->broadcast(Tensor(v.data(), DType::I32, Device::CPU, {3}), n - 1);
  for (int32_t x : v) EXPECT_EQ(x, n - 1);
}

// --comm auto tells ranks bound to their own GPU from ranks sharing one by the GPUs' PCI addresses (all the test's
// ranks run on one host).
TEST(Comm, DistinctGpusOnNodeCountsTheDifferentIdsOfTheHostsRanks) {
  const int r = g_comm->rank(), n = g_comm->size();
  EXPECT_EQ(distinct_gpus_on_node(*g_comm, "0000:17:00"), 1);
  EXPECT_EQ(distinct_gpus_on_node(*g_comm, "0000:" + std::to_string(r % 2) + ":00"), std::min(n, 2));
  EXPECT_EQ(distinct_gpus_on_node(*g_comm, std::to_string(r)), n);
}

TEST(Comm, EvenSplitCoversEverything) {
  EXPECT_EQ(even_split(10, 4), (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(even_split(2, 4), (std::vector<int64_t>{1, 1, 0, 0}));
  EXPECT_EQ(split_offset(even_split(10, 4), 3), 8);
}

}  // namespace
}  // namespace ll
