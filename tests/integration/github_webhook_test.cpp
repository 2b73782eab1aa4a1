// POST /webhooks/github end to end: a real Daemon with a github provider, a real nats-server.
// A good delivery lands once in GITHUB_EVENTS on the right subject with GitHub's headers; a
// redelivery is kept once; bad signatures are 401, counted, and leave the stream empty; an
// over-size body is 413 from its Content-Length alone; NATS down is 503; the webhook secret
// never shows in logs or metrics.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <map>
#include <optional>
#include <string>

#include "daemon/app/daemon.hpp"
#include "daemon/bus/message.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/http/webhook_signature.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::connect_client;
using ::testing::HasSubstr;
using testing::NatsServer;
using testing::NatsServerOptions;
using testing::TempDir;
using testing::wait_until;

constexpr const char* kSecret = "whsec-canary-5d41402abc4b2a76";

struct Answer {
  int status = 0;
  std::string body;
};

// One request with the headers given, on its own connection (Connection: close), written raw
// so a test can also announce a body it never sends.
std::optional<Answer> post(std::uint16_t port, const std::string& target, const std::string& body,
                           const std::map<std::string, std::string>& headers,
                           std::optional<std::size_t> content_length = std::nullopt) {
  namespace net = boost::asio;
  try {
    net::io_context io;
    net::ip::tcp::socket socket(io);
    socket.connect({net::ip::make_address("127.0.0.1"), port});
    std::string request =
        "POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
    for (const auto& [name, value] : headers) request += name + ": " + value + "\r\n";
    request +=
        "Content-Length: " + std::to_string(content_length.value_or(body.size())) + "\r\n\r\n";
    net::write(socket, net::buffer(request));
    if (!content_length) net::write(socket, net::buffer(body));
    std::string response;
    boost::system::error_code ec;
    net::read(socket, net::dynamic_buffer(response), ec);  // to EOF
    const auto space = response.find(' ');
    const auto head_end = response.find("\r\n\r\n");
    if (space == std::string::npos || head_end == std::string::npos) return std::nullopt;
    return Answer{std::stoi(response.substr(space + 1, 3)), response.substr(head_end + 4)};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::map<std::string, std::string> github_headers(const std::string& body, const std::string& event,
                                                  const std::string& delivery,
                                                  const std::string& secret = kSecret) {
  return {{"X-Hub-Signature-256", github_signature(body, Secret::from(secret))},
          {"X-GitHub-Event", event},
          {"X-GitHub-Delivery", delivery},
          {"X-GitHub-Hook-ID", "292430182"},
          {"X-GitHub-Hook-Installation-Target-Type", "repository"},
          {"X-GitHub-Hook-Installation-Target-ID", "79929171"},
          {"Content-Type", "application/json"},
          {"User-Agent", "GitHub-Hookshot/044aadd"}};
}

// Every line the http and orgd loggers write while it lives, at any level.
class CapturedLogs {
 public:
  CapturedLogs() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000)) {
    sink_->set_pattern("%n %l %v");
    for (const char* name : {"http", "orgd", "bus", "plugin.github"}) {
      auto logger = logging::get(name);
      logger->sinks().push_back(sink_);
      loggers_.push_back(logger);
    }
  }
  ~CapturedLogs() {
    for (auto& logger : loggers_) {
      auto& sinks = logger->sinks();
      sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
    }
  }
  std::string text() const {
    std::string out;
    for (const auto& line : sink_->last_formatted()) out += line;
    return out;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::vector<std::shared_ptr<spdlog::logger>> loggers_;
};

struct StoredMessage {
  std::string subject, data;
  std::map<std::string, std::string> headers;
};

class GithubWebhookTest : public ::testing::Test {
 protected:
  void start(NatsServerOptions options = {}) {
    server = std::make_unique<NatsServer>(options);
    const std::string yaml =
        "org: acme\n"
        "nats:\n  urls: [" +
        server->url() +
        "]\n"
        "  connect_timeout: 2s\n  reconnect_wait: 100ms\n"
        "http:\n  listen: 127.0.0.1:0\n"
        "log:\n  level: debug\n"
        "providers:\n"
        "  local: {type: local}\n"
        "  gh:\n    type: github\n    token_env: GH_TOKEN\n"
        "    webhook_dedup_window: 1h\n"
        "repos:\n  api:\n    deploy:\n      dev: {provider: local}\n";
    Environment env(std::map<std::string, std::string>{{"GITHUB_WEBHOOK_SECRET", kSecret},
                                                       {"GH_TOKEN", "ghp_token_canary"}});
    auto config = load_config_string(yaml, "test.yaml", env);
    daemon = std::make_unique<Daemon>(config, DaemonOptions{}, env);
    daemon->start();
    ASSERT_TRUE(wait_until([&] { return daemon->ready(); }, 15s)) << "orgd never became ready";
    client = connect_client(server->url());
    ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  }

  void TearDown() override {
    if (js != nullptr) jsCtx_Destroy(js);
    if (daemon) daemon->stop();
  }

  std::uint64_t stream_messages() {
    jsStreamInfo* info = nullptr;
    if (js_GetStreamInfo(&info, js, kGithubEventsStream, nullptr, nullptr) != NATS_OK) return 0;
    const std::uint64_t n = info->State.Msgs;
    jsStreamInfo_Destroy(info);
    return n;
  }

  std::optional<StoredMessage> stored(std::uint64_t sequence) {
    natsMsg* msg = nullptr;
    if (js_GetMsg(&msg, js, kGithubEventsStream, sequence, nullptr, nullptr) != NATS_OK) {
      return std::nullopt;
    }
    const BusMessage copy = BusMessage::copy_from(msg);
    natsMsg_Destroy(msg);
    StoredMessage out{copy.subject, copy.data, {}};
    for (const auto& [name, value] : copy.headers) out.headers[name] = value;
    return out;
  }

  double metric(const std::string& name, const std::string& label, const std::string& value) {
    return daemon->metrics().counter(name, "", {{label, value}}).value();
  }

  std::unique_ptr<NatsServer> server;
  std::unique_ptr<Daemon> daemon;
  testing::NatsConnectionPtr client;
  jsCtx* js = nullptr;
  const std::string body =
      R"({"ref":"refs/heads/main","repository":{"full_name":"Acme/.github","id":1}})";
};

TEST_F(GithubWebhookTest, AGoodDeliveryIsPublishedOnceWithItsHeaders) {
  CapturedLogs logs;
  start();
  // The stream is in place with the configured dedup window.
  jsStreamInfo* info = nullptr;
  ASSERT_EQ(js_GetStreamInfo(&info, js, kGithubEventsStream, nullptr, nullptr), NATS_OK);
  EXPECT_EQ(info->Config->Duplicates, 3600LL * 1'000'000'000);
  ASSERT_EQ(info->Config->SubjectsLen, 1);
  EXPECT_STREQ(info->Config->Subjects[0], "github.>");
  jsStreamInfo_Destroy(info);

  const auto answer =
      post(daemon->http_port(), "/webhooks/github", body, github_headers(body, "push", "guid-1"));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200) << answer->body;
  ASSERT_EQ(stream_messages(), 1u);
  auto m = stored(1);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->subject, "github.acme.%2Egithub.push");
  EXPECT_EQ(m->data, body);
  EXPECT_EQ(m->headers["Nats-Msg-Id"], "292430182:guid-1");
  EXPECT_EQ(m->headers["X-GitHub-Event"], "push");
  EXPECT_EQ(m->headers["X-GitHub-Delivery"], "guid-1");
  EXPECT_EQ(m->headers["X-GitHub-Hook-ID"], "292430182");
  EXPECT_EQ(m->headers["X-GitHub-Hook-Installation-Target-Type"], "repository");
  EXPECT_EQ(m->headers["X-GitHub-Hook-Installation-Target-ID"], "79929171");
  EXPECT_EQ(m->headers["Orgd-Github-Provider"], "gh");

  // A redelivery (same hook, same delivery id) is answered 2xx and kept once.
  const auto again =
      post(daemon->http_port(), "/webhooks/github", body, github_headers(body, "push", "guid-1"));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200) << again->body;
  EXPECT_THAT(again->body, HasSubstr("\"duplicate\":true"));
  EXPECT_EQ(stream_messages(), 1u);
  EXPECT_EQ(metric("orgd_webhook_deliveries_total", "result", "published"), 1);
  EXPECT_EQ(metric("orgd_webhook_deliveries_total", "result", "duplicate"), 1);

  // A new delivery is a new message.
  const auto other =
      post(daemon->http_port(), "/webhooks/github", body, github_headers(body, "push", "guid-2"));
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 200);
  EXPECT_EQ(stream_messages(), 2u);

  // Neither the webhook secret nor the token is in the logs or the metrics.
  const auto metrics = testing::http_get(daemon->http_port(), "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("orgd_webhook_deliveries_total"));
  EXPECT_EQ(metrics->body.find("canary"), std::string::npos);
  daemon->stop();
  EXPECT_EQ(logs.text().find("canary"), std::string::npos) << logs.text();
}

