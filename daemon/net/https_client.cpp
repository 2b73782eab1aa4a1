#include "daemon/net/https_client.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ssl/context.hpp>
#include <cctype>
#include <fstream>
#include <thread>

#include "daemon/core/ascii.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/net/backoff.hpp"

namespace orgd {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

std::string seconds_text(milliseconds d) {
  return fmt::format("{:.1f} s", static_cast<double>(d.count()) / 1000.0);
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return std::isalnum(u) || std::string_view{"!#$%&'*+-.^_`|~"}.find(c) != std::string_view::npos;
  });
}

bool is_field_value(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u == '\r' || u == '\n' || u == '\0';
  });
}

bool idempotent_method(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" ||
         method == "OPTIONS";
}

bool retried_status(int status) {
  return status == 500 || status == 502 || status == 503 || status == 504;
}

std::string openssl_reason() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no certificate found";
  const char* reason = ERR_reason_error_string(code);
  return reason != nullptr ? reason : "unknown OpenSSL error";
}

std::shared_ptr<spdlog::logger> log() { return logging::get("net"); }

}  // namespace

struct HttpsClient::Metrics {
  std::array<Counter*, 6> by_class{};  // index status / 100, 2..5 (a 1xx is never final here)
  Histogram* duration = nullptr;
  Counter* retries = nullptr;
  Counter* rate_limit_waits = nullptr;
  Gauge* circuit_state = nullptr;
};

HttpsClient::HttpsClient(HttpClientOptions options, MetricsRegistry* metrics,
                         HttpsClientHooks hooks)
    : options_(std::move(options)),
      hooks_(std::move(hooks)),
      pool_(options_.max_idle_connections, options_.idle_timeout),
      rate_limits_(options_.rate_limit_headers),
      breaker_(options_.breaker_failures, options_.breaker_open_for),
      metrics_registry_(metrics),
      random_(std::random_device{}()) {
  if (!hooks_.sleep) hooks_.sleep = [](milliseconds d) { std::this_thread::sleep_for(d); };
  if (!hooks_.steady_now) hooks_.steady_now = [] { return Steady::now(); };
  if (!hooks_.system_now) hooks_.system_now = [] { return std::chrono::system_clock::now(); };
}

HttpsClient::~HttpsClient() = default;

Result<std::shared_ptr<HttpsClient>> HttpsClient::create(HttpClientOptions options,
                                                         MetricsRegistry* metrics,
                                                         HttpsClientHooks hooks) {
  auto proxy = net::parse_proxy(options.https_proxy);
  // The proxy URL may hold credentials: from here on they live in the Secret only.
  Secret::take(std::move(options.https_proxy));
  if (!proxy) {
    return permanent(invalid_argument("provider " + options.provider +
                                      ": HTTPS proxy: " + proxy.error().message));
  }
  if (proxy.value()) options.https_proxy = "http://" + proxy.value()->display();

  auto tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX* ctx = tls->native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  ERR_clear_error();
  if (SSL_CTX_set_default_verify_paths(ctx) != 1)
    ERR_clear_error();  // no system store: ca_file only
  if (!options.ca_file.empty()) {
    if (!std::ifstream{options.ca_file}.good()) {
      return permanent(invalid_argument("provider " + options.provider + ": ca_file " +
                                        options.ca_file + " cannot be read"));
    }
    if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
      return permanent(invalid_argument("provider " + options.provider + ": ca_file " +
                                        options.ca_file +
                                        " holds no usable PEM certificate: " + openssl_reason()));
    }
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);

  std::shared_ptr<HttpsClient> client{
      new HttpsClient(std::move(options), metrics, std::move(hooks))};
  client->tls_ = std::move(tls);
  client->proxy_ = std::move(proxy.value());
  client->metrics_ = std::make_unique<Metrics>();
  if (metrics != nullptr) {
    auto& m = *client->metrics_;
    const std::string& p = client->options_.provider;
    for (int c = 2; c <= 5; ++c) {
      m.by_class[static_cast<std::size_t>(c)] = &metrics->counter(
          "orgd_http_requests_total", "HTTP responses received from providers, by status class",
          {{"provider", p}, {"class", std::to_string(c) + "xx"}});
    }
    m.duration =
        &metrics->histogram("orgd_http_request_duration_seconds",
                            "Time from sending a request to a provider to its full response",
                            MetricsRegistry::latency_bounds(), {{"provider", p}});
    m.retries = &metrics->counter(
        "orgd_http_retries_total",
        "Requests to providers tried again after a 5xx or a lost connection", {{"provider", p}});
    m.rate_limit_waits =
        &metrics->counter("orgd_http_rate_limit_waits_total",
                          "Waits for a provider's rate limit before sending", {{"provider", p}});
    m.circuit_state = &metrics->gauge("orgd_http_circuit_state",
                                      "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
                                      {{"provider", p}});
  }
  return client;
}

