// The guard every nats.c callback runs behind: nothing escapes it, each escape is counted, and
// the log limiter lets a bounded number of lines through.
#include "daemon/bus/callback_guard.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

#include "daemon/core/log_limiter.hpp"

namespace orgd {
namespace {

TEST(CallbackGuardTest, CatchesEverythingCountsItAndReturnsTheFallback) {
  MetricsRegistry metrics;
  Counter& errors = CallbackErrors::counter(metrics, "test.callback");
  EXPECT_EQ(errors.value(), 0);
  guard_callback("test.callback", &errors, [] { throw std::runtime_error("bad input"); });
  guard_callback("test.callback", &errors, [] { throw 42; });
  EXPECT_EQ(guard_callback_or("test.callback", &errors, -1,
                              []() -> int { throw std::out_of_range("x"); }),
            -1);
  EXPECT_EQ(guard_callback_or("test.callback", &errors, -1, [] { return 7; }), 7);
  bool ran = false;
  guard_callback("test.callback", &errors, [&] { ran = true; });
  EXPECT_TRUE(ran);
  EXPECT_EQ(errors.value(), 3);
  // Without a counter it still catches.
  guard_callback("test.callback", nullptr, [] { throw std::runtime_error("no metrics"); });
  EXPECT_NE(metrics.render().find(R"(orgd_callback_errors_total{callback="test.callback"} 3)"),
            std::string::npos)
      << metrics.render();
}

TEST(LogLimiterTest, LetsAFewLinesThroughPerSecondAndCountsTheRest) {
  LogLimiter limiter(3);
  int allowed = 0;
  // Within one window (or at most two, if a second boundary passes): 3 or 6 allowed.
  for (int i = 0; i < 1000; ++i) allowed += limiter.allow() ? 1 : 0;
  EXPECT_GE(allowed, 3);
  EXPECT_LE(allowed, 6);
}

}  // namespace
}  // namespace orgd
