#include "daemon/net/rate_limits.hpp"

#include "daemon/core/ascii.hpp"

#include <ctime>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

namespace orgd::net {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::optional<long> to_long(std::string_view s) {
  s = trim(s);
  long v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// Splits "item;k=v;k=v" into the item and its parameters.
template <class F>
void for_each_param(std::string_view text, F&& on_param) {
  std::size_t i = 0;
  while (i <= text.size()) {
    const auto end = text.find(';', i);
    const auto part = trim(text.substr(i, end == std::string_view::npos ? end : end - i));
    on_param(part);
    if (end == std::string_view::npos) break;
    i = end + 1;
  }
}

std::string unquote(std::string_view s) {
  s = trim(s);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return std::string{s};
}

milliseconds until(SystemTime when, SystemTime now) {
  if (when <= now) return milliseconds{0};
  return std::chrono::ceil<milliseconds>(when - now);
}

}  // namespace

std::optional<milliseconds> parse_retry_after(std::string_view value, SystemTime now) {
  value = trim(value);
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    const auto secs = to_long(value);
    if (!secs) return std::nullopt;
    return milliseconds{seconds{std::min(*secs, 86'400L * 7)}};
  }
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
  std::tm tm{};
  const std::string text{value};
  const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  const time_t t = timegm(&tm);
  if (t == static_cast<time_t>(-1)) return std::nullopt;
  return until(std::chrono::system_clock::from_time_t(t), now);
}

std::optional<RateLimitField> parse_ratelimit(std::string_view value) {
  value = trim(value);
  if (value.empty()) return std::nullopt;
  RateLimitField field;
  bool any = false;
  if (value.find('=') != std::string_view::npos && value.find(';') == std::string_view::npos &&
      value.find("remaining") != std::string_view::npos) {
    // The older draft: limit=100, remaining=50, reset=30.
    std::size_t i = 0;
    while (i < value.size()) {
      const auto end = value.find(',', i);
      const auto part = trim(value.substr(i, end == std::string_view::npos ? end : end - i));
      i = end == std::string_view::npos ? value.size() : end + 1;
      const auto eq = part.find('=');
      if (eq == std::string_view::npos) continue;
      const auto key = trim(part.substr(0, eq));
      const auto v = to_long(part.substr(eq + 1));
      if (!v) continue;
      if (key == "limit") field.limit = v, any = true;
      if (key == "remaining") field.remaining = v, any = true;
      if (key == "reset") field.reset_seconds = v, any = true;
    }
    return any ? std::optional{field} : std::nullopt;
  }
  // The structured form: only the first list member is read (one policy per API).
  value = value.substr(0, value.find(','));
  bool first = true;
  for_each_param(value, [&](std::string_view part) {
    if (first) {
      first = false;
      if (part.find('=') == std::string_view::npos) {
        field.policy = unquote(part);
        return;
      }
    }
    const auto eq = part.find('=');
    if (eq == std::string_view::npos) return;
    const auto key = trim(part.substr(0, eq));
    const auto v = to_long(part.substr(eq + 1));
    if (!v) return;
    if (key == "r") field.remaining = v, any = true;
    if (key == "t") field.reset_seconds = v, any = true;
  });
  return any ? std::optional{field} : std::nullopt;
}

std::optional<RateLimitPolicy> parse_ratelimit_policy(std::string_view value) {
  value = trim(value);
  if (value.empty()) return std::nullopt;
  value = value.substr(0, value.find(','));
  RateLimitPolicy policy;
  bool any = false;
  bool first = true;
  for_each_param(value, [&](std::string_view part) {
    if (first) {
      first = false;
      if (part.find('=') == std::string_view::npos) {
        if (const auto q = to_long(part)) {
          policy.quota = q;  // the older "100;w=60"
          any = true;
        } else {
          policy.name = unquote(part);
        }
        return;
      }
    }
    const auto eq = part.find('=');
    if (eq == std::string_view::npos) return;
    const auto key = trim(part.substr(0, eq));
    const auto v = to_long(part.substr(eq + 1));
    if (!v) return;
    if (key == "q") policy.quota = v, any = true;
    if (key == "w") policy.window_seconds = v, any = true;
  });
  return any ? std::optional{policy} : std::nullopt;
}

RateLimitSnapshot read_rate_limit(RateLimitHeaders kind, const HttpResponse& response,
                                  SystemTime now) {
  RateLimitSnapshot s;
  if (kind == RateLimitHeaders::github) {
    s.limit = to_long(response.header("x-ratelimit-limit"));
    s.remaining = to_long(response.header("x-ratelimit-remaining"));
    s.used = to_long(response.header("x-ratelimit-used"));
    if (const auto reset = to_long(response.header("x-ratelimit-reset"))) {
      s.reset = SystemTime{seconds{*reset}};
    }
    s.resource = std::string{trim(response.header("x-ratelimit-resource"))};
  } else if (kind == RateLimitHeaders::cloudflare) {
    if (const auto field = parse_ratelimit(response.header("ratelimit"))) {
      s.remaining = field->remaining;
      s.limit = field->limit;
      if (field->reset_seconds) s.reset = now + seconds{*field->reset_seconds};
      s.resource = field->policy;
    }
    if (const auto policy = parse_ratelimit_policy(response.header("ratelimit-policy"))) {
      if (policy->quota) s.limit = policy->quota;
      s.window_seconds = policy->window_seconds;
      if (s.resource.empty()) s.resource = policy->name;
    }
  }
  return s;
}

RateLimitDecision decide_rate_limit(RateLimitHeaders kind, const HttpResponse& response,
                                    SystemTime now, int consecutive_secondary) {
  const bool is_429 = response.status == 429;
  const bool is_403 = response.status == 403 && kind == RateLimitHeaders::github;
  if (!is_429 && !is_403) return {};
  const auto retry_after = parse_retry_after(response.header("retry-after"), now);
  const auto snapshot = read_rate_limit(kind, response, now);
  const bool exhausted = snapshot.remaining && *snapshot.remaining == 0 && snapshot.reset;
  if (is_403 && !retry_after && !exhausted && !icontains(response.body, "rate limit")) {
    return {};  // a permission answer
  }
  if (retry_after) return {Throttle::retry_after, std::max(*retry_after, milliseconds{1000})};
  if (exhausted)
    return {Throttle::primary, std::max(until(*snapshot.reset, now), milliseconds{1000})};
  const int doublings = std::clamp(consecutive_secondary, 0, 4);
  return {Throttle::secondary, milliseconds{kSecondaryWait} * (1 << doublings)};
}

RateLimitDecision RateLimitTracker::observe(const HttpResponse& response, SystemTime now) {
  const auto read = read_rate_limit(kind_, response, now);
  std::lock_guard lock(mutex_);
  if (read.limit) snapshot_.limit = read.limit;
  if (read.remaining) snapshot_.remaining = read.remaining;
  if (read.used) snapshot_.used = read.used;
  if (read.reset) snapshot_.reset = read.reset;
  if (!read.resource.empty()) snapshot_.resource = read.resource;
  if (read.window_seconds) snapshot_.window_seconds = read.window_seconds;

  const auto decision = decide_rate_limit(kind_, response, now, consecutive_secondary_);
  if (decision.throttle == Throttle::secondary) {
    ++consecutive_secondary_;
  } else if (!decision.limited()) {
    consecutive_secondary_ = 0;
  }
  auto hold = [&](SystemTime until_time) {
    if (!blocked_until_ || *blocked_until_ < until_time) blocked_until_ = until_time;
  };
  if (decision.limited()) hold(now + decision.wait);
  if (read.remaining && *read.remaining == 0 && read.reset && *read.reset > now) hold(*read.reset);
  return decision;
}

milliseconds RateLimitTracker::wait_before_send(SystemTime now) const {
  std::lock_guard lock(mutex_);
  if (!blocked_until_) return milliseconds{0};
  return until(*blocked_until_, now);
}

RateLimitSnapshot RateLimitTracker::snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_;
}

}  // namespace orgd::net
