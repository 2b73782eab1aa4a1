#include <gtest/gtest.h>

#include "daemon/net/backoff.hpp"
#include "daemon/net/circuit_breaker.hpp"

namespace orgd::net {
namespace {

using std::chrono::milliseconds;

TEST(HttpsBackoff, CeilingDoublesUpToTheCap) {
  const milliseconds initial{500};
  const milliseconds cap{30'000};
  EXPECT_EQ(backoff_ceiling(0, initial, cap), milliseconds{500});
  EXPECT_EQ(backoff_ceiling(1, initial, cap), milliseconds{1000});
  EXPECT_EQ(backoff_ceiling(5, initial, cap), milliseconds{16'000});
  EXPECT_EQ(backoff_ceiling(6, initial, cap), cap);
  EXPECT_EQ(backoff_ceiling(1000, initial, cap), cap);  // no overflow
}

TEST(HttpsBackoff, FullJitterStaysWithinZeroAndTheCeiling) {
  const milliseconds initial{500};
  const milliseconds cap{30'000};
  for (int retry = 0; retry < 12; ++retry) {
    EXPECT_EQ(backoff_delay(retry, initial, cap, 0.0), milliseconds{0});
    const auto ceiling = backoff_ceiling(retry, initial, cap);
    for (double u : {0.25, 0.5, 0.999999}) {
      const auto d = backoff_delay(retry, initial, cap, u);
      EXPECT_GE(d, milliseconds{0});
      EXPECT_LE(d, ceiling);
    }
    EXPECT_LE(backoff_delay(retry, initial, cap, 7.0), ceiling);  // out-of-range unit clamped
  }
  EXPECT_EQ(backoff_delay(2, initial, cap, 0.5), milliseconds{1000});
}

using Clock = std::chrono::steady_clock;

TEST(HttpsCircuitBreaker, OpensAfterConsecutiveFailuresAndFailsFast) {
  CircuitBreaker b{3, milliseconds{10'000}};
  const Clock::time_point t0{};
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(b.admit(t0).allowed);
    b.record_failure(t0);
  }
  EXPECT_EQ(b.state(t0), CircuitState::closed);
  ASSERT_TRUE(b.admit(t0).allowed);
  b.record_success();  // a success in between starts the count again
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(b.admit(t0).allowed);
    b.record_failure(t0);
  }
  EXPECT_EQ(b.state(t0), CircuitState::open);
  const auto refused = b.admit(t0 + milliseconds{4000});
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after, milliseconds{6000});
}

TEST(HttpsCircuitBreaker, HalfOpenLetsOneTrialThrough) {
  CircuitBreaker b{1, milliseconds{1000}};
  const Clock::time_point t0{};
  ASSERT_TRUE(b.admit(t0).allowed);
  b.record_failure(t0);
  ASSERT_EQ(b.state(t0), CircuitState::open);
  const auto later = t0 + milliseconds{1000};
  EXPECT_EQ(b.state(later), CircuitState::half_open);
  const auto trial = b.admit(later);
  ASSERT_TRUE(trial.allowed);
  EXPECT_TRUE(trial.trial);
  EXPECT_FALSE(b.admit(later).allowed);  // one trial at a time
  // The trial fails: open again for the full time.
  b.record_failure(later);
  EXPECT_EQ(b.state(later), CircuitState::open);
  EXPECT_FALSE(b.admit(later + milliseconds{999}).allowed);
  // The next trial succeeds: closed, everyone through.
  const auto second = b.admit(later + milliseconds{1000});
  ASSERT_TRUE(second.trial);
  b.record_success();
  EXPECT_EQ(b.state(later + milliseconds{1000}), CircuitState::closed);
  EXPECT_TRUE(b.admit(later + milliseconds{1000}).allowed);
  EXPECT_FALSE(b.admit(later + milliseconds{1000}).trial);
}

TEST(HttpsCircuitBreaker, AnAbandonedTrialFreesTheSlot) {
  CircuitBreaker b{1, milliseconds{1000}};
  const Clock::time_point t0{};
  ASSERT_TRUE(b.admit(t0).allowed);
  b.record_failure(t0);
  const auto later = t0 + milliseconds{1000};
  const auto trial = b.admit(later);
  ASSERT_TRUE(trial.trial);
  b.abandon(true);
  EXPECT_TRUE(b.admit(later).trial);
}

TEST(HttpsCircuitBreaker, ZeroFailuresTurnsItOff) {
  CircuitBreaker b{0, milliseconds{1000}};
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(b.admit({}).allowed);
    b.record_failure({});
  }
  EXPECT_EQ(b.state({}), CircuitState::closed);
}

}  // namespace
}  // namespace orgd::net
