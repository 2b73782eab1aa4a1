#include "daemon/net/https_client.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <thread>

#include "daemon/core/logging.hpp"
#include "daemon/core/metrics.hpp"
#include "tests/fakes/http_server.hpp"
#include "tests/support/connect_proxy.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/test_pki.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::ConnectProxy;
using testing::FakeHttpServer;
using testing::FakeRequest;
using testing::FakeResponse;

// Waits are recorded and move the client's clocks forward instead of sleeping; I/O stays real.
class FakeTime {
 public:
  HttpsClientHooks hooks() {
    HttpsClientHooks h;
    h.sleep = [this](milliseconds d) {
      std::lock_guard lock(mutex_);
      sleeps_.push_back(d);
      offset_ += d;
    };
    h.steady_now = [this] { return std::chrono::steady_clock::now() + offset(); };
    h.system_now = [this] { return std::chrono::system_clock::now() + offset(); };
    return h;
  }
  void advance(milliseconds d) {
    std::lock_guard lock(mutex_);
    offset_ += d;
  }
  std::vector<milliseconds> sleeps() const {
    std::lock_guard lock(mutex_);
    return sleeps_;
  }
  milliseconds slept() const {
    milliseconds total{0};
    for (const auto d : sleeps()) total += d;
    return total;
  }

 private:
  milliseconds offset() const {
    std::lock_guard lock(mutex_);
    return offset_;
  }
  mutable std::mutex mutex_;  // guards the members below
  std::vector<milliseconds> sleeps_;
  milliseconds offset_{0};
};

// A CA with its 127.0.0.1/localhost server certificate and one more for a name that is not
// loopback (the proxy tests: loopback hosts never go through a proxy), and a second CA that
// trusts neither. Made on first use, once per test process: plain-HTTP tests need none.
class HttpsClientTest : public ::testing::Test {
 protected:
  static const testing::TestPki& pki() {
    static const auto made = [] {
      auto p = std::make_unique<testing::TestPki>();
      if (!p->make()) throw std::runtime_error("openssl could not make the test PKI");
      const std::string script =
          "set -e; cd '" + p->dir.str() +
          "'; printf 'subjectAltName=DNS:api.example.test\\n' > named.ext;"
          "openssl req -newkey rsa:2048 -nodes -subj /CN=api.example.test -keyout named-key.pem "
          "-out named.csr >/dev/null 2>&1;"
          "openssl x509 -req -in named.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 "
          "-extfile named.ext -out named.pem >/dev/null 2>&1";
      if (std::system(("bash -c \"" + script + "\"").c_str()) != 0) {
        throw std::runtime_error("openssl could not make the api.example.test certificate");
      }
      return p;
    }();
    return *made;
  }
  static const testing::TestPki& other_pki() {
    static const auto made = [] {
      auto p = std::make_unique<testing::TestPki>();
      if (!p->make()) throw std::runtime_error("openssl could not make the second test PKI");
      return p;
    }();
    return *made;
  }

  static FakeHttpServer::Options tls_options(const char* cert = "server.pem",
                                             const char* key = "server-key.pem") {
    FakeHttpServer::Options o;
    o.tls = true;
    o.cert_file = pki().path(cert);
    o.key_file = pki().path(key);
    return o;
  }

  HttpClientOptions options() const {
    HttpClientOptions o;
    o.provider = "test";
    o.backoff_initial = milliseconds{100};
    o.backoff_max = milliseconds{1000};
    o.connect_timeout = milliseconds{5000};
    o.read_timeout = milliseconds{5000};
    return o;
  }

  std::shared_ptr<HttpsClient> client(HttpClientOptions o) {
    auto c = HttpsClient::create(std::move(o), &metrics_, time_.hooks());
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? c.value() : nullptr;
  }

  static HttpRequest get(const std::string& url) {
    HttpRequest r;
    r.url = url;
    return r;
  }

  MetricsRegistry metrics_;
  FakeTime time_;
};

FakeResponse ok(std::string body = "ok") {
  FakeResponse r;
  r.body = std::move(body);
  return r;
}

FakeResponse status(int code, std::vector<HttpHeader> headers = {}, std::string body = "") {
  FakeResponse r;
  r.status = code;
  r.headers = std::move(headers);
  r.body = std::move(body);
  return r;
}

std::string epoch_in(seconds from_now) {
  return std::to_string(std::chrono::duration_cast<seconds>(
                            (std::chrono::system_clock::now() + from_now).time_since_epoch())
                            .count());
}

