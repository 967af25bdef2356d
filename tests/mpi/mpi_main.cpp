// GoogleTest main for the multi-rank tests: every rank runs every test (the tests are collective); only rank 0
// prints, and the summary counts a test as failed when it failed on any rank.
#include <gtest/gtest.h>

#include <cstdio>

#include "mpi_test_env.h"

namespace ll::test {
Comm* g_comm = nullptr;
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::unique_ptr<ll::Comm> comm = ll::make_world_comm();
  ll::test::g_comm = comm.get();
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (comm->rank() != 0) delete listeners.Release(listeners.default_result_printer());
  const int rc = RUN_ALL_TESTS();
  const double failed_here = ::testing::UnitTest::GetInstance()->failed_test_count();
  const double failed_any = comm->all_reduce_max(failed_here);
  // Counted by scripts/run_tests.sh on top of rank 0's own summary, so only the excess is printed as a count.
  if (comm->rank() == 0 && failed_any > failed_here)
    std::printf("[  FAILED  ] %d more tests failed on other ranks (rerun with -np and inspect their output)\n",
                int(failed_any - failed_here));
  return rc != 0 || failed_any > 0 ? 1 : 0;
}
