// The command intake against a real nats-server, with a handler that hangs the way a replica
// stuck mid-command does: the server runs out of deliveries and says so in an advisory, which
// the intake confirms before it dead-letters the command.
#include "daemon/events/command_intake.hpp"

#include <gtest/gtest.h>
#include <nats/nats.h>

#include <condition_variable>
#include <mutex>

#include "daemon/bus/nats_connection.hpp"
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

class CommandIntakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NatsConnectionSettings settings;
    settings.urls = {server.url()};
    nats = std::make_unique<NatsConnection>(settings);
    nats->connect();
    ASSERT_TRUE(wait_until([&] { return nats->connected(); }, 10s));
    for (const auto& spec : orgd_streams("org.acme", 1)) {
      ASSERT_TRUE(ensure_stream(nats->jetstream(), spec).ok()) << spec.name;
    }
    rejections = std::make_unique<Rejections>("org.acme", *nats, metrics);
    ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  }

  void TearDown() override {
    release();
    intake.reset();
    rejections.reset();
    nats.reset();
    if (js != nullptr) jsCtx_Destroy(js);
  }

  // The first delivery hangs until release(); the others succeed.
  void start_intake(CommandIntake::CarriedOutQuery query) {
    CommandIntakeSettings settings;
    settings.prefix = "org.acme";
    settings.op = "deploy";
    settings.max_deliver = 2;
    settings.backoff = {300ms};
    // A hung handler never acks: redelivered after this.
    settings.ack_wait = 300ms;
    intake = std::make_unique<CommandIntake>(
        settings,
        [this](const BusMessage&, const std::string&) -> Result<Ok> {
          std::unique_lock lock(mutex);
          ++calls;
          if (calls == 1) cv.wait_for(lock, 60s, [&] { return released; });
          return Ok{};
        },
        *nats, *rejections, metrics);
    intake->set_carried_out_query(std::move(query));
    ASSERT_TRUE(intake->start(nats->raw(), nats->jetstream()).ok());
  }

  void release() {
    std::lock_guard lock(mutex);
    released = true;
    cv.notify_all();
  }

  double advisories(const std::string& result) {
    return metrics
        .counter("orgd_command_advisories_total", "", {{"op", "deploy"}, {"result", result}})
        .value();
  }

  std::string publish_command() {
    const std::string body = R"({"repos":["api"],"env":"dev","requestId":"hung"})";
    jsPubAck* ack = nullptr;
    EXPECT_EQ(js_Publish(&ack, js, "org.acme.cmd.deploy", body.data(),
                         static_cast<int>(body.size()), nullptr, nullptr),
              NATS_OK);
    jsPubAck_Destroy(ack);
    return body;
  }

  NatsServer server;
  testing::NatsConnectionPtr client = connect_client(server.url());
  jsCtx* js = nullptr;
  MetricsRegistry metrics;
  std::unique_ptr<NatsConnection> nats;
  std::unique_ptr<Rejections> rejections;
  std::unique_ptr<CommandIntake> intake;
  std::mutex mutex;  // guards calls, released
  std::condition_variable cv;
  int calls = 0;
  bool released = false;
};

TEST_F(CommandIntakeTest, ACommandThatRanOutOfDeliveriesIsDeadLetteredOnce) {
  std::atomic<int> asked{0};
  start_intake([&](const BusMessage&, const std::string& dedup_id) -> Result<bool> {
    ++asked;
    EXPECT_EQ(dedup_id, "ORGD_CMD:1");
    return false;
  });
  Collector dlq(client.get(), "org.acme.dlq.>");
  const std::string body = publish_command();
  ASSERT_TRUE(wait_until([&] { return dlq.size() >= 1; }, 30s)) << "no dead letter";
  const auto dead = dlq.messages().front();
  EXPECT_EQ(dead.subject, "org.acme.dlq.cmd.deploy");
  EXPECT_EQ(dead.data, body);
  EXPECT_NE(dead.header("Orgd-Dlq-Reason").value_or("").find("max deliveries (2) reached"),
            std::string::npos);
  EXPECT_EQ(advisories("dead_lettered"), 1);
  EXPECT_EQ(asked.load(), 1);
  // The same advisory again (replayed by anyone) copies nothing more.
  const std::string advisory =
      R"({"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"ORGD_CMD",)"
      R"("consumer":"orgd_cmd_deploy","stream_seq":1,"deliveries":2})";
  natsConnection_PublishString(
      client.get(), "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ORGD_CMD.orgd_cmd_deploy",
      advisory.c_str());
  natsConnection_Flush(client.get());
  ASSERT_TRUE(wait_until([&] { return advisories("refused") == 1; }, 10s));
  EXPECT_EQ(dlq.size(), 1u);
}

TEST_F(CommandIntakeTest, ACommandTheHandlerSideCarriedOutIsNotDeadLettered) {
  // Another replica did it (or this one did and lost the ack): the handler side knows its id.
  start_intake([](const BusMessage&, const std::string&) -> Result<bool> { return true; });
  Collector dlq(client.get(), "org.acme.dlq.>");
  publish_command();
  ASSERT_TRUE(wait_until([&] { return advisories("refused") == 1 || dlq.size() > 0; }, 30s));
  EXPECT_EQ(dlq.size(), 0u);
  EXPECT_EQ(advisories("dead_lettered"), 0);
}

}  // namespace
}  // namespace orgd