TEST_F(HttpsClientTest, TenRequestsReuseOneConnection) {
  FakeHttpServer server{[](const FakeRequest& r) { return ok("hello " + r.path); }};
  auto c = client(options());
  for (int i = 0; i < 10; ++i) {
    auto r = c->send(get(server.base_url() + "/n/" + std::to_string(i) + "?q=1"));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value().status, 200);
    EXPECT_EQ(r.value().body, "hello /n/" + std::to_string(i));
  }
  EXPECT_EQ(server.connections_accepted(), 1u);
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 10u);
  EXPECT_EQ(requests[3].query, "q=1");
  EXPECT_EQ(requests[3].header("user-agent"), "orgd");
  EXPECT_EQ(requests[3].header("host"), "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(c->status().requests, 10u);
}

TEST_F(HttpsClientTest, PutSendsBodyHeadersAndAuthorization) {
  FakeHttpServer server{[](const FakeRequest&) { return status(204); }};
  auto c = client(options());
  HttpRequest put;
  put.method = "PUT";
  put.url = server.base_url() + "/repos/acme/api/actions/secrets/X";
  put.headers = {{"Content-Type", "application/json"}, {"Accept", "application/vnd.github+json"}};
  put.body = R"({"encrypted_value":"abc","key_id":"1"})";
  put.authorization = std::make_shared<const Secret>(Secret::from("Bearer tok-123"));
  auto r = c->send(put);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value().status, 204);
  const auto seen = server.requests().at(0);
  EXPECT_EQ(seen.method, "PUT");
  EXPECT_EQ(seen.body, put.body);
  EXPECT_EQ(seen.header("authorization"), "Bearer tok-123");
  EXPECT_EQ(seen.header("content-type"), "application/json");
  EXPECT_EQ(seen.header("content-length"), std::to_string(put.body.size()));
}

TEST_F(HttpsClientTest, TlsWithTheCaFileWorks) {
  FakeHttpServer server{[](const FakeRequest&) { return ok("secure"); }, tls_options()};
  auto o = options();
  o.ca_file = pki().path("ca.pem");
  auto c = client(o);
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    auto r = c->send(get("https://" + host + ":" + std::to_string(server.port()) + "/x"));
    ASSERT_TRUE(r.ok()) << host << ": " << r.error().message;
    EXPECT_EQ(r.value().body, "secure");
  }
  // Kept alive over TLS too: one connection per host.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c->send(get(server.base_url() + "/y")).ok());
  EXPECT_EQ(server.connections_accepted(), 2u);
}

TEST_F(HttpsClientTest, AWrongCaIsAClearTlsError) {
  FakeHttpServer server{[](const FakeRequest&) { return ok(); }, tls_options()};
  auto o = options();
  o.ca_file = other_pki().path("ca.pem");
  auto c = client(o);
  auto r = c->send(get(server.base_url() + "/x"));
  ASSERT_FALSE(r.ok());
  const std::string& m = r.error().message;
  EXPECT_NE(m.find("TLS handshake with 127.0.0.1:" + std::to_string(server.port()) +
                   " failed: certificate verify failed"),
            std::string::npos)
      << m;
  EXPECT_EQ(m.find("stream truncated"), std::string::npos) << m;
  EXPECT_EQ(r.error().retry, Retry::permanent);
  EXPECT_EQ(server.request_count(), 0u);
  EXPECT_EQ(server.connections_accepted(), 1u);  // a failed check is not tried again

  // No CA file at all: the system store does not know the test CA either.
  auto system_only = client(options());
  auto r2 = system_only->send(get(server.base_url() + "/x"));
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().message.find("certificate verify failed"), std::string::npos)
      << r2.error().message;
}