TEST_F(GithubWebhookTest, BadSignaturesAre401CountedAndNothingIsPublished) {
  CapturedLogs logs;
  start();
  auto wrong = github_headers(body, "push", "guid-bad", "not-the-secret");
  auto answer = post(daemon->http_port(), "/webhooks/github", body, wrong);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 401);

  auto missing = github_headers(body, "push", "guid-missing");
  missing.erase("X-Hub-Signature-256");
  answer = post(daemon->http_port(), "/webhooks/github", body, missing);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 401);

  // Signed for another body.
  auto swapped = github_headers(R"({"other":1})", "push", "guid-swapped");
  answer = post(daemon->http_port(), "/webhooks/github", body, swapped);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 401);

  // Good signature, no event header: 400.
  auto no_event = github_headers(body, "push", "guid-noevent");
  no_event.erase("X-GitHub-Event");
  answer = post(daemon->http_port(), "/webhooks/github", body, no_event);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 400);

  EXPECT_EQ(metric("orgd_webhook_rejected_total", "reason", "bad_signature"), 2);
  EXPECT_EQ(metric("orgd_webhook_rejected_total", "reason", "missing_signature"), 1);
  EXPECT_EQ(metric("orgd_webhook_rejected_total", "reason", "missing_headers"), 1);
  EXPECT_EQ(stream_messages(), 0u);
  const auto metrics = testing::http_get(daemon->http_port(), "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("orgd_webhook_rejected_total{reason=\"bad_signature\"} 2"));
  EXPECT_EQ(metrics->body.find("canary"), std::string::npos);
  EXPECT_THAT(logs.text(), HasSubstr("webhook from"));
  EXPECT_EQ(logs.text().find("canary"), std::string::npos) << logs.text();
}

