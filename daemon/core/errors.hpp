#pragma once

#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace orgd {

// The error kinds of the API (DESIGN.md §5), each with an HTTP-like number.
// too_large: an answer over what the NATS connection carries (its max_payload); the message says
// what to ask for instead (a page, a filter).
enum class ErrorCode { invalid_argument, not_found, conflict, too_large, unavailable, internal };

constexpr int http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return 400;
    case ErrorCode::not_found: return 404;
    case ErrorCode::conflict: return 409;
    case ErrorCode::too_large: return 413;
    case ErrorCode::unavailable: return 503;
    case ErrorCode::internal: return 500;
  }
  return 500;
}

constexpr std::string_view code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::conflict: return "conflict";
    case ErrorCode::too_large: return "too_large";
    case ErrorCode::unavailable: return "unavailable";
    case ErrorCode::internal: return "internal";
  }
  return "internal";
}

// How a failed call to something outside orgd (a cloud API, a provider) may be tried again:
// `retryable` (later, by the caller's own backoff: a 5xx, a lost connection), `rate_limited`
// (not before retry_after: the API said so), `permanent` (never: bad settings, a 4xx that
// will not change). Errors of orgd's own API keep the default.
enum class Retry { retryable, rate_limited, permanent };

constexpr std::string_view retry_name(Retry retry) {
  switch (retry) {
    case Retry::retryable: return "retryable";
    case Retry::rate_limited: return "rate_limited";
    case Retry::permanent: return "permanent";
  }
  return "retryable";
}

struct Error {
  ErrorCode code = ErrorCode::internal;
  std::string message;
  Retry retry = Retry::retryable;
  // rate_limited: the earliest a new try may be made, from now (an API's retry-after or reset).
  std::chrono::milliseconds retry_after{0};
};

inline Error invalid_argument(std::string message) {
  return {ErrorCode::invalid_argument, std::move(message)};
}
inline Error not_found(std::string message) { return {ErrorCode::not_found, std::move(message)}; }
inline Error conflict(std::string message) { return {ErrorCode::conflict, std::move(message)}; }
inline Error too_large(std::string message) {
  Error e{ErrorCode::too_large, std::move(message)};
  e.retry = Retry::permanent;  // the same request gets the same answer
  return e;
}
inline Error unavailable(std::string message) {
  return {ErrorCode::unavailable, std::move(message)};
}
inline Error internal_error(std::string message) {
  return {ErrorCode::internal, std::move(message)};
}
// A failure that trying again will not mend.
inline Error permanent(Error error) {
  error.retry = Retry::permanent;
  return error;
}
// A call refused by an API's rate limit: try again no sooner than `after`.
inline Error rate_limited(std::string message, std::chrono::milliseconds after) {
  Error e{ErrorCode::unavailable, std::move(message)};
  e.retry = Retry::rate_limited;
  e.retry_after = after;
  return e;
}

// Steady-state handlers return a Result instead of throwing (STYLE.md: errors).
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}       // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}   // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};

// Raised while loading configuration: every problem found, each naming file, line and key.
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems)
      : std::runtime_error(join(problems)), problems_(std::move(problems)) {}
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  static std::string join(const std::vector<std::string>& problems) {
    std::string out;
    for (const auto& p : problems) {
      if (!out.empty()) out += '\n';
      out += p;
    }
    return out;
  }
  std::vector<std::string> problems_;
};

}  // namespace orgd