TEST_F(HttpsClientTest, AHostNameTheCertificateDoesNotHoldIsRefused) {
  FakeHttpServer server{[](const FakeRequest&) { return ok(); }, tls_options()};
  auto o = options();
  o.ca_file = pki().path("ca.pem");
  auto hooks = time_.hooks();
  hooks.resolve = [](std::string_view host) -> std::optional<std::string> {
    if (host == "wrong.example.test") return "127.0.0.1";
    return std::nullopt;
  };
  auto c = HttpsClient::create(o, &metrics_, hooks).value();
  auto r = c->send(get("https://wrong.example.test:" + std::to_string(server.port()) + "/x"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("TLS handshake with wrong.example.test:"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("mismatch"), std::string::npos) << r.error().message;
  EXPECT_EQ(server.request_count(), 0u);
}

TEST_F(HttpsClientTest, PlainHttpGoesToLoopbackOnly) {
  auto c = client(options());
  auto r = c->send(get("http://api.github.com/rate_limit"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(r.error().retry, Retry::permanent);
  EXPECT_NE(r.error().message.find("loopback"), std::string::npos) << r.error().message;
  auto bad = c->send(get("ftp://127.0.0.1/x"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::invalid_argument);
}

TEST_F(HttpsClientTest, ASlowAnswerIsATimeout) {
  FakeHttpServer server{[](const FakeRequest&) {
    auto r = ok();
    r.delay = milliseconds{3000};
    return r;
  }};
  auto o = options();
  o.read_timeout = milliseconds{200};
  o.max_attempts = 1;
  auto c = client(o);
  const auto started = std::chrono::steady_clock::now();
  auto r = c->send(get(server.base_url() + "/slow"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("read timeout"), std::string::npos) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds{2500});

  // The request's deadline bounds the call as well.
  auto c2 = client(options());
  HttpRequest req = get(server.base_url() + "/slow");
  req.deadline = time_.hooks().steady_now() + milliseconds{300};
  auto r2 = c2->send(req);
  ASSERT_FALSE(r2.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds{5000});
}

TEST_F(HttpsClientTest, AHandshakeThatNeverAnswersIsAConnectTimeout) {
  // Listening, never accepting: the kernel completes the TCP handshake, nobody answers TLS.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string port = std::to_string(ntohs(addr.sin_port));
  auto o = options();
  o.connect_timeout = milliseconds{200};
  o.max_attempts = 1;
  auto c = client(o);
  const auto started = std::chrono::steady_clock::now();
  auto r = c->send(get("https://127.0.0.1:" + port + "/x"));
  const auto took = std::chrono::steady_clock::now() - started;
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("TLS handshake with 127.0.0.1:" + port +
                                   " failed: timed out after 200 ms"),
            std::string::npos)
      << r.error().message;
  EXPECT_LT(took, milliseconds{3000});
}

TEST_F(HttpsClientTest, ABodyOverTheLimitIsAClearError) {
  FakeHttpServer server{[](const FakeRequest&) { return ok(std::string(5000, 'x')); }};
  auto o = options();
  o.max_response_bytes = 1000;
  auto c = client(o);
  auto r = c->send(get(server.base_url() + "/big"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("over the body limit of 1000 bytes"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(server.request_count(), 1u);  // not retried
  o.max_response_bytes = 5000;
  auto roomy = client(o);
  ASSERT_TRUE(roomy->send(get(server.base_url() + "/big")).ok());
}

TEST_F(HttpsClientTest, A5xxBurstThenSuccess) {
  std::atomic<int> calls{0};
  FakeHttpServer server{[&](const FakeRequest&) {
    const int n = ++calls;
    if (n == 1) return status(503);
    if (n == 2) return status(502);
    return ok("finally");
  }};
  auto c = client(options());
  auto r = c->send(get(server.base_url() + "/flaky"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value().body, "finally");
  EXPECT_EQ(server.request_count(), 3u);
  ASSERT_EQ(time_.sleeps().size(), 2u);
  // Full jitter: each wait is within its ceiling (100 ms, then 200 ms).
  EXPECT_LE(time_.sleeps()[0], milliseconds{100});
  EXPECT_LE(time_.sleeps()[1], milliseconds{200});
  EXPECT_NE(metrics_.render().find(R"(orgd_http_retries_total{provider="test"} 2)"),
            std::string::npos);
  EXPECT_NE(metrics_.render().find(R"(orgd_http_requests_total{class="5xx",provider="test"} 2)"),
            std::string::npos)
      << metrics_.render();
}

TEST_F(HttpsClientTest, GivesUpAfterMaxAttemptsNamingTheLastStatus) {
  FakeHttpServer server{[](const FakeRequest&) { return status(502); }};
  auto o = options();
  o.max_attempts = 4;
  auto c = client(o);
  auto r = c->send(get(server.base_url() + "/down"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("gave up after 4 attempts"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("HTTP 502"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().retry, Retry::retryable);
  EXPECT_EQ(server.request_count(), 4u);
}

TEST_F(HttpsClientTest, ConnectionErrorsAreRetriedThenReported) {
  testing::RefusingPort refusing;
  auto o = options();
  o.max_attempts = 3;
  auto c = client(o);
  HttpRequest post = get("http://127.0.0.1:" + std::to_string(refusing.port()) + "/x");
  post.method = "POST";  // never sent: trying again is harmless whatever the method
  auto r = c->send(post);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("connecting to 127.0.0.1:" + std::to_string(refusing.port()) +
                                   " failed"),
            std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("gave up after 3 attempts"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(time_.sleeps().size(), 2u);
  EXPECT_NE(metrics_.render().find(R"(orgd_http_errors_total{kind="connect",provider="test"} 1)"),
            std::string::npos)
      << metrics_.render();
}

TEST_F(HttpsClientTest, A503RetryAfterIsWaitedBeforeTheNextTry) {
  std::atomic<int> calls{0};
  FakeHttpServer server{[&](const FakeRequest&) {
    return ++calls == 1 ? status(503, {{"Retry-After", "5"}}) : ok();
  }};
  auto c = client(options());
  auto r = c->send(get(server.base_url() + "/maintenance"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(server.request_count(), 2u);
  ASSERT_EQ(time_.sleeps().size(), 1u);
  EXPECT_GE(time_.sleeps()[0], seconds{5});  // more than the 100 ms backoff ceiling
}

TEST_F(HttpsClientTest, HeadAndConnectionCloseAnswersAreRead) {
  FakeHttpServer server{[](const FakeRequest& r) {
    FakeResponse answer = ok("a body a HEAD answer does not carry");
    if (r.path == "/close") answer.headers = {{"Connection", "close"}};
    return answer;
  }};
  auto c = client(options());
  HttpRequest head = get(server.base_url() + "/head");
  head.method = "HEAD";
  auto h = c->send(head);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h.value().status, 200);
  EXPECT_TRUE(h.value().body.empty());
  // The connection stays usable after a HEAD.
  auto g = c->send(get(server.base_url() + "/head"));
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(g.value().body, "a body a HEAD answer does not carry");
  EXPECT_EQ(server.connections_accepted(), 1u);
  // A server that says close is not asked again on that connection.
  for (int i = 0; i < 3; ++i) {
    auto r = c->send(get(server.base_url() + "/close"));
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  // The first of them still goes on the kept-alive connection; each after it needs a new one.
  EXPECT_EQ(server.connections_accepted(), 3u);
}

TEST_F(HttpsClientTest, PostIsNotRetriedOn5xxUnlessIdempotent) {
  FakeHttpServer server{[](const FakeRequest&) { return status(503); }};
  auto c = client(options());
  HttpRequest post = get(server.base_url() + "/dispatches");
  post.method = "POST";
  post.body = "{}";
  auto r = c->send(post);
  ASSERT_TRUE(r.ok()) << r.error().message;  // the answer is the caller's to read
  EXPECT_EQ(r.value().status, 503);
  EXPECT_EQ(server.request_count(), 1u);
  EXPECT_TRUE(time_.sleeps().empty());

  post.idempotent = true;
  auto again = c->send(post);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(server.request_count(), 1u + 4u);
}

TEST_F(HttpsClientTest, A429WaitsAsRetryAfterSays) {
  std::atomic<int> calls{0};
  FakeHttpServer server{[&](const FakeRequest&) {
    return ++calls == 1 ? status(429, {{"Retry-After", "7"}}) : ok();
  }};
  auto c = client(options());
  HttpRequest post = get(server.base_url() + "/x");
  post.method = "POST";  // a refusal was not processed: even a POST is sent again
  auto r = c->send(post);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value().status, 200);
  EXPECT_EQ(server.request_count(), 2u);
  ASSERT_EQ(time_.sleeps().size(), 1u);
  EXPECT_GE(time_.sleeps()[0], milliseconds{6900});
  EXPECT_LE(time_.sleeps()[0], milliseconds{7000});
  EXPECT_NE(metrics_.render().find(R"(orgd_http_rate_limit_waits_total{provider="test"} 1)"),
            std::string::npos);
}

TEST_F(HttpsClientTest, GithubPrimaryLimitWaitsUntilTheReset) {
  std::atomic<int> calls{0};
  FakeHttpServer server{[&](const FakeRequest&) {
    if (++calls == 1) {
      return status(403,
                    {{"x-ratelimit-limit", "5000"},
                     {"x-ratelimit-remaining", "0"},
                     {"x-ratelimit-reset", epoch_in(seconds{120})}},
                    R"({"message":"API rate limit exceeded for installation ID 1."})");
    }
    auto r = ok();
    r.headers = {{"x-ratelimit-limit", "5000"},
                 {"x-ratelimit-remaining", "4999"},
                 {"x-ratelimit-reset", epoch_in(seconds{3600})}};
    return r;
  }};
  auto o = options();
  o.rate_limit_headers = RateLimitHeaders::github;
  auto c = client(o);
  auto r = c->send(get(server.base_url() + "/repos/acme/api"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(server.request_count(), 2u);
  // Until the reset (epoch seconds: up to a second of rounding), not a retry's backoff.
  EXPECT_GE(time_.slept(), seconds{118});
  EXPECT_LE(time_.slept(), seconds{121});
  const auto s = c->status();
  EXPECT_EQ(s.rate_remaining, 4999);
  EXPECT_EQ(s.rate_limit, 5000);
  EXPECT_NE(metrics_.render().find(R"(orgd_http_rate_limit_remaining{provider="test"} 4999)"),
            std::string::npos);
}

TEST_F(HttpsClientTest, GithubSecondaryLimitWaitsAtLeastAMinuteDoubling) {
  std::atomic<int> calls{0};
  FakeHttpServer server{[&](const FakeRequest&) {
    if (++calls <= 2) {
      return status(
          403, {{"x-ratelimit-remaining", "4900"}},
          R"({"message":"You have exceeded a secondary rate limit and have been temporarily blocked from content creation."})");
    }
    return ok();
  }};
  auto o = options();
  o.rate_limit_headers = RateLimitHeaders::github;
  o.total_timeout = milliseconds{600'000};
  auto c = client(o);
  auto r = c->send(get(server.base_url() + "/x"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(server.request_count(), 3u);
  const auto sleeps = time_.sleeps();
  ASSERT_EQ(sleeps.size(), 2u);
  EXPECT_GE(sleeps[0], seconds{59});
  EXPECT_LE(sleeps[0], seconds{60});
  EXPECT_GE(sleeps[1], seconds{119});
  EXPECT_LE(sleeps[1], seconds{120});
}

TEST_F(HttpsClientTest, AnExhaustedBudgetHoldsTheNextRequestUntilTheReset) {
  FakeHttpServer server{[](const FakeRequest&) {
    auto r = ok();
    r.headers = {{"x-ratelimit-remaining", "0"}, {"x-ratelimit-reset", epoch_in(seconds{30})}};
    return r;
  }};
  auto o = options();
  o.rate_limit_headers = RateLimitHeaders::github;
  auto c = client(o);
  ASSERT_TRUE(c->send(get(server.base_url() + "/a")).ok());
  EXPECT_TRUE(time_.sleeps().empty());
  ASSERT_TRUE(c->send(get(server.base_url() + "/b")).ok());
  EXPECT_EQ(server.request_count(), 2u);
  EXPECT_GE(time_.slept(), seconds{28});
  EXPECT_LE(time_.slept(), seconds{31});
}

TEST_F(HttpsClientTest, ARateLimitPastTheDeadlineReturnsAtOnce) {
  FakeHttpServer server{[](const FakeRequest&) { return status(429, {{"retry-after", "3600"}}); }};
  auto c = client(options());
  auto r = c->send(get(server.base_url() + "/x"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().retry, Retry::rate_limited);
  EXPECT_EQ(r.error().retry_after, seconds{3600});
  EXPECT_TRUE(time_.sleeps().empty());
  EXPECT_EQ(server.request_count(), 1u);
  // The next call is not sent either: the API said not before an hour.
  auto r2 = c->send(get(server.base_url() + "/y"));
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().retry, Retry::rate_limited);
  EXPECT_GT(r2.error().retry_after, seconds{3590});
  EXPECT_EQ(server.request_count(), 1u);
}

TEST_F(HttpsClientTest, CloudflareRatelimitHeadersAreExposed) {
  FakeHttpServer server{[](const FakeRequest&) {
    auto r = ok();
    r.headers = {{"Ratelimit", R"("default";r=1150;t=240)"},
                 {"Ratelimit-Policy", R"("burst";q=1200;w=300)"}};
    return r;
  }};
  auto o = options();
  o.rate_limit_headers = RateLimitHeaders::cloudflare;
  auto c = client(o);
  ASSERT_TRUE(c->send(get(server.base_url() + "/client/v4/user/tokens/verify")).ok());
  const auto budget = c->rate_limit();
  EXPECT_EQ(budget.remaining, 1150);
  EXPECT_EQ(budget.limit, 1200);
  EXPECT_EQ(budget.window_seconds, 300);
  ASSERT_TRUE(budget.reset);
  EXPECT_EQ(c->status().rate_remaining, 1150);
}

TEST_F(HttpsClientTest, AStalePooledConnectionIsReplacedTransparently) {
  std::atomic<int> calls{0};
  FakeHttpServer server{[&](const FakeRequest&) {
    FakeResponse r = ok();
    // The second request finds the connection closing under it, as when a server's idle
    // timeout fires just as the request arrives.
    if (++calls == 2) r.drop = true;
    return r;
  }};
  auto c = client(options());
  ASSERT_TRUE(c->send(get(server.base_url() + "/1")).ok());
  auto r = c->send(get(server.base_url() + "/2"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(server.connections_accepted(), 2u);
  EXPECT_TRUE(time_.sleeps().empty());  // not a retry with backoff
  EXPECT_EQ(metrics_.render().find(R"(orgd_http_retries_total{provider="test"} 1)"),
            std::string::npos);
}

// A server that answers keep-alive and then closes the connection anyway, as one whose idle
// timeout is shorter than the client's does; the FakeHttpServer keeps its connections open.
class ClosingServer {
 public:
  ClosingServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("cannot listen");
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      for (int i = 0; i < 2; ++i) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        std::string head;
        char ch = 0;
        while (head.find("\r\n\r\n") == std::string::npos && ::recv(c, &ch, 1, 0) == 1) head += ch;
        ++requests_;
        const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        (void)!::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
        ::close(c);
        ++closed_;
      }
    });
  }
  ~ClosingServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int requests() const { return requests_.load(); }
  int closed() const { return closed_.load(); }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<int> requests_{0};
  std::atomic<int> closed_{0};
  std::thread thread_;
};

TEST_F(HttpsClientTest, AConnectionTheServerClosedWhileIdleIsNotUsed) {
  ClosingServer server;
  auto c = client(options());
  ASSERT_TRUE(c->send(get(server.url() + "/first")).ok());
  ASSERT_TRUE(testing::wait_until([&] { return server.closed() == 1; }, milliseconds{5000}));
  HttpRequest post = get(server.url() + "/second");
  post.method = "POST";  // not retried after a lost answer: only the pool's check saves it
  auto r = c->send(post);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value().body, "ok");
  EXPECT_EQ(server.requests(), 2);
  EXPECT_TRUE(time_.sleeps().empty());
}

TEST_F(HttpsClientTest, ThroughAConnectProxyWithCredentials) {
  FakeHttpServer server{[](const FakeRequest& r) { return ok("via " + r.path); },
                        tls_options("named.pem", "named-key.pem")};
  // "Basic " + base64("alice:pr0xy-pw")
  ConnectProxy proxy{"Basic YWxpY2U6cHIweHktcHc="};
  const std::string proxy_url = "http://alice:pr0xy-pw@127.0.0.1:" + std::to_string(proxy.port());
  MetricsRegistry metrics;
  auto factory = make_https_transport_factory(
      metrics, Environment{{{"HTTPS_PROXY", proxy_url}, {"NO_PROXY", "internal.corp"}}});
  HttpClientOptions o = options();
  o.ca_file = pki().path("ca.pem");
  auto transport = factory(o);
  ASSERT_TRUE(transport.ok()) << transport.error().message;
  const std::string url = "https://api.example.test:" + std::to_string(server.port());
  for (int i = 0; i < 3; ++i) {
    auto r = transport.value()->send(get(url + "/p" + std::to_string(i)));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value().body, "via /p" + std::to_string(i));
  }
  const auto tunnels = proxy.tunnels();
  ASSERT_EQ(tunnels.size(), 1u);  // the tunnelled connection is kept alive
  EXPECT_EQ(tunnels[0].target, "api.example.test:" + std::to_string(server.port()));
  EXPECT_TRUE(tunnels[0].accepted);
  EXPECT_EQ(server.requests().at(0).header("host"),
            "api.example.test:" + std::to_string(server.port()));

  // Loopback hosts go direct, proxy or not.
  FakeHttpServer local{[](const FakeRequest&) { return ok(); }};
  ASSERT_TRUE(transport.value()->send(get(local.base_url() + "/direct")).ok());
  EXPECT_EQ(proxy.tunnels().size(), 1u);
}

TEST_F(HttpsClientTest, NoProxyHostsGoDirect) {
  FakeHttpServer server{[](const FakeRequest&) { return ok(); },
                        tls_options("named.pem", "named-key.pem")};
  ConnectProxy proxy;
  auto o = options();
  o.ca_file = pki().path("ca.pem");
  o.https_proxy = proxy.url();
  o.no_proxy = "localhost,.example.test";
  auto hooks = time_.hooks();
  hooks.resolve = [](std::string_view) -> std::optional<std::string> { return "127.0.0.1"; };
  auto c = HttpsClient::create(o, &metrics_, hooks).value();
  auto r = c->send(get("https://api.example.test:" + std::to_string(server.port()) + "/x"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(proxy.tunnels().empty());
}

TEST_F(HttpsClientTest, AProxyRefusingTheCredentialsIsAClearError) {
  ConnectProxy proxy{"Basic c29tZW9uZTplbHNl"};
  auto o = options();
  o.https_proxy = "http://bob:canary-proxy-pw@127.0.0.1:" + std::to_string(proxy.port());
  auto c = client(o);
  auto r = c->send(get("https://api.example.test:443/x"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("refused the tunnel to api.example.test:443: HTTP 407"),
            std::string::npos)
      << r.error().message;
  EXPECT_EQ(r.error().message.find("canary"), std::string::npos);
  EXPECT_EQ(r.error().retry, Retry::permanent);
  ASSERT_EQ(proxy.tunnels().size(), 1u);
  EXPECT_EQ(proxy.tunnels()[0].authorization, "Basic Ym9iOmNhbmFyeS1wcm94eS1wdw==");
  EXPECT_EQ(c->options().https_proxy.find("canary"), std::string::npos);
}

TEST_F(HttpsClientTest, TheConcurrencyLimitHolds) {
  std::mutex m;
  int in_flight = 0;
  int most = 0;
  FakeHttpServer server{[&](const FakeRequest&) {
    {
      std::lock_guard lock(m);
      most = std::max(most, ++in_flight);
    }
    std::this_thread::sleep_for(milliseconds{100});  // the server's work, not a wait for a result
    {
      std::lock_guard lock(m);
      --in_flight;
    }
    return ok();
  }};
  auto o = options();
  o.max_concurrency = 2;
  auto c = client(o);
  std::vector<std::thread> threads;
  std::atomic<int> succeeded{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (c->send(get(server.base_url() + "/work")).ok()) ++succeeded;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(succeeded.load(), 8);
  EXPECT_EQ(server.request_count(), 8u);
  EXPECT_LE(most, 2);
  EXPECT_LE(server.connections_accepted(), 2u);
}

TEST_F(HttpsClientTest, ThePoolKeepsABoundedNumberOfIdleConnections) {
  FakeHttpServer server{[](const FakeRequest&) {
    auto r = ok();
    r.delay = milliseconds{150};  // long enough for the six calls to overlap
    return r;
  }};
  auto o = options();
  o.max_idle_connections = 2;
  auto c = client(o);
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] { EXPECT_TRUE(c->send(get(server.base_url() + "/x")).ok()); });
  }
  for (auto& t : threads) t.join();
  const auto opened = server.connections_accepted();
  EXPECT_GT(opened, 2u);
  EXPECT_EQ(c->status().idle_connections, 2u);
  // The kept ones carry the next calls.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(c->send(get(server.base_url() + "/y")).ok());
  EXPECT_EQ(server.connections_accepted(), opened);
}

TEST_F(HttpsClientTest, WaitingForASlotHonoursTheDeadline) {
  FakeHttpServer server{[](const FakeRequest&) {
    auto r = ok();
    r.delay = milliseconds{1500};
    return r;
  }};
  auto o = options();
  o.max_concurrency = 1;
  auto c = client(o);
  std::thread busy([&] { (void)c->send(get(server.base_url() + "/long")); });
  // Wait until the first call holds the slot (the server has its request).
  const auto until = std::chrono::steady_clock::now() + seconds{5};
  while (server.request_count() == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::yield();
  }
  ASSERT_EQ(server.request_count(), 1u);
  HttpRequest req = get(server.base_url() + "/short");
  req.deadline = time_.hooks().steady_now() + milliseconds{200};
  auto r = c->send(req);
  busy.join();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("no free request slot"), std::string::npos) << r.error().message;
  EXPECT_EQ(server.request_count(), 1u);
}

TEST_F(HttpsClientTest, TheBreakerOpensAndRecovers) {
  std::atomic<int> code{500};
  FakeHttpServer server{[&](const FakeRequest&) { return status(code.load()); }};
  auto o = options();
  o.max_attempts = 1;
  o.breaker_failures = 2;
  o.breaker_open_for = milliseconds{30'000};
  auto c = client(o);
  const std::string url = server.base_url() + "/x";
  ASSERT_FALSE(c->send(get(url)).ok());
  EXPECT_EQ(c->status().circuit, "closed");
  ASSERT_FALSE(c->send(get(url)).ok());
  EXPECT_EQ(c->status().circuit, "open");
  EXPECT_NE(metrics_.render().find(R"(orgd_http_circuit_state{provider="test"} 2)"),
            std::string::npos);
  auto fast = c->send(get(url));
  ASSERT_FALSE(fast.ok());
  EXPECT_NE(fast.error().message.find("circuit open"), std::string::npos) << fast.error().message;
  EXPECT_EQ(server.request_count(), 2u);  // failed fast, nothing sent

  code = 200;
  time_.advance(milliseconds{30'000});
  EXPECT_EQ(c->status().circuit, "half_open");
  auto trial = c->send(get(url));
  ASSERT_TRUE(trial.ok()) << trial.error().message;
  EXPECT_EQ(c->status().circuit, "closed");
  ASSERT_TRUE(c->send(get(url)).ok());
  EXPECT_EQ(server.request_count(), 4u);
  EXPECT_NE(metrics_.render().find(R"(orgd_http_circuit_state{provider="test"} 0)"),
            std::string::npos);
  EXPECT_NE(c->status().last_error.find("circuit open"), std::string::npos);
}

TEST_F(HttpsClientTest, CredentialsNeverReachLogsErrorsOrMetrics) {
  const std::string canary = "canary-7f3a9c";
  std::ostringstream captured;
  auto logger = logging::get("net");
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  logger->sinks().push_back(sink);
  const auto level = logger->level();
  logger->set_level(spdlog::level::trace);

  std::vector<std::string> errors;
  std::atomic<int> calls{0};
  FakeHttpServer server{[&](const FakeRequest& r) {
    ++calls;
    if (r.path == "/ok") return ok();
    if (r.path == "/limited") return status(429, {{"retry-after", "99999"}});
    return status(503);
  }};
  FakeHttpServer tls_server{[](const FakeRequest&) { return ok(); }, tls_options()};
  ConnectProxy proxy{"Basic nothing-matches"};
  auto o = options();
  o.https_proxy = "http://user:" + canary + "-proxy@127.0.0.1:" + std::to_string(proxy.port());
  o.breaker_failures = 0;  // every path below is taken, none failed fast
  auto c = client(o);
  auto with_token = [&](std::string url) {
    HttpRequest r = get(std::move(url));
    r.authorization = std::make_shared<const Secret>(Secret::from("Bearer " + canary));
    return r;
  };
  for (const std::string url :
       {server.base_url() + "/ok?access_token=" + canary, server.base_url() + "/fail",
        tls_server.base_url() + "/tls", std::string{"https://api.example.test/through-proxy"},
        server.base_url() + "/limited"}) {
    auto r = c->send(with_token(url));
    if (!r.ok()) errors.push_back(r.error().message);
  }
  logger->sinks().pop_back();
  logger->set_level(level);

  // The token was sent: the test would prove nothing otherwise.
  ASSERT_FALSE(server.requests().empty());
  EXPECT_EQ(server.requests()[0].header("authorization"), "Bearer " + canary);
  EXPECT_GE(errors.size(), 4u);
  for (const auto& e : errors) EXPECT_EQ(e.find(canary), std::string::npos) << e;
  EXPECT_EQ(c->status().last_error.find(canary), std::string::npos);
  const std::string log_text = captured.str();
  EXPECT_FALSE(log_text.empty());  // the retries were logged
  EXPECT_EQ(log_text.find(canary), std::string::npos) << log_text;
  const std::string metrics_text = metrics_.render();
  EXPECT_NE(metrics_text.find("orgd_http_errors_total"), std::string::npos);
  EXPECT_EQ(metrics_text.find(canary), std::string::npos);
}

TEST_F(HttpsClientTest, TheStatusIsReadThroughTheTransportInterface) {
  FakeHttpServer server{[](const FakeRequest&) { return status(500); }};
  auto o = options();
  o.max_attempts = 1;
  auto factory = make_https_transport_factory(metrics_, Environment{});
  auto transport = factory(o);
  ASSERT_TRUE(transport.ok()) << transport.error().message;
  ASSERT_FALSE(transport.value()->send(get(server.base_url() + "/x")).ok());
  const auto s = http_client_status(*transport.value());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->provider, "test");
  EXPECT_EQ(s->requests, 1u);
  EXPECT_EQ(s->errors, 1u);
  EXPECT_EQ(s->circuit, "closed");
  EXPECT_NE(s->last_error.find("HTTP 500"), std::string::npos) << s->last_error;

  struct OtherTransport final : HttpTransport {
    Result<HttpResponse> send(HttpRequest) override { return HttpResponse{}; }
  } other;
  EXPECT_FALSE(http_client_status(other));
}

TEST_F(HttpsClientTest, TheFactoryRefusesABadCaFileOrProxy) {
  MetricsRegistry metrics;
  auto factory = make_https_transport_factory(metrics, Environment{});
  auto o = options();
  o.ca_file = "/nonexistent/ca.pem";
  auto r = factory(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("/nonexistent/ca.pem"), std::string::npos);
  o.ca_file = pki().path("server-key.pem");  // a key, not a certificate
  EXPECT_FALSE(factory(o).ok());
  auto bad_proxy = make_https_transport_factory(
      metrics, Environment{{{"https_proxy", "socks5://u:canary-x@p:1"}}})(options());
  ASSERT_FALSE(bad_proxy.ok());
  EXPECT_NE(bad_proxy.error().message.find("HTTPS_PROXY"), std::string::npos);
  EXPECT_EQ(bad_proxy.error().message.find("canary"), std::string::npos);
}

}  // namespace
}  // namespace orgd
