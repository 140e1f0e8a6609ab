// DILATRON_RING_TIMEOUT_S and the polling every transport's watchdog runs on.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <cstdlib>

#include "runtime/ring/timeout.hpp"

using namespace dilatron;
using namespace dilatron::ring;
using std::chrono::milliseconds;

TEST(RingTimeout, ParsesPlainDecimalSeconds) {
  EXPECT_EQ(parse_ring_timeout("300"), milliseconds(300'000));
  EXPECT_EQ(parse_ring_timeout("2.5"), milliseconds(2'500));
  EXPECT_EQ(parse_ring_timeout("0.001"), milliseconds(1));
  EXPECT_EQ(parse_ring_timeout(".25"), milliseconds(250));
  EXPECT_EQ(parse_ring_timeout("7."), milliseconds(7'000));
  EXPECT_EQ(parse_ring_timeout("0012"), milliseconds(12'000));
  EXPECT_EQ(parse_ring_timeout("1.23456"), milliseconds(1'234)) << "below a millisecond is dropped";
  EXPECT_EQ(parse_ring_timeout("31622400"), milliseconds(31'622'400'000)) << "a year (366 days) is the most";
}

TEST(RingTimeout, RefusesAnythingElseNamingTheVariableAndTheText) {
  for (const char* bad : {"", "0", "0.0004", "-5", "+5", "5s", " 5", "5 ", "1e3", "inf", "nan", "0x10", "1,5", ".",
                          "1.2.3", "31622401", "99999999999999999999999"}) {
    try {
      parse_ring_timeout(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("DILATRON_RING_TIMEOUT_S='" + std::string(bad) + "'"), std::string::npos) << what;
      EXPECT_EQ(e.kind(), ErrorKind::invalid);
    }
  }
}

TEST(RingTimeout, ComesFromTheEnvironmentWithA300SecondDefault) {
  ::unsetenv("DILATRON_RING_TIMEOUT_S");
  EXPECT_EQ(ring_timeout(), milliseconds(300'000));
  ::setenv("DILATRON_RING_TIMEOUT_S", "", 1);
  EXPECT_EQ(ring_timeout(), milliseconds(300'000)) << "empty means unset";
  ::setenv("DILATRON_RING_TIMEOUT_S", "45", 1);
  EXPECT_EQ(ring_timeout(), milliseconds(45'000));
  ::setenv("DILATRON_RING_TIMEOUT_S", "45 s", 1);
  EXPECT_THROW(ring_timeout(), Error);
  ::unsetenv("DILATRON_RING_TIMEOUT_S");
}

TEST(PollUntil, ReturnsAsSoonAsTheConditionHoldsAndGivesUpAtTheLimit) {
  using Clock = std::chrono::steady_clock;
  int calls = 0;
  EXPECT_TRUE(poll_until([&] { return ++calls == 5; }, milliseconds(10'000)));
  EXPECT_EQ(calls, 5);

  const Clock::time_point start = Clock::now();
  EXPECT_FALSE(poll_until([] { return false; }, milliseconds(150)));
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, milliseconds(150));
  EXPECT_LT(waited, milliseconds(1'500));

  const Clock::time_point later = Clock::now() + milliseconds(100);
  EXPECT_TRUE(poll_until([&] { return Clock::now() >= later; }, milliseconds(10'000), milliseconds(20)));
  EXPECT_LT(Clock::now() - later, milliseconds(500)) << "the pause is capped";

  EXPECT_THROW(poll_until([]() -> bool { throw Error("broken"); }, milliseconds(1'000)), Error);
}
