// The two error macros: user-facing checks carry only their message; internal invariants add the failed condition
// and its source location.
#include <gtest/gtest.h>

#include <string>

#include "util/error.h"

namespace ll {
namespace {

std::string message_of(void (*fn)(int), int value) {
  try {
    fn(value);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void user_check(int v) { LL_CHECK(v > 0, "--max_steps must be > 0, got ", v); }
void internal_check(int v) { LL_ASSERT(v > 0, "arena: reserve() after commit()"); }

TEST(ErrorMacros, UserChecksCarryOnlyTheirMessage) {
  EXPECT_EQ(message_of(user_check, -3), "--max_steps must be > 0, got -3");
  EXPECT_EQ(message_of(user_check, 1), "") << "a passing check throws nothing";
}

TEST(ErrorMacros, InternalChecksNameTheConditionAndTheSourceLine) {
  const std::string m = message_of(internal_check, 0);
  EXPECT_EQ(m.rfind("arena: reserve() after commit()  [internal check `v > 0` failed at ", 0), 0u) << m;
  EXPECT_NE(m.find("tests/test_errors.cpp:"), std::string::npos) << m;
  EXPECT_EQ(message_of(internal_check, 2), "");
}

}  // namespace
}  // namespace ll
