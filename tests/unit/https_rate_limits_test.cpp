#include <gtest/gtest.h>

#include "daemon/net/rate_limits.hpp"

namespace orgd::net {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const SystemTime kNow{seconds{1'780'000'000}};

HttpResponse response(int status, std::vector<HttpHeader> headers, std::string body = "") {
  HttpResponse r;
  r.status = status;
  r.headers = std::move(headers);
  r.body = std::move(body);
  return r;
}

std::string epoch(SystemTime t) {
  return std::to_string(std::chrono::duration_cast<seconds>(t.time_since_epoch()).count());
}

TEST(HttpsRetryAfter, ReadsSecondsAndHttpDates) {
  EXPECT_EQ(parse_retry_after("120", kNow), milliseconds{120'000});
  EXPECT_EQ(parse_retry_after(" 0 ", kNow), milliseconds{0});
  // 1'780'000'000 is Thu, 28 May 2026 20:26:40 GMT.
  EXPECT_EQ(parse_retry_after("Thu, 28 May 2026 20:27:10 GMT", kNow), milliseconds{30'000});
  EXPECT_EQ(parse_retry_after("Thu, 28 May 2026 20:00:00 GMT", kNow), milliseconds{0});
  EXPECT_FALSE(parse_retry_after("", kNow));
  EXPECT_FALSE(parse_retry_after("soon", kNow));
  EXPECT_FALSE(parse_retry_after("-5", kNow));
  EXPECT_FALSE(parse_retry_after("Thu, 28 May 2026 20:27:10", kNow));
}

TEST(HttpsRatelimitHeader, ReadsTheStructuredAndTheOlderForm) {
  auto f = parse_ratelimit(R"("default";r=50;t=30)");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->policy, "default");
  EXPECT_EQ(f->remaining, 50);
  EXPECT_EQ(f->reset_seconds, 30);
  auto old = parse_ratelimit("limit=100, remaining=7, reset=12");
  ASSERT_TRUE(old);
  EXPECT_EQ(old->limit, 100);
  EXPECT_EQ(old->remaining, 7);
  EXPECT_EQ(old->reset_seconds, 12);
  EXPECT_FALSE(parse_ratelimit(""));
  EXPECT_FALSE(parse_ratelimit(R"("default")"));

  auto p = parse_ratelimit_policy(R"("burst";q=1200;w=300)");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->name, "burst");
  EXPECT_EQ(p->quota, 1200);
  EXPECT_EQ(p->window_seconds, 300);
  auto old_policy = parse_ratelimit_policy("100;w=60");
  ASSERT_TRUE(old_policy);
  EXPECT_EQ(old_policy->quota, 100);
  EXPECT_EQ(old_policy->window_seconds, 60);
}

TEST(HttpsRateLimitSnapshot, ReadsGithubAndCloudflareBudgets) {
  const auto gh = read_rate_limit(RateLimitHeaders::github,
                                  response(200, {{"X-RateLimit-Limit", "5000"},
                                                 {"X-RateLimit-Remaining", "4999"},
                                                 {"X-RateLimit-Used", "1"},
                                                 {"X-RateLimit-Reset", epoch(kNow + seconds{600})},
                                                 {"X-RateLimit-Resource", "core"}}),
                                  kNow);
  EXPECT_EQ(gh.limit, 5000);
  EXPECT_EQ(gh.remaining, 4999);
  EXPECT_EQ(gh.used, 1);
  EXPECT_EQ(gh.reset, kNow + seconds{600});
  EXPECT_EQ(gh.resource, "core");

  const auto cf = read_rate_limit(RateLimitHeaders::cloudflare,
                                  response(200, {{"Ratelimit", R"("default";r=1199;t=300)"},
                                                 {"Ratelimit-Policy", R"("burst";q=1200;w=300)"}}),
                                  kNow);
  EXPECT_EQ(cf.remaining, 1199);
  EXPECT_EQ(cf.limit, 1200);
  EXPECT_EQ(cf.window_seconds, 300);
  EXPECT_EQ(cf.reset, kNow + seconds{300});
  EXPECT_EQ(cf.resource, "default");

  // Headers of the other kind are not read.
  const auto none = read_rate_limit(RateLimitHeaders::none,
                                    response(200, {{"X-RateLimit-Remaining", "3"}}), kNow);
  EXPECT_FALSE(none.remaining);
}

TEST(HttpsGithubRateLimit, PrimaryLimitWaitsUntilTheReset) {
  const auto d = decide_rate_limit(
      RateLimitHeaders::github,
      response(403,
               {{"x-ratelimit-remaining", "0"}, {"x-ratelimit-reset", epoch(kNow + seconds{90})}},
               R"({"message":"API rate limit exceeded"})"),
      kNow, 0);
  EXPECT_EQ(d.throttle, Throttle::primary);
  EXPECT_EQ(d.wait, milliseconds{90'000});
  // A reset already past (clock skew) still waits a second, never zero.
  const auto past = decide_rate_limit(
      RateLimitHeaders::github,
      response(429,
               {{"x-ratelimit-remaining", "0"}, {"x-ratelimit-reset", epoch(kNow - seconds{5})}}),
      kNow, 0);
  EXPECT_EQ(past.throttle, Throttle::primary);
  EXPECT_EQ(past.wait, milliseconds{1000});
}

TEST(HttpsGithubRateLimit, RetryAfterWins) {
  const auto d =
      decide_rate_limit(RateLimitHeaders::github,
                        response(403, {{"retry-after", "17"},
                                       {"x-ratelimit-remaining", "0"},
                                       {"x-ratelimit-reset", epoch(kNow + seconds{900})}}),
                        kNow, 3);
  EXPECT_EQ(d.throttle, Throttle::retry_after);
  EXPECT_EQ(d.wait, milliseconds{17'000});
}

TEST(HttpsGithubRateLimit, SecondaryLimitWaitsAMinuteDoublingEachTime) {
  const auto secondary = response(
      403, {{"x-ratelimit-remaining", "4000"}},
      R"({"message":"You have exceeded a secondary rate limit. Please wait a few minutes."})");
  EXPECT_EQ(decide_rate_limit(RateLimitHeaders::github, secondary, kNow, 0).wait, seconds{60});
  EXPECT_EQ(decide_rate_limit(RateLimitHeaders::github, secondary, kNow, 1).wait, seconds{120});
  EXPECT_EQ(decide_rate_limit(RateLimitHeaders::github, secondary, kNow, 2).wait, seconds{240});
  EXPECT_EQ(decide_rate_limit(RateLimitHeaders::github, secondary, kNow, 9).wait, seconds{960});
  EXPECT_EQ(decide_rate_limit(RateLimitHeaders::github, secondary, kNow, 0).throttle,
            Throttle::secondary);
  // A 429 without any sign is a limit all the same.
  EXPECT_EQ(decide_rate_limit(RateLimitHeaders::github, response(429, {}), kNow, 0).wait,
            seconds{60});
}

TEST(HttpsGithubRateLimit, APermission403IsNotALimit) {
  const auto d =
      decide_rate_limit(RateLimitHeaders::github,
                        response(403, {{"x-ratelimit-remaining", "4000"}},
                                 R"({"message":"Resource not accessible by integration"})"),
                        kNow, 0);
  EXPECT_FALSE(d.limited());
  EXPECT_FALSE(decide_rate_limit(RateLimitHeaders::github, response(200, {}), kNow, 0).limited());
  // Without GitHub headers a 403 is never read as a limit.
  EXPECT_FALSE(
      decide_rate_limit(RateLimitHeaders::none, response(403, {}, "secondary rate limit"), kNow, 0)
          .limited());
}

TEST(HttpsCloudflareRateLimit, A429WaitsForRetryAfterOrTheRatelimitReset) {
  EXPECT_EQ(decide_rate_limit(RateLimitHeaders::cloudflare, response(429, {{"Retry-After", "42"}}),
                              kNow, 0)
                .wait,
            seconds{42});
  const auto by_header =
      decide_rate_limit(RateLimitHeaders::cloudflare,
                        response(429, {{"Ratelimit", R"("default";r=0;t=250)"}}), kNow, 0);
  EXPECT_EQ(by_header.throttle, Throttle::primary);
  EXPECT_EQ(by_header.wait, seconds{250});
}

TEST(HttpsRateLimitTracker, HoldsNewRequestsUntilAnExhaustedBudgetResets) {
  RateLimitTracker tracker{RateLimitHeaders::github};
  EXPECT_EQ(tracker.wait_before_send(kNow), milliseconds{0});
  // A success that spent the last request: the next must wait for the reset.
  const auto d = tracker.observe(response(200, {{"x-ratelimit-remaining", "0"},
                                                {"x-ratelimit-limit", "5000"},
                                                {"x-ratelimit-reset", epoch(kNow + seconds{30})}}),
                                 kNow);
  EXPECT_FALSE(d.limited());
  EXPECT_EQ(tracker.wait_before_send(kNow), seconds{30});
  EXPECT_EQ(tracker.wait_before_send(kNow + seconds{10}), seconds{20});
  EXPECT_EQ(tracker.wait_before_send(kNow + seconds{31}), milliseconds{0});
  EXPECT_EQ(tracker.snapshot().remaining, 0);
  EXPECT_EQ(tracker.snapshot().limit, 5000);
}

TEST(HttpsRateLimitTracker, ConsecutiveSecondaryLimitsDoubleAndASuccessResets) {
  RateLimitTracker tracker{RateLimitHeaders::github};
  const auto secondary = response(403, {}, "secondary rate limit");
  EXPECT_EQ(tracker.observe(secondary, kNow).wait, seconds{60});
  EXPECT_EQ(tracker.wait_before_send(kNow), seconds{60});
  EXPECT_EQ(tracker.observe(secondary, kNow + seconds{60}).wait, seconds{120});
  EXPECT_EQ(tracker.observe(secondary, kNow + seconds{180}).wait, seconds{240});
  EXPECT_FALSE(tracker.observe(response(200, {}), kNow + seconds{420}).limited());
  EXPECT_EQ(tracker.observe(secondary, kNow + seconds{421}).wait, seconds{60});
}

}  // namespace
}  // namespace orgd::net