milliseconds HttpsClient::left(Steady::time_point deadline, milliseconds cap) const {
  const auto remaining = std::chrono::ceil<milliseconds>(deadline - now());
  return std::max(milliseconds{1}, std::min(cap, remaining));
}

double HttpsClient::random_unit() {
  if (hooks_.random_unit) return hooks_.random_unit();
  std::lock_guard lock(random_mutex_);
  return std::uniform_real_distribution<double>{0.0, 1.0}(random_);
}

Error HttpsClient::fail(const std::string& kind, Error error) {
  errors_.fetch_add(1, std::memory_order_relaxed);
  if (metrics_registry_ != nullptr) {
    metrics_registry_
        ->counter("orgd_http_errors_total", "Calls to providers that ended in an error, by kind",
                  {{"provider", options_.provider}, {"kind", kind}})
        .inc();
  }
  {
    std::lock_guard lock(status_mutex_);
    last_error_ = error.message;
  }
  return error;
}

void HttpsClient::count_response(int status, Steady::duration took) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (metrics_registry_ == nullptr) return;
  const int c = std::clamp(status / 100, 2, 5);
  metrics_->by_class[static_cast<std::size_t>(c)]->inc();
  metrics_->duration->observe(std::chrono::duration<double>(took).count());
}

void HttpsClient::publish_circuit_state() {
  if (metrics_registry_ == nullptr) return;
  metrics_->circuit_state->set(static_cast<double>(breaker_.state(now())));
}

Result<HttpResponse> HttpsClient::send(HttpRequest request) {
  auto parsed = net::parse_url(request.url);
  if (!parsed) return fail("invalid_request", parsed.error());
  const net::Url& url = parsed.value();
  const std::string label = request.method + " " + url.redacted();
  if (!url.tls() && !net::is_loopback_host(url.host)) {
    return fail("invalid_request",
                permanent(invalid_argument(label + ": plain http:// is allowed to loopback hosts "
                                                   "only; use https://")));
  }
  if (!is_token(request.method)) {
    return fail("invalid_request", permanent(invalid_argument("HTTP method '" + request.method +
                                                              "' is not a valid token")));
  }
  for (const auto& h : request.headers) {
    if (!is_token(h.name) || !is_field_value(h.value)) {
      return fail("invalid_request",
                  permanent(invalid_argument(label + ": header '" + h.name +
                                             "' has a name or value not allowed in HTTP")));
    }
    if (iequals(h.name, "transfer-encoding")) {
      return fail("invalid_request",
                  permanent(invalid_argument(label + ": Transfer-Encoding is not supported")));
    }
  }
  if (request.authorization && !is_field_value(request.authorization->expose())) {
    return fail("invalid_request",
                permanent(invalid_argument(label + ": the Authorization value has a line break")));
  }
  const bool idempotent = request.idempotent.value_or(idempotent_method(request.method));
  const auto deadline = request.deadline.value_or(now() + options_.total_timeout);

  const auto admission = breaker_.admit(now());
  if (!admission.allowed) {
    publish_circuit_state();
    Error e = unavailable(
        label + ": circuit open after " + std::to_string(options_.breaker_failures) +
        " consecutive failed calls; " +
        (admission.retry_after.count() > 0 ? "next trial in " + seconds_text(admission.retry_after)
                                           : std::string{"a trial call is in flight"}));
    e.retry_after = admission.retry_after;
    return fail("circuit_open", std::move(e));
  }
  publish_circuit_state();

  const int limit = std::max(1, options_.max_concurrency);
  {
    std::unique_lock lock(slots_mutex_);
    while (in_flight_ >= limit) {
      if (now() >= deadline) {
        lock.unlock();
        breaker_.abandon(admission.trial);
        return fail("timeout", unavailable(label + ": no free request slot (max_concurrency " +
                                           std::to_string(limit) + ") before the deadline"));
      }
      slots_freed_.wait_for(lock, deadline - now());
    }
    ++in_flight_;
  }
  bool health_failure = false;
  bool health_unknown = false;
  auto result =
      send_admitted(request, url, label, idempotent, deadline, &health_failure, &health_unknown);
  {
    std::lock_guard lock(slots_mutex_);
    --in_flight_;
  }
  slots_freed_.notify_one();

  if (health_unknown) {
    breaker_.abandon(admission.trial);
  } else if (health_failure) {
    const bool was_open = breaker_.state(now()) == net::CircuitState::open;
    breaker_.record_failure(now());
    if (!was_open && breaker_.state(now()) == net::CircuitState::open) {
      log()->warn(
          "provider {}: circuit opened for {} after a failed call: {}", options_.provider,
          seconds_text(options_.breaker_open_for),
          result.ok() ? "HTTP " + std::to_string(result.value().status) : result.error().message);
    }
  } else {
    if (admission.trial) log()->info("provider {}: circuit closed again", options_.provider);
    breaker_.record_success();
  }
  publish_circuit_state();
  return result;
}

