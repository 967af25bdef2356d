// StagedComm with the host stager (eager and lazy copies) on CPU ranks: every collective gives, bit for bit, what
// MpiComm gives on the same inputs, whatever the chunk (1 byte → one element per chunk, a size that divides nothing,
// the whole buffer, the 8 MiB default), with even and uneven splits and ranks whose range is empty; several
// collectives in flight, waited out of order. The values are multiples of 1/4 with small magnitudes, so every sum
// is exact in any order: what is compared is which elements move where, not MPI's summation order.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/tensor_host.h"
#include "mpi/stager.h"
#include "mpi_test_env.h"

namespace ll {
namespace {

using test::g_comm;

// Eager copies, or lazy ones (each copy as late as the CUDA stager's ordering allows: mpi/stager.h).
std::unique_ptr<Comm> staged(int64_t chunk_bytes, bool lazy) {
  return make_staged_comm(*g_comm, make_host_stager(lazy), chunk_bytes);
}

// Rank- and element-dependent values, exactly representable in bf16.
std::vector<double> values(int64_t n, int salt) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = 0.25 * double((i * 7 + salt * 5 + g_comm->rank() * 3) % 19 - 9);
  return v;
}

// A host buffer of `dtype` holding `v`.
std::vector<char> buffer(DType dtype, const std::vector<double>& v) {
  std::vector<char> b(std::max<size_t>(v.size(), 1) * dtype_size(dtype));
  if (dtype == DType::I32) {
    for (size_t i = 0; i < v.size(); ++i) reinterpret_cast<int32_t*>(b.data())[i] = int32_t(v[i] * 4);
  } else {
    convert_values(v.data(), DType::F64, b.data(), dtype, v.size());
  }
  return b;
}
Tensor view(std::vector<char>& b, DType dtype, int64_t n) { return Tensor(b.data(), dtype, Device::CPU, {n}); }

// The splits tested for `total` elements: even, uneven, and every other rank empty.
std::vector<std::vector<int64_t>> splits() {
  const int n = g_comm->size();
  std::vector<int64_t> gaps(static_cast<size_t>(n));
  for (int q = 0; q < n; ++q) gaps[size_t(q)] = n > 1 && q % 2 == 0 ? 0 : 7 + q;
  return {even_split(8 * n, n), even_split(10 * n + 3, n), gaps};
}
int64_t sum(const std::vector<int64_t>& c) {
  int64_t s = 0;
  for (int64_t x : c) s += x;
  return s;
}

// Chunks of 1 byte (one element), 3 and 28 bytes (dividing nothing), 32 (8 f32: a whole buffer below) and the
// default, each with eager and lazy copies.
struct Staging {
  int64_t chunk;
  bool lazy;
  std::string label() const { return "chunk " + std::to_string(chunk) + (lazy ? " lazy, " : ", "); }
};
std::vector<Staging> stagings() {
  std::vector<Staging> out;
  for (const int64_t chunk : {int64_t(1), int64_t(3), int64_t(28), int64_t(32), kDefaultCommChunkBytes})
    for (const bool lazy : {false, true}) out.push_back({chunk, lazy});
  return out;
}

TEST(StagedComm, AllReduceAndBroadcastMatchMpiCommBitForBit) {
  const int n = g_comm->size();
  for (const Staging& st : stagings()) {
    std::unique_ptr<Comm> c = staged(st.chunk, st.lazy);
    for (const DType dtype : {DType::F32, DType::F64}) {
      for (const int64_t len : {int64_t(1), int64_t(8), int64_t(37)}) {  // 8 f32: the 32-byte chunk is the buffer
        std::vector<char> a = buffer(dtype, values(len, 1)), b = a;
        c->all_reduce_sum(view(a, dtype, len));
        g_comm->all_reduce_sum(view(b, dtype, len));
        EXPECT_EQ(a, b) << st.label() << dtype_name(dtype) << ", " << len << " elements";
      }
    }
    for (const DType dtype : {DType::F32, DType::BF16, DType::I32}) {
      std::vector<char> a = buffer(dtype, values(29, 2)), b = a;
      c->broadcast(view(a, dtype, 29), n - 1);
      g_comm->broadcast(view(b, dtype, 29), n - 1);
      EXPECT_EQ(a, b) << st.label() << dtype_name(dtype);
    }
  }
}

TEST(StagedComm, ReduceScatterAndAllGatherMatchMpiCommWithEveryChunkAndSplit) {
  const int r = g_comm->rank();
  for (const Staging& st : stagings()) {
    std::unique_ptr<Comm> c = staged(st.chunk, st.lazy);
    for (const std::vector<int64_t>& counts : splits()) {
      const int64_t total = sum(counts), mine = counts[size_t(r)];
      const std::string what = st.label() + std::to_string(total) + " elements";
      for (const DType dtype : {DType::F32, DType::F64}) {
        std::vector<char> full = buffer(dtype, values(total, 3));
        std::vector<char> a(std::max<int64_t>(mine, 1) * dtype_size(dtype), 'x'), b = a;
        c->reduce_scatter_sum(view(a, dtype, mine), view(full, dtype, total), counts);
        g_comm->reduce_scatter_sum(view(b, dtype, mine), view(full, dtype, total), counts);
        EXPECT_EQ(a, b) << what << ", " << dtype_name(dtype);
      }
      for (const DType dtype : {DType::F32, DType::BF16, DType::F16}) {
        // Only this rank's range holds its values; the others are garbage the gather overwrites.
        std::vector<double> v(size_t(total), -100.0);
        const std::vector<double> own = values(total, 4);
        const int64_t off = split_offset(counts, r);
        for (int64_t i = off; i < off + mine; ++i) v[size_t(i)] = own[size_t(i)];
        std::vector<char> a = buffer(dtype, v), b = a;
        c->all_gather_in_place(view(a, dtype, total), counts);
        g_comm->all_gather_in_place(view(b, dtype, total), counts);
        EXPECT_EQ(a, b) << what << ", " << dtype_name(dtype);
      }
    }
  }
}

// Three collectives started before any is waited for, a scalar reduction between, waited last-first: each result
// is MpiComm's, and every request is waited exactly once (a second wait is an error).
TEST(StagedComm, SeveralRequestsInFlightWaitedOutOfOrder) {
  const int n = g_comm->size(), r = g_comm->rank();
  std::unique_ptr<Comm> c = staged(12, true);
  const std::vector<int64_t> counts = even_split(10 * n + 3, n);
  const int64_t total = sum(counts), mine = counts[size_t(r)];
  std::vector<char> reduced = buffer(DType::F32, values(21, 5)), reduced_ref = reduced;
  std::vector<char> full = buffer(DType::F32, values(total, 6));
  std::vector<char> shard(std::max<int64_t>(mine, 1) * 4, 'x'), shard_ref = shard;
  std::vector<char> gathered = buffer(DType::BF16, values(total, 7)), gathered_ref = gathered;

  const CommRequest a = c->start_all_reduce_sum(view(reduced, DType::F32, 21));
  const CommRequest b =
      c->start_reduce_scatter_sum(view(shard, DType::F32, mine), view(full, DType::F32, total), counts);
  EXPECT_EQ(c->all_reduce_sum(double(r + 1)), double(n * (n + 1) / 2));
  const CommRequest g = c->start_all_gather_in_place(view(gathered, DType::BF16, total), counts);
  c->wait(g);
  c->wait(a);
  c->wait(b);
  g_comm->all_reduce_sum(view(reduced_ref, DType::F32, 21));
  g_comm->reduce_scatter_sum(view(shard_ref, DType::F32, mine), view(full, DType::F32, total), counts);
  g_comm->all_gather_in_place(view(gathered_ref, DType::BF16, total), counts);
  EXPECT_EQ(reduced, reduced_ref);
  EXPECT_EQ(shard, shard_ref);
  EXPECT_EQ(gathered, gathered_ref);
  bool refused = false;
  try {
    c->wait(a);
  } catch (const Error& e) {
    refused = std::string(e.what()).find("already waited for") != std::string::npos;
  }
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace ll
