#pragma once

// HttpsClient: the HttpTransport every HTTP provider is given (docs/https-client.md). Pooled
// keep-alive connections, TLS against the system CA store plus an optional CA file, CONNECT
// proxies, timeouts, retries with backoff, the provider's rate limits, a concurrency limit and
// a circuit breaker, metrics per provider, and a status for operators. send() is synchronous
// and may be called from many threads at once.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "daemon/core/environment.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/net/circuit_breaker.hpp"
#include "daemon/net/connection_pool.hpp"
#include "daemon/net/http_transport.hpp"
#include "daemon/net/proxy.hpp"
#include "daemon/net/rate_limits.hpp"

namespace orgd {

// Time, waiting, randomness and name resolution, replaceable so tests never sleep a real
// minute for a rate limit. Unset members take the real thing.
struct HttpsClientHooks {
  // Waits between tries and for rate limits (not I/O timeouts, which stay real).
  std::function<void(std::chrono::milliseconds)> sleep;
  std::function<std::chrono::steady_clock::time_point()> steady_now;
  std::function<std::chrono::system_clock::time_point()> system_now;
  std::function<double()> random_unit;  // uniform in [0, 1): the backoff's jitter
  // The address to dial for a host instead of resolving it (like curl --resolve): tests serve
  // a name the certificate does or does not hold on loopback.
  std::function<std::optional<std::string>(std::string_view host)> resolve;
};

// What operators see of a provider's client (P.api.providers): never a credential.
struct HttpClientStatus {
  std::string provider;
  std::optional<long> rate_limit;
  std::optional<long> rate_remaining;
  std::optional<std::chrono::system_clock::time_point> rate_reset;
  std::string rate_resource;
  std::string circuit;     // "closed", "half_open", "open" (as ProbeResult::circuit spells them)
  std::string last_error;  // the last failed call's message, "" when none yet
  std::uint64_t requests = 0;        // responses received (every try)
  std::uint64_t errors = 0;          // calls that ended in an error
  std::size_t idle_connections = 0;  // kept alive in the pool now
};

HttpTransportFactory make_https_transport_factory(MetricsRegistry& metrics, const Environment& env);

class HttpsClient final : public HttpTransport {
 public:
  // invalid_argument for an unreadable ca_file or a bad proxy URL. `metrics` may be null.
  static Result<std::shared_ptr<HttpsClient>> create(HttpClientOptions options,
                                                     MetricsRegistry* metrics,
                                                     HttpsClientHooks hooks = {});
  ~HttpsClient() override;

  Result<HttpResponse> send(HttpRequest request) override;

  HttpClientStatus status() const;
  // The budget the API's headers last reported (GitHub's x-ratelimit-*, Cloudflare's
  // Ratelimit / Ratelimit-Policy).
  net::RateLimitSnapshot rate_limit() const { return rate_limits_.snapshot(); }
  const HttpClientOptions& options() const { return options_; }

 private:
  friend HttpTransportFactory make_https_transport_factory(MetricsRegistry& metrics,
                                                           const Environment& env);
  struct Metrics;
  struct Slot;
  HttpsClient(HttpClientOptions options, MetricsRegistry* metrics, HttpsClientHooks hooks);

  std::chrono::steady_clock::time_point now() const { return hooks_.steady_now(); }
  Result<HttpResponse> send_admitted(const HttpRequest& request, const net::Url& url,
                                     const std::string& label, bool idempotent,
                                     std::chrono::steady_clock::time_point deadline,
                                     bool* health_failure, bool* health_unknown);
  net::Outcome<HttpResponse> exchange(const HttpRequest& request, const net::Url& url,
                                      bool idempotent,
                                      std::chrono::steady_clock::time_point deadline);
  std::chrono::milliseconds left(std::chrono::steady_clock::time_point deadline,
                                 std::chrono::milliseconds cap) const;
  double random_unit();
  Error fail(const std::string& kind, Error error);
  void count_response(int status, std::chrono::steady_clock::duration took);
  void publish_circuit_state();

  const HttpClientOptions options_;
  HttpsClientHooks hooks_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  std::shared_ptr<const net::ProxySettings> proxy_;
  net::ConnectionPool pool_;
  net::RateLimitTracker rate_limits_;
  net::CircuitBreaker breaker_;
  MetricsRegistry* metrics_registry_;
  std::unique_ptr<Metrics> metrics_;

  std::mutex slots_mutex_;  // guards in_flight_
  std::condition_variable slots_freed_;
  int in_flight_ = 0;

  std::mutex random_mutex_;  // guards random_
  std::mt19937_64 random_;

  mutable std::mutex status_mutex_;  // guards last_error_
  std::string last_error_;
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> errors_{0};
};

// The daemon's factory: one HttpsClient per provider, the proxy settings taken from `env`
// (https_proxy / HTTPS_PROXY, no_proxy / NO_PROXY) where the options leave them empty. `env` is
// read once, here; `metrics` is kept by reference and must outlive the factory and its clients.
HttpTransportFactory make_https_transport_factory(MetricsRegistry& metrics, const Environment& env);

// The status of a transport that is an HttpsClient; nullopt for any other (a test's fake).
std::optional<HttpClientStatus> http_client_status(const HttpTransport& transport);

}  // namespace orgd
