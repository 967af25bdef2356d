// Ranks that must agree: text broadcast, one rank's failure stopping all of them with its message, and ranks
// started with different flags (an MPMD launch) stopped naming the first differing flag.
#include <gtest/gtest.h>

#include "mpi_test_env.h"
#include "mpi/rank_agreement.h"
#include "util/error.h"

namespace ll {
namespace {

using test::g_comm;

// The error every rank stops with ("" when none).
std::string error_of(const std::function<void()>& collective) {
  try {
    collective();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(RankAgreement, BroadcastTextReachesEveryRank) {
  const int n = g_comm->size();
  const std::string mine = "rank " + std::to_string(g_comm->rank()) + std::string(g_comm->rank() * 3, 'x');
  EXPECT_EQ(broadcast_text(*g_comm, mine, n - 1), "rank " + std::to_string(n - 1) + std::string((n - 1) * 3, 'x'));
  EXPECT_EQ(broadcast_text(*g_comm, g_comm->rank() == 0 ? "" : "ignored", 0), "");
}

TEST(RankAgreement, OneRanksFailureStopsEveryRankWithItsMessage) {
  const int n = g_comm->size();
  EXPECT_EQ(error_of([] { agree_on_failure(*g_comm, [] {}); }), "");
  // The last rank and (with 3+ ranks) rank 1 fail: every rank reports the lower one's message.
  const int failing = n > 2 ? 1 : n - 1;
  const std::string e = error_of([&] {
    agree_on_failure(*g_comm, [&] {
      if (g_comm->rank() == n - 1 || g_comm->rank() == failing) fail("rank ", g_comm->rank(), " cannot go on");
    });
  });
  EXPECT_EQ(e, "rank " + std::to_string(failing) + " cannot go on");
}

TEST(RankAgreement, DifferentFlagsStopEveryRankNamingTheFirstDifference) {
  const int r = g_comm->rank(), n = g_comm->size();
  const nlohmann::json same = {{"learning_rate", 0.001}, {"output_dir", "out"}, {"seed", 42}};
  EXPECT_EQ(error_of([&] { check_flags_agree(*g_comm, same); }), "");
  nlohmann::json mine = same;
  if (r == n - 1) mine["learning_rate"] = 0.002, mine["seed"] = 7;  // MPMD: the last part got other values
  const std::string e = error_of([&] { check_flags_agree(*g_comm, mine); });
  if (n == 1) {
    EXPECT_EQ(e, "");
  } else {
    EXPECT_EQ(e, "the ranks were started with different flags: --learning_rate is 0.002 on rank " +
                     std::to_string(n - 1) + " but 0.001 on rank 0. Every rank must get the same flags (an MPMD "
                     "launch `mpirun ... : ...` gives each part its own)");
  }
}

}  // namespace
}  // namespace ll