Result<HttpResponse> HttpsClient::send_admitted(const HttpRequest& request, const net::Url& url,
                                                const std::string& label, bool idempotent,
                                                Steady::time_point deadline, bool* health_failure,
                                                bool* health_unknown) {
  const int max_attempts = std::max(1, options_.max_attempts);
  int attempt = 0;
  int rate_limited_tries = 0;
  auto gave_up = [&](const std::string& what) {
    return attempt > 1 ? " (gave up after " + std::to_string(attempt) + " attempts" + what + ")"
                       : std::string{};
  };
  for (;;) {
    // Hold back while the API has said the budget is spent (every thread of this provider).
    const auto wait = rate_limits_.wait_before_send(hooks_.system_now());
    if (wait.count() > 0) {
      if (now() + wait > deadline) {
        *health_unknown = true;
        return fail("rate_limited",
                    rate_limited(label + ": rate limited by the API for another " +
                                     seconds_text(wait) + ", past the call's deadline",
                                 wait));
      }
      log()->info("provider {}: {}: waiting {} for the API's rate limit", options_.provider, label,
                  seconds_text(wait));
      if (metrics_ && metrics_->rate_limit_waits) metrics_->rate_limit_waits->inc();
      hooks_.sleep(wait);
      continue;
    }
    if (now() >= deadline) {
      *health_failure = attempt > 0;
      if (attempt == 0) *health_unknown = true;
      return fail("timeout", unavailable(label + ": the call's deadline passed" + gave_up("")));
    }
    ++attempt;
    auto outcome = exchange(request, url, idempotent, deadline);
    if (!outcome.ok()) {
      const auto& f = outcome.failure;
      // A certificate that does not verify, a proxy refusing the credentials, an answer over
      // the limit or one that is not HTTP come back the same on another try; a handshake cut
      // short by the network may not.
      const bool retry_kind = !f.permanent && f.kind != net::FailureKind::body_limit &&
                              f.kind != net::FailureKind::protocol;
      // A request that may have reached the server is sent again only when that is harmless.
      const bool may_resend = idempotent || f.nothing_sent;
      if (retry_kind && may_resend && attempt < max_attempts) {
        const auto delay = net::backoff_delay(attempt - 1, options_.backoff_initial,
                                              options_.backoff_max, random_unit());
        if (now() + delay < deadline) {
          log()->warn("provider {}: {}: {}; try {} of {} in {}", options_.provider, label,
                      f.message, attempt + 1, max_attempts, seconds_text(delay));
          if (metrics_ && metrics_->retries) metrics_->retries->inc();
          hooks_.sleep(delay);
          continue;
        }
      }
      if (f.kind == net::FailureKind::body_limit) {
        *health_unknown = true;
      } else {
        *health_failure = true;
      }
      Error e = unavailable(label + ": " + f.message + gave_up(""));
      if (f.permanent || f.kind == net::FailureKind::body_limit) e.retry = Retry::permanent;
      return fail(std::string{net::failure_kind_name(f.kind)}, std::move(e));
    }

    HttpResponse& response = *outcome.value;
    const auto decision = rate_limits_.observe(response, hooks_.system_now());
    if (metrics_registry_ != nullptr) {
      // Only once the API has reported a budget: a 0 before that would read as exhausted.
      if (const auto s = rate_limits_.snapshot(); s.remaining) {
        metrics_registry_
            ->gauge("orgd_http_rate_limit_remaining",
                    "Requests left in the provider's rate-limit window, as last reported",
                    {{"provider", options_.provider}})
            .set(static_cast<double>(*s.remaining));
      }
    }
    if (decision.limited()) {
      // Refused, not processed: sent again whatever the method, once the wait is over.
      ++rate_limited_tries;
      const char* why = decision.throttle == net::Throttle::primary     ? "rate limit exhausted"
                        : decision.throttle == net::Throttle::secondary ? "secondary rate limit"
                                                                        : "retry-after";
      if (rate_limited_tries >= max_attempts || now() + decision.wait > deadline) {
        *health_unknown = true;
        const std::string reason =
            rate_limited_tries >= max_attempts
                ? "gave up after " + std::to_string(rate_limited_tries) + " rate-limited tries"
                : "the wait is past the call's deadline";
        return fail(
            "rate_limited",
            rate_limited(label + ": HTTP " + std::to_string(response.status) + " (" + why +
                             "); try again in " + seconds_text(decision.wait) + "; " + reason,
                         decision.wait));
      }
      log()->warn("provider {}: {}: HTTP {} ({}); waiting {}", options_.provider, label,
                  response.status, why, seconds_text(decision.wait));
      continue;  // the tracker now holds every request back for the wait
    }
    if (retried_status(response.status)) {
      if (!idempotent) {
        *health_failure = true;
        return std::move(response);
      }
      if (attempt < max_attempts) {
        auto delay = net::backoff_delay(attempt - 1, options_.backoff_initial, options_.backoff_max,
                                        random_unit());
        if (const auto ra =
                net::parse_retry_after(response.header("retry-after"), hooks_.system_now())) {
          delay = std::max(delay, *ra);
        }
        if (now() + delay < deadline) {
          log()->warn("provider {}: {}: HTTP {}; try {} of {} in {}", options_.provider, label,
                      response.status, attempt + 1, max_attempts, seconds_text(delay));
          if (metrics_ && metrics_->retries) metrics_->retries->inc();
          hooks_.sleep(delay);
          continue;
        }
      }
      *health_failure = true;
      return fail("gave_up",
                  unavailable(label + ": gave up after " + std::to_string(attempt) +
                              (attempt == 1 ? " attempt" : " attempts") +
                              ", the last answered HTTP " + std::to_string(response.status)));
    }
    return std::move(response);
  }
}

