// POST /webhooks/github, below the daemon: the signature (GitHub's own test vector, wrong,
// missing and malformed ones), subjects made safe for NATS, and the intake against a stub sink:
// what is stored, with which headers and id, what is refused and counted, and the workflow_run
// hook.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/core/metrics.hpp"
#include "daemon/http/http_server.hpp"
#include "daemon/http/routes.hpp"
#include "daemon/http/webhook_intake.hpp"
#include "daemon/http/webhook_signature.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

// cloud-apis.md §1.6, from GitHub's "validating webhook deliveries".
constexpr const char* kVectorSecret = "It's a Secret to Everybody";
constexpr const char* kVectorBody = "Hello, World!";
constexpr const char* kVectorSignature =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

TEST(GithubSignatureTest, GithubsTestVector) {
  const Secret secret = Secret::from(kVectorSecret);
  EXPECT_EQ(github_signature(kVectorBody, secret), kVectorSignature);
  EXPECT_EQ(check_github_signature(kVectorSignature, kVectorBody, secret), SignatureCheck::valid);
  std::string upper = kVectorSignature;
  for (std::size_t i = 7; i < upper.size(); ++i)
    upper[i] = static_cast<char>(std::toupper(upper[i]));
  EXPECT_EQ(check_github_signature(upper, kVectorBody, secret), SignatureCheck::valid);
}

TEST(GithubSignatureTest, WrongMissingAndMalformed) {
  const Secret secret = Secret::from(kVectorSecret);
  EXPECT_EQ(check_github_signature(kVectorSignature, "Hello, World?", secret),
            SignatureCheck::mismatch);
  EXPECT_EQ(check_github_signature(kVectorSignature, kVectorBody, Secret::from("another secret")),
            SignatureCheck::mismatch);
  std::string last_digit = kVectorSignature;
  last_digit.back() = '6';
  EXPECT_EQ(check_github_signature(last_digit, kVectorBody, secret), SignatureCheck::mismatch);
  EXPECT_EQ(check_github_signature("", kVectorBody, secret), SignatureCheck::missing);
  const std::string hex = std::string(kVectorSignature).substr(7);
  for (const std::string bad :
       {hex, "sha1=" + hex, "sha256=" + hex.substr(1), "sha256=" + hex + "0",
        "sha256=" + hex.substr(0, 63) + "g", "SHA256=" + hex, " sha256=" + hex.substr(1)}) {
    EXPECT_EQ(check_github_signature(bad, kVectorBody, secret), SignatureCheck::malformed) << bad;
  }
}

TEST(GithubSubjectTest, TokensAreSafeAndDistinct) {
  EXPECT_EQ(subject_token("acme"), "acme");
  EXPECT_EQ(subject_token("my-repo_2"), "my-repo_2");
  EXPECT_EQ(subject_token(".github"), "%2Egithub");
  EXPECT_EQ(subject_token("a.b"), "a%2Eb");
  EXPECT_EQ(subject_token("a*b>c d\te"), "a%2Ab%3Ec%20d%09e");
  EXPECT_EQ(subject_token("100%"), "100%25");
  EXPECT_EQ(subject_token("ü"), "%C3%BC");
  EXPECT_EQ(subject_token(""), "_");
  // Distinct names stay distinct: "a.b" and "a%2Eb" cannot collide.
  EXPECT_NE(subject_token("a.b"), subject_token("a%2Eb"));
}

