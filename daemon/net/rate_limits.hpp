#pragma once

// Reading an API's rate-limit headers and deciding how long to hold off (cloud-apis.md §1.5
// for GitHub, §2.3 for Cloudflare). Pure functions over a response and the current time, and a
// small tracker that remembers the budget across requests, so the client waits for a reset
// instead of spending requests that will be refused.

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/net/http_transport.hpp"

namespace orgd::net {

using SystemTime = std::chrono::system_clock::time_point;

// Retry-After: delay-seconds or an IMF-fixdate HTTP-date (RFC 9110 §10.2.3), as a wait from
// `now` (0 for a date in the past); nullopt when it is neither.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value, SystemTime now);

// `Ratelimit: "default";r=50;t=30` (IETF draft, structured-field form; the older
// `limit=100, remaining=50, reset=30` form is read too).
struct RateLimitField {
  std::string policy;                 // the policy name, "" when not given
  std::optional<long> remaining;      // r
  std::optional<long> reset_seconds;  // t
  std::optional<long> limit;          // only in the older form
};
std::optional<RateLimitField> parse_ratelimit(std::string_view value);

// `Ratelimit-Policy: "burst";q=100;w=60` (or the older `100;w=60`).
struct RateLimitPolicy {
  std::string name;
  std::optional<long> quota;           // q
  std::optional<long> window_seconds;  // w
};
std::optional<RateLimitPolicy> parse_ratelimit_policy(std::string_view value);

// What the last responses said about the budget; a field stays unset until a response has it.
struct RateLimitSnapshot {
  std::optional<long> limit;
  std::optional<long> remaining;
  std::optional<long> used;
  std::optional<SystemTime> reset;
  std::string resource;                // GitHub's x-ratelimit-resource, Cloudflare's policy
  std::optional<long> window_seconds;  // Cloudflare's Ratelimit-Policy w
};

// The budget a response reports (GitHub's x-ratelimit-*, Cloudflare's Ratelimit and
// Ratelimit-Policy); fields the response lacks are unset.
RateLimitSnapshot read_rate_limit(RateLimitHeaders kind, const HttpResponse& response,
                                  SystemTime now);

// Why a response was refused for the rate limit, if it was.
enum class Throttle { none, retry_after, primary, secondary };

struct RateLimitDecision {
  Throttle throttle = Throttle::none;
  std::chrono::milliseconds wait{0};
  bool limited() const { return throttle != Throttle::none; }
};

// The least wait before a secondary limit is tried again, doubled per consecutive refusal.
inline constexpr std::chrono::seconds kSecondaryWait{60};

// Whether `response` is a rate-limit refusal and how long to wait before trying again:
//  - 429, and with GitHub headers a 403 carrying a rate-limit sign (retry-after,
//    x-ratelimit-remaining: 0, or "rate limit" in the body); any other 403 is a permission
//    answer, not a limit;
//  - `retry-after` wins; else remaining 0 with a reset → until the reset (at least 1 s);
//    else Cloudflare's Ratelimit t; else a secondary limit: kSecondaryWait doubled for each of
//    `consecutive_secondary` refusals before this one (capped at 16 minutes).
RateLimitDecision decide_rate_limit(RateLimitHeaders kind, const HttpResponse& response,
                                    SystemTime now, int consecutive_secondary);

// The budget across requests (guarded: providers call from many threads).
class RateLimitTracker {
 public:
  explicit RateLimitTracker(RateLimitHeaders kind) : kind_(kind) {}

  // Reads a response's budget and decides on it; a refusal, or a budget of 0 with a reset
  // ahead, also holds back every request until then.
  RateLimitDecision observe(const HttpResponse& response, SystemTime now);
  // How long a new request must wait before it may be sent (0: send now).
  std::chrono::milliseconds wait_before_send(SystemTime now) const;
  RateLimitSnapshot snapshot() const;

 private:
  const RateLimitHeaders kind_;
  mutable std::mutex mutex_;  // guards the members below
  RateLimitSnapshot snapshot_;
  std::optional<SystemTime> blocked_until_;
  int consecutive_secondary_ = 0;
};

}  // namespace orgd::net