net::Outcome<HttpResponse> HttpsClient::exchange(const HttpRequest& request, const net::Url& url,
                                                 bool idempotent, Steady::time_point deadline) {
  net::Route route;
  route.url = url;
  if (hooks_.resolve) {
    if (auto address = hooks_.resolve(url.host)) route.connect_address = std::move(*address);
  }
  if (net::use_proxy(proxy_.get(), options_.no_proxy, url.host, url.port))
    route.proxy = proxy_.get();
  const std::string origin = url.scheme + "://" + url.authority();

  std::string head =
      request.method + " " + url.target + " HTTP/1.1\r\nHost: " + url.host_header() + "\r\n";
  bool has_user_agent = false;
  for (const auto& h : request.headers) {
    if (iequals(h.name, "host") || iequals(h.name, "content-length")) continue;
    if (iequals(h.name, "user-agent")) has_user_agent = true;
    head += h.name + ": " + h.value + "\r\n";
  }
  if (!has_user_agent && !options_.user_agent.empty())
    head += "User-Agent: " + options_.user_agent + "\r\n";
  const bool head_request = request.method == "HEAD";
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT" ||
      request.method == "PATCH") {
    head += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
  }
  static constexpr std::string_view kAuthorization = "Authorization: ";
  static constexpr std::string_view kCrlf = "\r\n";
  std::vector<asio::const_buffer> buffers{asio::buffer(head)};
  if (request.authorization && !request.authorization->empty()) {
    buffers.emplace_back(asio::buffer(kAuthorization));
    buffers.emplace_back(asio::buffer(request.authorization->expose()));
    buffers.emplace_back(asio::buffer(kCrlf));
  }
  buffers.emplace_back(asio::buffer(kCrlf));
  if (!request.body.empty()) buffers.emplace_back(asio::buffer(request.body));

  for (int round = 0; round < 2; ++round) {
    // The second round runs only after a pooled connection turned out closed: a fresh one.
    auto connection = round == 0 ? pool_.take(origin) : nullptr;
    const bool reused = connection != nullptr;
    if (!connection) {
      auto opened = net::Connection::open(route, url.tls() ? tls_.get() : nullptr,
                                          left(deadline, options_.connect_timeout));
      if (!opened.ok()) {
        opened.failure.nothing_sent = true;
        return {std::nullopt, std::move(opened.failure)};
      }
      connection = std::move(*opened.value);
    }
    const auto started = Steady::now();
    auto written = connection->write(buffers, left(deadline, options_.read_timeout));
    if (!written.ok()) {
      if (reused) continue;
      return {std::nullopt, std::move(written.failure)};
    }
    auto answer = connection->read(head_request, options_.max_response_bytes,
                                   left(deadline, options_.read_timeout));
    if (!answer.ok()) {
      if (reused && answer.failure.nothing_received && idempotent &&
          answer.failure.kind == net::FailureKind::closed) {
        log()->debug("provider {}: a pooled connection to {} was closed; trying a new one",
                     options_.provider, url.authority());
        continue;
      }
      return {std::nullopt, std::move(answer.failure)};
    }
    count_response(answer.value->response.status, Steady::now() - started);
    if (answer.value->keep_alive) pool_.give_back(origin, std::move(connection));
    return {std::move(answer.value->response), {}};
  }
  return {std::nullopt,
          {net::FailureKind::closed, url.authority() + " closed the connection before answering"}};
}