TEST(GithubSubjectTest, RoutesFromThePayload) {
  auto r = route_delivery("push", R"({"repository":{"full_name":"Acme/Web.Site"}})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->subject, "github.acme.web%2Esite.push");
  EXPECT_EQ(r->owner, "Acme");
  EXPECT_EQ(r->repo, "Web.Site");
  // Organization-level events: the organization, and "_" for the repo.
  r = route_delivery("member_added", R"({"organization":{"login":"acme"},"repository":null})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->subject, "github.acme._.member_added");
  r = route_delivery("installation", R"({"installation":{"account":{"login":"Acme"}}})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->subject, "github.acme._.installation");
  r = route_delivery("ping", R"({"zen":"Keep it logically awesome."})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->subject, "github._._.ping");
  EXPECT_EQ(route_delivery("weird.event", "{}")->subject, "github._._.weird%2Eevent");
  for (const char* bad :
       {"", "[]", "not json", R"({"repository":{}})", R"({"repository":{"full_name":7}})",
        R"({"repository":{"full_name":"noslash"}})", R"({"repository":{"full_name":"a/b/c"}})",
        R"({"repository":{"full_name":"/b"}})", R"({"repository":"acme/api"})"}) {
    EXPECT_FALSE(route_delivery("push", bad)) << bad;
  }
}

class StubSink final : public WebhookSink {
 public:
  Result<Stored> store(const BusMessage& message, std::chrono::milliseconds timeout) override {
    std::lock_guard lock(mutex_);
    timeouts.push_back(timeout);
    if (failure) return *failure;
    const auto id = message.header("Nats-Msg-Id").value_or("");
    for (const auto& kept : stored) {
      if (kept.header("Nats-Msg-Id") == id) return Stored{true};
    }
    stored.push_back(message);
    return Stored{false};
  }
  std::size_t max_message_bytes() const override { return max_bytes; }

  std::mutex mutex_;
  std::vector<BusMessage> stored;
  std::vector<std::chrono::milliseconds> timeouts;
  std::optional<Error> failure;
  std::size_t max_bytes = 1024 * 1024;
};

class WebhookIntakeTest : public ::testing::Test {
 protected:
  WebhookIntakeTest() { rebuild(); }

  void rebuild(int max_waiting = 2) {
    WebhookIntakeSettings settings;
    settings.secrets.push_back({"gh", Secret::from("first-secret")});
    settings.secrets.push_back({"gh2", Secret::from("second-secret")});
    settings.publish_timeout = 3s;
    settings.max_waiting = max_waiting;
    intake.reset();
    intake = std::make_unique<WebhookIntake>(std::move(settings), sink, metrics);
  }

  static HttpServerRequest delivery(
      const std::string& body, const std::string& secret, const std::string& event = "push",
      const std::string& id = "72d3162e-cc78-11e3-81ab-4c9367dc0958") {
    HttpServerRequest r;
    r.method = "POST";
    r.target = "/webhooks/github";
    r.body = body;
    r.remote = "127.0.0.1:5555";
    r.headers["x-hub-signature-256"] = github_signature(body, Secret::from(secret));
    r.headers["x-github-event"] = event;
    r.headers["x-github-delivery"] = id;
    r.headers["x-github-hook-id"] = "292430182";
    r.headers["x-github-hook-installation-target-type"] = "repository";
    r.headers["x-github-hook-installation-target-id"] = "79929171";
    r.headers["content-type"] = "application/json";
    r.headers["user-agent"] = "GitHub-Hookshot/044aadd";
    return r;
  }

  double rejected(const std::string& reason) {
    return metrics.counter("orgd_webhook_rejected_total", "", {{"reason", reason}}).value();
  }
  double deliveries(const std::string& result) {
    return metrics.counter("orgd_webhook_deliveries_total", "", {{"result", result}}).value();
  }

  const std::string body = R"({"ref":"refs/heads/main","repository":{"full_name":"acme/api"}})";
  MetricsRegistry metrics;
  StubSink sink;
  std::unique_ptr<WebhookIntake> intake;
};

TEST_F(WebhookIntakeTest, AGoodDeliveryIsStoredWithItsHeadersAndId) {
  const auto response = intake->handle(delivery(body, "second-secret"));
  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_THAT(response.body, HasSubstr("github.acme.api.push"));
  ASSERT_EQ(sink.stored.size(), 1u);
  const BusMessage& m = sink.stored[0];
  EXPECT_EQ(m.subject, "github.acme.api.push");
  EXPECT_EQ(m.data, body);
  EXPECT_EQ(m.header("Nats-Msg-Id"), "292430182:72d3162e-cc78-11e3-81ab-4c9367dc0958");
  EXPECT_EQ(m.header("X-GitHub-Event"), "push");
  EXPECT_EQ(m.header("X-GitHub-Delivery"), "72d3162e-cc78-11e3-81ab-4c9367dc0958");
  EXPECT_EQ(m.header("X-GitHub-Hook-ID"), "292430182");
  EXPECT_EQ(m.header("X-GitHub-Hook-Installation-Target-Type"), "repository");
  EXPECT_EQ(m.header("X-GitHub-Hook-Installation-Target-ID"), "79929171");
  EXPECT_EQ(m.header("Content-Type"), "application/json");
  EXPECT_EQ(m.header("Orgd-Github-Provider"), "gh2");  // the secret that matched
  EXPECT_FALSE(m.header("User-Agent"));
  EXPECT_EQ(sink.timeouts.at(0), 3s);
  EXPECT_EQ(deliveries("published"), 1);
}

TEST_F(WebhookIntakeTest, ARedeliveryIsStoredOnceAndAnsweredOk) {
  EXPECT_EQ(intake->handle(delivery(body, "first-secret")).status, 200);
  const auto again = intake->handle(delivery(body, "first-secret"));
  EXPECT_EQ(again.status, 200);
  EXPECT_THAT(again.body, HasSubstr("\"duplicate\":true"));
  EXPECT_EQ(sink.stored.size(), 1u);
  EXPECT_EQ(deliveries("published"), 1);
  EXPECT_EQ(deliveries("duplicate"), 1);
  // Another hook's copy of the same event is its own message.
  auto other_hook = delivery(body, "first-secret");
  other_hook.headers["x-github-hook-id"] = "1";
  EXPECT_EQ(intake->handle(other_hook).status, 200);
  EXPECT_EQ(sink.stored.size(), 2u);
}

TEST_F(WebhookIntakeTest, SignatureProblemsAre401CountedAndNothingStored) {
  auto bad = delivery(body, "wrong-secret");
  EXPECT_EQ(intake->handle(bad).status, 401);
  EXPECT_EQ(rejected("bad_signature"), 1);

  auto tampered = delivery(body, "first-secret");
  tampered.body = R"({"ref":"refs/heads/evil","repository":{"full_name":"acme/api"}})";
  EXPECT_EQ(intake->handle(tampered).status, 401);
  EXPECT_EQ(rejected("bad_signature"), 2);

  auto missing = delivery(body, "first-secret");
  missing.headers.erase("x-hub-signature-256");
  EXPECT_EQ(intake->handle(missing).status, 401);
  EXPECT_EQ(rejected("missing_signature"), 1);

  auto malformed = delivery(body, "first-secret");
  malformed.headers["x-hub-signature-256"] = "sha1=0123";
  EXPECT_EQ(intake->handle(malformed).status, 401);
  EXPECT_EQ(rejected("malformed_signature"), 1);

  EXPECT_TRUE(sink.stored.empty());
  EXPECT_TRUE(sink.timeouts.empty());  // the bus was never asked
  EXPECT_EQ(deliveries("published"), 0);
}

TEST_F(WebhookIntakeTest, WithoutSecretsEverythingIsRefused) {
  WebhookIntakeSettings none;
  WebhookIntake empty(std::move(none), sink, metrics);
  EXPECT_EQ(empty.handle(delivery(body, "first-secret")).status, 401);
  EXPECT_EQ(rejected("no_secret"), 1);
  EXPECT_TRUE(sink.stored.empty());
}

TEST_F(WebhookIntakeTest, HeadersAndPayloadChecked) {
  auto no_event = delivery(body, "first-secret");
  no_event.headers.erase("x-github-event");
  EXPECT_EQ(intake->handle(no_event).status, 400);
  auto no_delivery = delivery(body, "first-secret");
  no_delivery.headers.erase("x-github-delivery");
  EXPECT_EQ(intake->handle(no_delivery).status, 400);
  EXPECT_EQ(rejected("missing_headers"), 2);

  const auto not_json = intake->handle(delivery("not json", "first-secret"));
  EXPECT_EQ(not_json.status, 400);
  EXPECT_EQ(intake->handle(delivery(R"({"repository":{"full_name":"x"}})", "first-secret")).status,
            400);
  EXPECT_EQ(rejected("bad_payload"), 2);

  auto get = delivery(body, "first-secret");
  get.method = "GET";
  const auto wrong_method = intake->handle(get);
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(wrong_method.headers.at("Allow"), "POST");
  EXPECT_TRUE(sink.stored.empty());

  // Without a hook id (older GitHub Enterprise) the delivery id alone is the message id.
  auto no_hook = delivery(body, "first-secret");
  no_hook.headers.erase("x-github-hook-id");
  EXPECT_EQ(intake->handle(no_hook).status, 200);
  ASSERT_EQ(sink.stored.size(), 1u);
  EXPECT_EQ(sink.stored[0].header("Nats-Msg-Id"), "72d3162e-cc78-11e3-81ab-4c9367dc0958");
}

TEST_F(WebhookIntakeTest, TooLargeForTheBusIs413) {
  sink.max_bytes = 1000;
  const std::string big =
      R"({"repository":{"full_name":"acme/api"},"pad":")" + std::string(2000, 'x') + "\"}";
  const auto response = intake->handle(delivery(big, "first-secret"));
  EXPECT_EQ(response.status, 413);
  EXPECT_THAT(response.body, HasSubstr("max_payload"));
  EXPECT_EQ(rejected("too_large"), 1);
  EXPECT_TRUE(sink.stored.empty());
}

TEST_F(WebhookIntakeTest, BusDownIs503AndCounted) {
  sink.failure = unavailable("NATS is not connected (disconnected)");
  const auto response = intake->handle(delivery(body, "first-secret"));
  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(
      metrics.counter("orgd_webhook_publish_failures_total", "", {{"reason", "nats_unavailable"}})
          .value(),
      1);
  EXPECT_EQ(deliveries("published"), 0);
  // Back: the same delivery, redelivered, goes through.
  sink.failure.reset();
  EXPECT_EQ(intake->handle(delivery(body, "first-secret")).status, 200);
}

TEST_F(WebhookIntakeTest, CompletedWorkflowRunsReachTheListenerOnce) {
  std::vector<WorkflowRunCompleted> seen;
  intake->add_workflow_run_listener([&](const WorkflowRunCompleted& run) { seen.push_back(run); });
  const std::string completed =
      R"({"action":"completed","workflow_run":{"id":30433642,"conclusion":"success"},)"
      R"("repository":{"full_name":"Acme/api"}})";
  EXPECT_EQ(intake->handle(delivery(completed, "first-secret", "workflow_run", "d-1")).status, 200);
  EXPECT_EQ(intake->handle(delivery(completed, "first-secret", "workflow_run", "d-1")).status, 200);
  const std::string requested =
      R"({"action":"requested","workflow_run":{"id":30433643,"conclusion":null},)"
      R"("repository":{"full_name":"acme/api"}})";
  EXPECT_EQ(intake->handle(delivery(requested, "first-secret", "workflow_run", "d-2")).status, 200);
  const std::string failed =
      R"({"action":"completed","workflow_run":{"id":30433644,"conclusion":"failure"},)"
      R"("repository":{"full_name":"acme/web"}})";
  EXPECT_EQ(intake->handle(delivery(failed, "first-secret", "workflow_run", "d-3")).status, 200);
  ASSERT_EQ(seen.size(), 2u);  // the redelivery and the requested run are not completions
  EXPECT_EQ(seen[0].owner, "Acme");
  EXPECT_EQ(seen[0].repo, "api");
  EXPECT_EQ(seen[0].run_id, 30433642);
  EXPECT_EQ(seen[0].conclusion, "success");
  EXPECT_EQ(seen[0].delivery, "d-1");
  EXPECT_EQ(seen[1].run_id, 30433644);
  EXPECT_EQ(seen[1].conclusion, "failure");
}

TEST_F(WebhookIntakeTest, AFailingListenerDoesNotFailTheDelivery) {
  intake->add_workflow_run_listener(
      [](const WorkflowRunCompleted&) { throw std::runtime_error("listener bug"); });
  const std::string completed =
      R"({"action":"completed","workflow_run":{"id":1,"conclusion":"success"},)"
      R"("repository":{"full_name":"acme/api"}})";
  EXPECT_EQ(intake->handle(delivery(completed, "first-secret", "workflow_run")).status, 200);
}

// A sink that blocks until released, to hold handlers in their wait for the ack.
class BlockingSink final : public WebhookSink {
 public:
  Result<Stored> store(const BusMessage&, std::chrono::milliseconds) override {
    std::unique_lock lock(mutex);
    ++waiting;
    changed.notify_all();
    changed.wait(lock, [&] { return released; });
    return Stored{};
  }
  std::size_t max_message_bytes() const override { return 0; }
  std::mutex mutex;
  std::condition_variable changed;
  int waiting = 0;
  bool released = false;
};

TEST_F(WebhookIntakeTest, HandlersWaitingForTheBusAreBounded) {
  BlockingSink blocking;
  WebhookIntakeSettings settings;
  settings.secrets.push_back({"gh", Secret::from("first-secret")});
  settings.max_waiting = 1;
  WebhookIntake bounded(std::move(settings), blocking, metrics);
  std::thread first([&] { EXPECT_EQ(bounded.handle(delivery(body, "first-secret")).status, 200); });
  {
    std::unique_lock lock(blocking.mutex);
    ASSERT_TRUE(blocking.changed.wait_for(lock, 10s, [&] { return blocking.waiting == 1; }));
  }
  const auto second = bounded.handle(delivery(body, "first-secret", "push", "other"));
  EXPECT_EQ(second.status, 503);
  EXPECT_EQ(
      metrics.counter("orgd_webhook_publish_failures_total", "", {{"reason", "busy"}}).value(), 1);
  {
    std::lock_guard lock(blocking.mutex);
    blocking.released = true;
  }
  blocking.changed.notify_all();
  first.join();
}

class NoSources final : public RouteSources {
 public:
  ProbeReadiness readiness() const override { return {}; }
  void refresh_gauges() override {}
  HttpServerResponse::BodyStream status_stream() const override {
    return [](std::string& out) {
      out += "{}";
      return false;
    };
  }
};

TEST_F(WebhookIntakeTest, RouteIsPostOnlyAnd404WithoutAGithubProvider) {
  NoSources sources;
  HttpRoutes without(sources, metrics);
  EXPECT_EQ(without.handle(delivery(body, "first-secret")).status, 404);
  HttpRoutes with(sources, metrics, intake.get());
  EXPECT_EQ(with.handle(delivery(body, "first-secret")).status, 200);
  auto query = delivery(body, "first-secret", "push", "q");
  query.target = "/webhooks/github?x=1";
  EXPECT_EQ(with.handle(query).status, 200);
  // Other paths keep their GET/HEAD rule.
  auto post_health = delivery(body, "first-secret");
  post_health.target = "/healthz";
  EXPECT_EQ(with.handle(post_health).status, 405);
}

// The HTTP server's per-path body limits, which let the webhook path take GitHub's 25 MB while
// every other path keeps the general limit, and the bound on large bodies read at once.
class PathBodyLimitTest : public ::testing::Test {
 protected:
  PathBodyLimitTest() {
    HttpServerSettings settings;
    settings.body_limit = 1024;
    settings.path_body_limits["/big"] = 4u * 1024 * 1024;
    settings.max_large_bodies = 1;
    server = std::make_unique<HttpServer>(io, settings, [](const HttpServerRequest& r) {
      return HttpServerResponse{200, "text/plain", std::to_string(r.body.size()), {}};
    });
    server->start();
    thread = std::thread([this] { io.run(); });
  }
  ~PathBodyLimitTest() override {
    server.reset();
    work.reset();
    io.stop();
    thread.join();
  }

  // A connection whose reads give up after 5 s, so a broken server fails the test, not hangs it.
  std::unique_ptr<boost::asio::ip::tcp::socket> connect() {
    auto socket = std::make_unique<boost::asio::ip::tcp::socket>(client_io);
    socket->connect({boost::asio::ip::make_address("127.0.0.1"), server->port()});
    timeval tv{5, 0};
    ::setsockopt(socket->native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return socket;
  }

  static std::string head(const std::string& path, std::size_t length, bool expect = false) {
    return "POST " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
           std::to_string(length) + "\r\n" + (expect ? "Expect: 100-continue\r\n" : "") + "\r\n";
  }

  // The status of the next response on `socket` (0 when none comes).
  static int status_of(boost::asio::ip::tcp::socket& socket, std::string& buffer) {
    boost::system::error_code ec;
    const std::size_t end =
        boost::asio::read_until(socket, boost::asio::dynamic_buffer(buffer), "\r\n\r\n", ec);
    if (ec || buffer.size() < 12) return 0;
    const int status = std::stoi(buffer.substr(9, 3));
    buffer.erase(0, end);
    return status;
  }

  int post(const std::string& path, const std::string& body) {
    auto socket = connect();
    boost::asio::write(*socket, boost::asio::buffer(head(path, body.size()) + body));
    std::string buffer;
    return status_of(*socket, buffer);
  }

  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  boost::asio::io_context client_io;
  std::unique_ptr<HttpServer> server;
  std::thread thread;
};

TEST_F(PathBodyLimitTest, EachPathHasItsLimit) {
  EXPECT_EQ(post("/small", std::string(2048, 'x')), 413);
  EXPECT_EQ(post("/big", std::string(2048, 'x')), 200);
  EXPECT_EQ(post("/big?q=1", std::string(2048, 'x')), 200);
  EXPECT_EQ(post("/small", std::string(100, 'x')), 200);
  // Over the path's limit: refused from the Content-Length, the body never sent.
  auto socket = connect();
  boost::asio::write(*socket, boost::asio::buffer(head("/big", 5u * 1024 * 1024)));
  std::string buffer;
  EXPECT_EQ(status_of(*socket, buffer), 413);
}

TEST_F(PathBodyLimitTest, LargeBodiesReadAtOnceAreBounded) {
  // One large body in progress: the server said 100 Continue, so it holds the one slot.
  auto holder = connect();
  boost::asio::write(*holder, boost::asio::buffer(head("/big", 100'000, /*expect=*/true)));
  std::string held;
  ASSERT_EQ(status_of(*holder, held), 100);

  EXPECT_EQ(post("/big", std::string(2048, 'x')), 503);
  // Small bodies, even on the large path, are not held back.
  EXPECT_EQ(post("/big", std::string(512, 'x')), 200);
  EXPECT_EQ(post("/small", std::string(512, 'x')), 200);

  boost::asio::write(*holder, boost::asio::buffer(std::string(100'000, 'y')));
  EXPECT_EQ(status_of(*holder, held), 200);
  // The slot is free again.
  EXPECT_EQ(post("/big", std::string(2048, 'x')), 200);
}

}  // namespace
}  // namespace orgd
