// numpy's legacy RandomState (MT19937 + randint's masked rejection), checked against numbers printed by numpy
// (tests/fixtures/passkey_reference.json, scripts/make_passkey_fixtures.py) and against std::mt19937.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "eval/numpy_random.h"
#include "test_util.h"
#include "util/error.h"

namespace ll {
namespace {

nlohmann::json passkey_fixture() {
  const std::string dir = test::fixtures_dir();
  EXPECT_FALSE(dir.empty()) << "tests/fixtures not found";
  std::ifstream in(dir + "/passkey_reference.json");
  EXPECT_TRUE(in.good()) << "missing tests/fixtures/passkey_reference.json (scripts/make_passkey_fixtures.py)";
  return nlohmann::json::parse(in);
}

TEST(NumpyRandom, Mt19937MatchesTheStandardLibrary) {
  Mt19937 mine;  // default seed 5489
  std::mt19937 ref;
  for (int i = 0; i < 9999; ++i) ASSERT_EQ(mine.next_u32(), ref()) << "draw " << i;
  EXPECT_EQ(mine.next_u32(), 4123659995u);  // the C++ standard's required 10000th output
  for (uint32_t seed : {0u, 1u, 4294967295u}) {
    Mt19937 a(seed);
    std::mt19937 b(seed);
    for (int i = 0; i < 2000; ++i) ASSERT_EQ(a.next_u32(), b()) << "seed " << seed << " draw " << i;
  }
}

TEST(NumpyRandom, Mt19937MatchesNumpy) {
  const nlohmann::json fx = passkey_fixture();
  ASSERT_FALSE(fx["mt19937"].empty());
  for (const auto& c : fx["mt19937"]) {
    Mt19937 mt(c["seed"].get<uint32_t>());
    std::vector<uint32_t> draws(1300);
    for (uint32_t& d : draws) d = mt.next_u32();
    const auto first = c["first"].get<std::vector<uint32_t>>(), at620 = c["at_620"].get<std::vector<uint32_t>>(),
               at1290 = c["at_1290"].get<std::vector<uint32_t>>();
    EXPECT_EQ(std::vector<uint32_t>(draws.begin(), draws.begin() + 8), first) << "seed " << c["seed"];
    EXPECT_EQ(std::vector<uint32_t>(draws.begin() + 620, draws.begin() + 630), at620) << "seed " << c["seed"];
    EXPECT_EQ(std::vector<uint32_t>(draws.begin() + 1290, draws.end()), at1290) << "seed " << c["seed"];
  }
}

TEST(NumpyRandom, RandintMatchesNumpyOnEveryBranch) {
  const nlohmann::json fx = passkey_fixture();
  int cases = 0;
  for (const auto& c : fx["randint"]) {
    NumpyRandomState rs(c["seed"].get<uint32_t>());
    const int64_t low = c["low"].get<int64_t>(), high = c["high"].get<int64_t>();
    for (const auto& v : c["values"])
      ASSERT_EQ(rs.randint(low, high), v.get<int64_t>())
          << "seed " << c["seed"] << " randint(" << low << ", " << high << ")";
    ++cases;
  }
  EXPECT_GE(cases, 40);
}

TEST(NumpyRandom, RandintRefusesAnEmptyRange) {
  NumpyRandomState rs(0);
  EXPECT_THROW(rs.randint(0, 0), Error);  // numpy: ValueError: low >= high
  EXPECT_THROW(rs.randint(5, 3), Error);
  EXPECT_EQ(rs.randint(7, 8), 7);
}

TEST(NumpyRandom, ReseedingRestartsTheStream) {
  NumpyRandomState rs(3);
  const int64_t a = rs.randint(0, 1000), b = rs.randint(0, 1000);
  rs.seed(3);
  EXPECT_EQ(rs.randint(0, 1000), a);
  EXPECT_EQ(rs.randint(0, 1000), b);
}

}  // namespace
}  // namespace ll