HttpClientStatus HttpsClient::status() const {
  HttpClientStatus s;
  s.provider = options_.provider;
  const auto r = rate_limits_.snapshot();
  s.rate_limit = r.limit;
  s.rate_remaining = r.remaining;
  s.rate_reset = r.reset;
  s.rate_resource = r.resource;
  s.circuit = std::string{net::circuit_state_name(breaker_.state(hooks_.steady_now()))};
  {
    std::lock_guard lock(status_mutex_);
    s.last_error = last_error_;
  }
  s.requests = requests_.load(std::memory_order_relaxed);
  s.errors = errors_.load(std::memory_order_relaxed);
  s.idle_connections = pool_.idle();
  return s;
}

HttpTransportFactory make_https_transport_factory(MetricsRegistry& metrics,
                                                  const Environment& env) {
  auto pick = [&env](const char* lower, const char* upper) {
    auto v = env.get(lower);
    if (!v || v->empty()) v = env.get(upper);
    return v.value_or("");
  };
  // Parsed once here, so a proxy password is held as a Secret, not as the variable's text.
  auto proxy_text = pick("https_proxy", "HTTPS_PROXY");
  auto proxy = net::parse_proxy(proxy_text);
  Secret::take(std::move(proxy_text));
  auto no_proxy = pick("no_proxy", "NO_PROXY");
  std::optional<Error> proxy_error;
  std::shared_ptr<const net::ProxySettings> env_proxy;
  if (proxy) {
    env_proxy = proxy.value();
  } else {
    proxy_error = proxy.error();
  }
  return [&metrics, env_proxy, proxy_error,
          no_proxy](const HttpClientOptions& given) -> Result<std::shared_ptr<HttpTransport>> {
    HttpClientOptions options = given;
    const bool from_env = options.https_proxy.empty();
    if (from_env && proxy_error) {
      return permanent(invalid_argument("provider " + options.provider +
                                        ": HTTPS_PROXY: " + proxy_error->message));
    }
    if (options.no_proxy.empty()) options.no_proxy = no_proxy;
    auto client = HttpsClient::create(std::move(options), &metrics);
    if (!client) return client.error();
    if (from_env) client.value()->proxy_ = env_proxy;  // a friend: the parsed Secret is shared
    return std::shared_ptr<HttpTransport>{std::move(client.value())};
  };
}

std::optional<HttpClientStatus> http_client_status(const HttpTransport& transport) {
  if (const auto* client = dynamic_cast<const HttpsClient*>(&transport)) return client->status();
  return std::nullopt;
}

}  // namespace orgd
