// Acknowledged JetStream publishes against a real nats-server: failures are counted and retried,
// given up after a bound, and a last-state stream always ends with the newest state, also when
// the server goes away in the middle of a burst of changes.
#include "daemon/bus/acked_publisher.hpp"

#include <gtest/gtest.h>
#include <nats/nats.h>

#include "daemon/bus/nats_connection.hpp"
#include "daemon/bus/streams.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::NatsServer;
using testing::wait_until;

class AckedPublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NatsConnectionSettings settings;
    settings.urls = {server.url()};
    settings.reconnect_wait = 50ms;
    nats = std::make_unique<NatsConnection>(settings);
    nats->connect();
    ASSERT_TRUE(wait_until([&] { return nats->connected(); }, 10s));
  }

  double count(const std::string& kind, const std::string& result) {
    return metrics.counter("orgd_acked_publishes_total", "", {{"kind", kind}, {"result", result}})
        .value();
  }

  void create_stream(const std::string& name, const std::string& subjects,
                     std::int64_t per_subject = -1) {
    StreamSpec spec;
    spec.name = name;
    spec.subjects = {subjects};
    spec.max_msgs_per_subject = per_subject;
    ASSERT_TRUE(ensure_stream(nats->jetstream(), spec).ok());
  }

  std::uint64_t stream_messages(const std::string& name) {
    jsStreamInfo* info = nullptr;
    if (js_GetStreamInfo(&info, nats->jetstream(), name.c_str(), nullptr, nullptr) != NATS_OK) {
      return 0;
    }
    const std::uint64_t n = info->State.Msgs;
    jsStreamInfo_Destroy(info);
    return n;
  }

  std::string last_on(const std::string& stream, const std::string& subject) {
    natsMsg* msg = nullptr;
    if (js_GetLastMsg(&msg, nats->jetstream(), stream.c_str(), subject.c_str(), nullptr, nullptr) !=
        NATS_OK) {
      return "<none>";
    }
    std::string data(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    natsMsg_Destroy(msg);
    return data;
  }

  static BusMessage message(std::string subject, std::string data) {
    BusMessage m;
    m.subject = std::move(subject);
    m.data = std::move(data);
    return m;
  }

  NatsServer server;
  MetricsRegistry metrics;
  std::unique_ptr<NatsConnection> nats;
};

TEST_F(AckedPublisherTest, AFailedPublishIsCountedAndRetriedUntilTheStreamTakesIt) {
  AckedPublisherSettings settings;
  settings.kind = "events";
  settings.retry_delay = 100ms;
  settings.max_attempts = 50;
  settings.ack_timeout = 2s;
  AckedPublisher publisher(*nats, metrics, settings);
  // No stream captures the subject yet: the server answers "no responders".
  ASSERT_TRUE(publisher.publish(message("audit.deploy.1.accepted", "one")).ok());
  ASSERT_TRUE(wait_until([&] { return count("events", "failed") >= 1; }, 10s));
  EXPECT_EQ(count("events", "acked"), 0);
  create_stream("AUDIT", "audit.>");
  ASSERT_TRUE(publisher.flush(20s));
  EXPECT_EQ(count("events", "acked"), 1);
  EXPECT_EQ(count("events", "given_up"), 0);
  EXPECT_EQ(stream_messages("AUDIT"), 1u);
}

TEST_F(AckedPublisherTest, APublishIsGivenUpAfterItsAttempts) {
  AckedPublisherSettings settings;
  settings.kind = "events";
  settings.retry_delay = 20ms;
  settings.max_attempts = 3;
  AckedPublisher publisher(*nats, metrics, settings);
  ASSERT_TRUE(publisher.publish(message("nowhere.x", "lost")).ok());
  ASSERT_TRUE(publisher.flush(20s));
  EXPECT_EQ(count("events", "failed"), 3);
  EXPECT_EQ(count("events", "given_up"), 1);
  EXPECT_EQ(count("events", "acked"), 0);
}

TEST_F(AckedPublisherTest, TheNewestStateWinsPerSubjectThroughABurstAndAnOutage) {
  create_stream("STATE", "state.>", 1);
  AckedPublisherSettings settings;
  settings.kind = "health_state";
  settings.retry_delay = 50ms;
  settings.max_attempts = 1000;
  settings.ack_timeout = 300ms;
  AckedPublisher publisher(*nats, metrics, settings);
  constexpr int kSubjects = 20;
  std::vector<int> version(kSubjects, 0);
  auto burst = [&](int rounds) {
    for (int r = 0; r < rounds; ++r) {
      for (int s = 0; s < kSubjects; ++s) {
        ++version[s];
        ASSERT_TRUE(publisher
                        .publish_latest(message("state.svc" + std::to_string(s),
                                                "v" + std::to_string(version[s])))
                        .ok());
      }
    }
  };
  burst(200);
  // The server goes away with states in flight and more coming: their acks time out and they
  // are retried, while newer states keep arriving.
  server.stop();
  ASSERT_TRUE(wait_until([&] { return !nats->connected(); }, 10s));
  burst(50);
  ASSERT_TRUE(wait_until([&] { return count("health_state", "failed") >= 1; }, 10s));
  // The last states come while older ones are in flight, failing and waiting to be tried
  // again; the server returns only after more of them failed.
  burst(50);
  const double failed_before = count("health_state", "failed");
  ASSERT_TRUE(wait_until([&] { return count("health_state", "failed") > failed_before; }, 10s));
  server.start();
  ASSERT_TRUE(publisher.flush(60s)) << publisher.pending() << " still pending";
  for (int s = 0; s < kSubjects; ++s) {
    const std::string subject = "state.svc" + std::to_string(s);
    EXPECT_EQ(last_on("STATE", subject), "v" + std::to_string(version[s])) << subject;
  }
  EXPECT_EQ(count("health_state", "given_up"), 0);
  EXPECT_GT(count("health_state", "superseded"), 0);
}

}  // namespace
}  // namespace orgd
