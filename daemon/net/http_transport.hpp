#pragma once

// The HTTP transport providers are given (DESIGN.md §8): one request in, one response out, with
// the retries, waits, rate limits, pooling and TLS of the client behind it. Providers see only
// this interface; the daemon builds one client per provider (daemon/net/https_client.*), tests
// may give a provider any other.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"

namespace orgd {

struct HttpHeader {
  std::string name;
  std::string value;
};

struct HttpRequest {
  std::string method = "GET";
  // Absolute: https://host[:port]/path?query (http:// only to loopback hosts).
  std::string url;
  std::vector<HttpHeader> headers;
  std::string body;
  // The Authorization header's value ("Bearer …", "token …"), written to the wire only: never
  // logged, never in an error message or a metric.
  std::shared_ptr<const Secret> authorization;
  // Whether the request may be sent again after a failure that may have reached the server (a
  // 5xx, a connection lost mid-answer). Unset: by method (GET, HEAD, PUT, DELETE, OPTIONS are).
  std::optional<bool> idempotent;
  // The latest the whole call (tries, waits between them, rate-limit waits) may end. Unset: the
  // client's total timeout from now.
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

struct HttpResponse {
  int status = 0;
  std::vector<HttpHeader> headers;
  std::string body;

  // The first value of a header, its name compared case-insensitively; empty when absent.
  std::string_view header(std::string_view name) const;
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // A response of any status is a value: the caller reads its API's errors from it. An error is
  // no response: connection, TLS, timeout, body over the limit, the circuit open, or a rate
  // limit that lasts past the deadline (Retry::rate_limited with retry_after).
  virtual Result<HttpResponse> send(HttpRequest request) = 0;
};

// Whose rate-limit headers the client reads (cloud-apis.md §1.5, §2.3).
enum class RateLimitHeaders { none, github, cloudflare };

// What a provider's client is built with; the daemon fills the proxy settings from its
// environment and the limits from the provider's settings.
struct HttpClientOptions {
  std::string provider;  // the provider instance: metrics label, log lines
  std::string ca_file;   // an extra CA bundle (PEM) trusted besides the system store
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds read_timeout{30'000};
  std::chrono::milliseconds total_timeout{120'000};
  std::size_t max_response_bytes = 16u << 20;
  int max_attempts = 4;  // tries of an idempotent request on 5xx and connection errors
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30'000};
  int max_concurrency = 8;  // requests of this provider in flight at once
  // Idle keep-alive connections kept per (scheme, host, port), and how long one may sit idle
  // before it is closed instead of reused (servers drop theirs after a minute or so).
  std::size_t max_idle_connections = 4;
  std::chrono::milliseconds idle_timeout{50'000};
  int breaker_failures = 5;  // consecutive failed calls that open the circuit
  std::chrono::milliseconds breaker_open_for{30'000};
  RateLimitHeaders rate_limit_headers = RateLimitHeaders::none;
  std::string user_agent = "orgd";
  std::string https_proxy;  // HTTPS_PROXY / https_proxy
  std::string no_proxy;     // NO_PROXY / no_proxy
};

// Builds a provider's transport (an error for an unreadable ca_file, a bad proxy URL).
using HttpTransportFactory =
    std::function<Result<std::shared_ptr<HttpTransport>>(const HttpClientOptions&)>;

}  // namespace orgd
