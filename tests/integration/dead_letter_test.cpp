// Dead letters from the daemon in-process against a real nats-server: a flood of invalid health
// reports costs a bounded number of JetStream writes, each with a bounded body and no
// credentials, and every rejection is still counted.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <chrono>
#include <string>

#include "daemon/app/daemon.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/events/rejections.hpp"
#include "tests/support/collector.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::Collector;
using testing::connect_client;
using testing::NatsServer;
using testing::wait_until;

std::string config_yaml(const std::string& url) {
  return "org: acme\n"
         "nats:\n  urls: [" +
         url +
         "]\n  connect_timeout: 2s\n  reconnect_wait: 100ms\n"
         "http:\n  enabled: false\n"
         "log:\n  level: warn\n"
         "repos:\n  api:\n    health: {services: [http]}\n";
}

double counter(Daemon& d, const std::string& name, const Labels& labels) {
  return d.metrics().counter(name, "", labels).value();
}

std::uint64_t dlq_messages(natsConnection* conn) {
  jsCtx* js = nullptr;
  if (natsConnection_JetStream(&js, conn, nullptr) != NATS_OK) return 0;
  jsStreamInfo* si = nullptr;
  std::uint64_t n = 0;
  if (js_GetStreamInfo(&si, js, kDlqStream, nullptr, nullptr) == NATS_OK) {
    n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
  }
  jsCtx_Destroy(js);
  return n;
}

TEST(DeadLetters, FloodOfLargeInvalidReportsCostsBoundedWritesWithoutCredentials) {
  NatsServer server;
  auto client = connect_client(server.url());
  Collector dlq(client.get(), "org.acme.dlq.>");

  auto config = load_config_string(config_yaml(server.url()), "test.yaml", Environment());
  Daemon d(config, DaemonOptions{}, Environment());
  d.start();
  ASSERT_TRUE(wait_until([&] { return d.ready(); }, 15s)) << "orgd never became ready";

  const std::string canary = "CANARY-dlq-4b7e2a";
  const std::string garbage(20'000, '\x01');  // not JSON; more than a dead letter keeps
  constexpr int kFlood = 500;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kFlood; ++i) {
    natsMsg* msg = nullptr;
    natsMsg_Create(&msg, "org.acme.health.api.http", nullptr, garbage.data(),
                   static_cast<int>(garbage.size()));
    natsMsgHeader_Set(msg, "Authorization", ("Bearer " + canary).c_str());
    natsMsgHeader_Set(msg, "X-Api-Token", canary.c_str());
    natsMsgHeader_Set(msg, "X-Request-Id", "flood");
    natsConnection_PublishMsg(client.get(), msg);
    natsMsg_Destroy(msg);
  }
  natsConnection_Flush(client.get());

  const Labels health{{"kind", "health"}, {"code", "invalid_argument"}};
  ASSERT_TRUE(
      wait_until([&] { return counter(d, "orgd_messages_rejected_total", health) == kFlood; }, 30s))
      << counter(d, "orgd_messages_rejected_total", health);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const double suppressed = counter(d, "orgd_dead_letters_suppressed_total", {{"kind", "health"}});

  // Written and suppressed add up to the flood; written is bounded by the origin's bucket
  // (a burst of 20, 5 more each second the flood lasted).
  ASSERT_TRUE(wait_until([&] { return dlq_messages(client.get()) + suppressed == kFlood; }, 10s))
      << dlq_messages(client.get()) << " written, " << suppressed << " suppressed";
  const auto written = dlq_messages(client.get());
  EXPECT_LE(static_cast<double>(written), 20 + 5 * seconds + 1) << "in " << seconds << " s";
  EXPECT_GT(suppressed, 0);

  ASSERT_TRUE(wait_until([&] { return dlq.size() == written; }, 10s)) << dlq.size();
  for (const auto& m : dlq.messages()) {
    EXPECT_EQ(m.subject, "org.acme.dlq.health.api.http");
    EXPECT_EQ(m.data, garbage.substr(0, 4096));
    EXPECT_EQ(m.header(kDlqBodySizeHeader), "20000");
    EXPECT_EQ(m.header(kDlqBodySha256Header).value_or("").size(), 64u);
    EXPECT_EQ(m.header("X-Request-Id"), "flood");
    for (const auto& [name, value] : m.headers) {
      EXPECT_EQ(value.find(canary), std::string::npos) << name;
    }
  }
  d.stop();
}

// ORGD_DLQ and ORGD_HEALTH take what anyone allowed on their subjects publishes: a message far
// larger than any orgd writes there is refused by the server, so junk of max_payload size
// cannot push real dead letters or states out.
TEST(DeadLetters, StreamsRefuseMessagesLargerThanOrgdWritesThere) {
  NatsServer server;
  auto client = connect_client(server.url());
  auto config = load_config_string(config_yaml(server.url()), "test.yaml", Environment());
  Daemon d(config, DaemonOptions{}, Environment());
  d.start();
  ASSERT_TRUE(wait_until([&] { return d.ready(); }, 15s)) << "orgd never became ready";
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  auto publish = [&](const std::string& subject, std::size_t size) {
    const std::string body(size, 'j');
    jsPubAck* ack = nullptr;
    const natsStatus s = js_Publish(&ack, js, subject.c_str(), body.data(),
                                    static_cast<int>(body.size()), nullptr, nullptr);
    jsPubAck_Destroy(ack);
    return s;
  };
  EXPECT_NE(publish("org.acme.dlq.junk", 900 * 1024), NATS_OK);
  EXPECT_NE(publish("org.acme.state.health.api.junk", 100 * 1024), NATS_OK);
  // What fits is taken: the streams are there and capture these subjects.
  EXPECT_EQ(publish("org.acme.dlq.junk", 8 * 1024), NATS_OK);
  EXPECT_EQ(publish("org.acme.state.health.api.junk", 1024), NATS_OK);
  EXPECT_EQ(dlq_messages(client.get()), 1u);
  jsCtx_Destroy(js);
}

}  // namespace
}  // namespace orgd