TEST_F(GithubWebhookTest, BodyLimitsArePerPath) {
  NatsServerOptions options;
  options.extra_config = "max_payload: 8388608\n";  // 8 MB: room for a large delivery
  start(options);
  // Over GitHub's 25 MB: refused from the Content-Length, the body never sent.
  const auto huge = post(daemon->http_port(), "/webhooks/github", "",
                         github_headers("", "push", "guid-huge"), 26u * 1024 * 1024);
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->status, 413);

  // 2 MB: over the server's general 1 MiB body limit, taken on the webhook path.
  const std::string large = R"({"repository":{"full_name":"acme/api"},"pad":")" +
                            std::string(2u * 1024 * 1024, 'x') + "\"}";
  const auto taken = post(daemon->http_port(), "/webhooks/github", large,
                          github_headers(large, "push", "guid-large"));
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->status, 200) << taken->body;
  EXPECT_EQ(stream_messages(), 1u);
  // ...while other paths keep theirs.
  const auto elsewhere = post(daemon->http_port(), "/status", large, {});
  ASSERT_TRUE(elsewhere);
  EXPECT_EQ(elsewhere->status, 413);
}

TEST_F(GithubWebhookTest, LargerThanTheBusTakesIs413) {
  start();  // nats-server's default max_payload: 1 MB
  const std::string large = R"({"repository":{"full_name":"acme/api"},"pad":")" +
                            std::string(2u * 1024 * 1024, 'x') + "\"}";
  const auto answer = post(daemon->http_port(), "/webhooks/github", large,
                           github_headers(large, "push", "guid-large"));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 413);
  EXPECT_THAT(answer->body, HasSubstr("max_payload"));
  EXPECT_EQ(metric("orgd_webhook_rejected_total", "reason", "too_large"), 1);
  EXPECT_EQ(stream_messages(), 0u);
}

TEST_F(GithubWebhookTest, NatsDownIs503AtOnce) {
  start();
  if (js != nullptr) jsCtx_Destroy(js);
  js = nullptr;
  client.reset();
  server->stop();
  ASSERT_TRUE(wait_until([&] { return !daemon->ready(); }, 10s));
  const auto began = std::chrono::steady_clock::now();
  const auto answer =
      post(daemon->http_port(), "/webhooks/github", body, github_headers(body, "push", "guid-3"));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 503) << answer->body;
  EXPECT_LT(std::chrono::steady_clock::now() - began, 5s);  // well inside GitHub's 10 s
  EXPECT_EQ(metric("orgd_webhook_publish_failures_total", "reason", "nats_unavailable"), 1);
}

}  // namespace
}  // namespace orgd
