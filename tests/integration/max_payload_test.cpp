// Answers over the NATS server's max_payload are never dropped silently: against a real
// nats-server with a small max_payload, an org status too big for one message comes back as a
// 413 error naming the sizes and what to ask for instead, is counted, and orgd keeps answering;
// an acknowledged publish (events, state) over the limit is refused at once and counted, not
// retried.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <nlohmann/json.hpp>

#include "daemon/app/daemon.hpp"
#include "daemon/bus/acked_publisher.hpp"
#include "daemon/bus/nats_connection.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/status.pb.h"
#include "tests/support/http_client.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::NatsServer;
using testing::wait_until;

constexpr int kMaxPayload = 8192;

NatsServer::Options small_payload_server() {
  NatsServer::Options options;
  options.extra_config = "max_payload: " + std::to_string(kMaxPayload) + "\n";
  return options;
}

// `repos` repos of one service each: the org status is well over 8 KiB from about 60.
std::string config_yaml(const std::string& url, int repos) {
  std::string yaml = "org: acme\nnats:\n  urls: [" + url +
                     "]\n  connect_timeout: 2s\n  reconnect_wait: 100ms\n"
                     "http:\n  listen: 127.0.0.1:0\nlog:\n  level: warn\n"
                     "providers:\n  local: {type: local}\nrepos:\n";
  for (int i = 0; i < repos; ++i) {
    yaml += "  service-with-a-long-name-" + std::to_string(i) +
            ":\n    health: {services: [http]}\n";
  }
  return yaml;
}

struct Answer {
  BusMessage message;
  bool answered = false;
};

Answer ask(natsConnection* conn, const std::string& subject, const std::string& data) {
  natsMsg* reply = nullptr;
  Answer out;
  if (natsConnection_Request(&reply, conn, subject.c_str(), data.data(),
                             static_cast<int>(data.size()), 5000) != NATS_OK) {
    return out;
  }
  out.message = BusMessage::copy_from(reply);
  out.answered = true;
  natsMsg_Destroy(reply);
  return out;
}

TEST(MaxPayload, AStatusOverMaxPayloadIsA413ErrorNamingWhatToAskForAndIsCounted) {
  NatsServer server(small_payload_server());
  auto config = load_config_string(config_yaml(server.url(), 200), "test.yaml", Environment());
  auto daemon = std::make_unique<Daemon>(config, DaemonOptions{}, Environment());
  daemon->start();
  ASSERT_TRUE(wait_until([&] { return daemon->ready(); }, 15s));

  // What /status serves (HTTP has no max_payload) is what the bus could not carry.
  auto full = testing::http_get(daemon->http_port(), "/status");
  ASSERT_TRUE(full.has_value());
  ASSERT_GT(full->body.size(), static_cast<std::size_t>(kMaxPayload));

  auto client = testing::connect_client(server.url());
  for (int attempt = 1; attempt <= 2; ++attempt) {
    const Answer a = ask(client.get(), "org.acme.api.status", "");
    ASSERT_TRUE(a.answered) << "the reply was dropped instead of answered";
    EXPECT_EQ(a.message.header("Nats-Service-Error-Code"), "413");
    const auto body = nlohmann::json::parse(a.message.data);
    EXPECT_EQ(body["error"]["code"], "too_large");
    const std::string message = body["error"]["message"];
    EXPECT_NE(message.find("max_payload of 8192 bytes"), std::string::npos) << message;
    EXPECT_NE(message.find("P.api.status.repo"), std::string::npos) << message;
    EXPECT_LT(a.message.wire_size(), static_cast<std::size_t>(kMaxPayload));
  }

  // orgd keeps answering what fits.
  const Answer one =
      ask(client.get(), "org.acme.api.status.repo", R"({"repo":"service-with-a-long-name-7"})");
  ASSERT_TRUE(one.answered);
  EXPECT_FALSE(one.message.header("Nats-Service-Error-Code").has_value()) << one.message.data;
  EXPECT_NE(one.message.data.find("service-with-a-long-name-7"), std::string::npos);

  std::optional<testing::HttpResult> metrics;
  ASSERT_TRUE(wait_until(
      [&] {
        metrics = testing::http_get(daemon->http_port(), "/metrics");
        return metrics && metrics->body.find(
                              R"(orgd_api_replies_too_large_total{endpoint="status"} 2)") !=
                              std::string::npos;
      },
      10s))
      << (metrics ? metrics->body : "no /metrics");
  daemon->stop();
}

TEST(MaxPayload, AnAckedPublishOverMaxPayloadIsRefusedAtOnceAndNotRetried) {
  NatsServer server(small_payload_server());
  NatsConnectionSettings settings;
  settings.urls = {server.url()};
  NatsConnection nats(settings);
  nats.connect();
  ASSERT_TRUE(wait_until([&] { return nats.connected(); }, 10s));
  EXPECT_EQ(nats.max_payload(), static_cast<std::size_t>(kMaxPayload));
  StreamSpec spec;
  spec.name = "BIG";
  spec.subjects = {"big.>"};
  ASSERT_TRUE(ensure_stream(nats.jetstream(), spec).ok());

  MetricsRegistry metrics;
  AckedPublisherSettings publisher_settings;
  publisher_settings.kind = "events";
  AckedPublisher publisher(nats, metrics, publisher_settings);
  const auto count = [&](const char* result) {
    return metrics.counter("orgd_acked_publishes_total", "", {{"kind", "events"}, {"result", result}})
        .value();
  };

  BusMessage big;
  big.subject = "big.one";
  big.data = std::string(kMaxPayload + 1, 'x');
  auto refused = publisher.publish(big);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::too_large);
  EXPECT_NE(refused.error().message.find("8193 bytes"), std::string::npos)
      << refused.error().message;
  EXPECT_FALSE(publisher.publish_latest(big).ok());
  EXPECT_EQ(count("too_large"), 2);

  // A message that fits still goes, and the refused ones were never queued to be retried.
  BusMessage small;
  small.subject = "big.two";
  small.data = "fits";
  ASSERT_TRUE(publisher.publish(small).ok());
  ASSERT_TRUE(publisher.flush(10s));
  EXPECT_EQ(count("acked"), 1);
  EXPECT_EQ(count("failed"), 0);
  EXPECT_EQ(publisher.pending(), 0u);

  // A plain publish (a reply) over the limit is the same error, never a silent drop.
  auto plain = nats.publish(big);
  ASSERT_FALSE(plain.ok());
  EXPECT_EQ(plain.error().code, ErrorCode::too_large);
  publisher.stop(1s);
}

}  // namespace
}  // namespace orgd
