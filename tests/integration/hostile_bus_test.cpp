// The daemon in-process against a real nats-server, fed what any client on the bus can publish:
// made-up or malformed JetStream advisories. orgd keeps running, counts what it refused, and
// dead-letters a command only when the server confirms it really ran out of deliveries.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <cstring>

#include "daemon/app/daemon.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/status.pb.h"
#include "tests/support/collector.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::Collector;
using testing::connect_client;
using testing::NatsServer;
using testing::TempDir;
using testing::wait_until;

constexpr const char* kAdvisory =
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ORGD_CMD.orgd_cmd_deploy";

std::string advisory_for(std::uint64_t sequence, int deliveries) {
  return R"({"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","stream":"ORGD_CMD",)"
         R"("consumer":"orgd_cmd_deploy","stream_seq":)" +
         std::to_string(sequence) + R"(,"deliveries":)" + std::to_string(deliveries) + "}";
}

class HostileBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string yaml =
        "org: acme\n"
        "nats:\n  urls: [" +
        server.url() +
        "]\n  connect_timeout: 2s\n"
        "  reconnect_wait: 100ms\n  data_dir: " +
        dir.path().string() +
        "\n"
        "http:\n  enabled: false\n"
        "log:\n  level: warn\n"
        "deploy:\n  health_gate: false\n"
        "providers:\n  local: {type: local}\n"
        "repos:\n  api:\n    deploy:\n      dev: {provider: local, duration: 50ms}\n";
    DaemonOptions options;
    options.command_backoff = {200ms};
    options.command_max_deliver = kMaxDeliver;
    daemon = std::make_unique<Daemon>(load_config_string(yaml, "test.yaml", Environment()), options,
                                      Environment());
    daemon->start();
    ASSERT_TRUE(wait_until([&] { return daemon->ready(); }, 15s)) << "orgd never became ready";
    ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  }

  void TearDown() override {
    daemon.reset();
    if (js != nullptr) jsCtx_Destroy(js);
  }

  double advisories(const std::string& result) {
    return daemon->metrics()
        .counter("orgd_command_advisories_total", "", {{"op", "deploy"}, {"result", result}})
        .value();
  }

  std::uint64_t publish_command(const std::string& subject, const std::string& body) {
    jsPubAck* ack = nullptr;
    EXPECT_EQ(js_Publish(&ack, js, subject.c_str(), body.data(), static_cast<int>(body.size()),
                         nullptr, nullptr),
              NATS_OK);
    const std::uint64_t sequence = ack != nullptr ? ack->Sequence : 0;
    jsPubAck_Destroy(ack);
    return sequence;
  }

  void publish(const char* subject, const std::string& body) {
    ASSERT_EQ(
        natsConnection_Publish(client.get(), subject, body.data(), static_cast<int>(body.size())),
        NATS_OK);
  }

  bool status_answers() {
    natsMsg* reply = nullptr;
    if (natsConnection_RequestString(&reply, client.get(), "org.acme.api.status", "", 5000) !=
        NATS_OK) {
      return false;
    }
    v1::OrgStatus status;
    const bool ok = decode(std::string_view(natsMsg_GetData(reply),
                                            static_cast<std::size_t>(natsMsg_GetDataLength(reply))),
                           Encoding::json, status, 1 << 20)
                        .ok() &&
                    status.org() == "acme";
    natsMsg_Destroy(reply);
    return ok;
  }

  static constexpr int kMaxDeliver = 3;
  NatsServer server;
  TempDir dir;
  testing::NatsConnectionPtr client = connect_client(server.url());
  std::unique_ptr<Daemon> daemon;
  jsCtx* js = nullptr;
};

TEST_F(HostileBusTest, MalformedAdvisoriesAreCountedAndOrgdKeepsAnswering) {
  Collector dlq(client.get(), "org.acme.dlq.>");
  const std::vector<std::string> junk = {
      R"({"stream_seq":1,"deliveries":"x"})",
      "null",
      "{}",
      "[]",
      "{",
      "",
      "\xff\xfe",
      R"("stream_seq")",
      R"({"stream_seq":"1","deliveries":3})",
      R"({"stream_seq":1,"deliveries":null})",
      R"({"stream_seq":-1,"deliveries":3})",
      R"({"stream_seq":1.5,"deliveries":3})",
      R"({"stream_seq":1e30,"deliveries":3})",
      R"({"stream_seq":18446744073709551616,"deliveries":3})",
      R"({"stream_seq":{"a":1},"deliveries":[3]})",
      R"({"stream_seq":1,"deliveries":3,"stream":7,"consumer":"orgd_cmd_deploy"})",
      R"({"stream_seq":1,"deliveries":3,"stream":"OTHER","consumer":"orgd_cmd_deploy"})",
  };
  for (const auto& body : junk) publish(kAdvisory, body);
  ASSERT_EQ(natsConnection_Flush(client.get()), NATS_OK);
  EXPECT_TRUE(wait_until([&] { return advisories("malformed") == junk.size(); }, 10s))
      << advisories("malformed") << " of " << junk.size() << " counted";
  EXPECT_TRUE(status_answers());
  // Still consuming commands.
  publish_command("org.acme.cmd.deploy", R"({"repos":["api"],"env":"dev","requestId":"after"})");
  EXPECT_TRUE(wait_until(
      [&] {
        return daemon->metrics()
                   .counter("orgd_commands_total", "", {{"op", "deploy"}, {"result", "accepted"}})
                   .value() == 1;
      },
      10s));
  EXPECT_EQ(dlq.size(), 0u);
  EXPECT_EQ(daemon->metrics()
                .counter("orgd_callback_errors_total", "", {{"callback", "cmd.advisory"}})
                .value(),
            0);
}

TEST_F(HostileBusTest, AMadeUpAdvisoryDoesNotDeadLetterAnAcceptedCommand) {
  Collector dlq(client.get(), "org.acme.dlq.>");
  Collector accepted(client.get(), "org.acme.events.deploy.*.accepted");
  const std::uint64_t sequence =
      publish_command("org.acme.cmd.deploy", R"({"repos":["api"],"env":"dev","requestId":"once"})");
  ASSERT_TRUE(wait_until([&] { return accepted.size() == 1; }, 10s));
  publish(kAdvisory, advisory_for(sequence, kMaxDeliver));
  ASSERT_EQ(natsConnection_Flush(client.get()), NATS_OK);
  // Today's defect shows as a dead letter: wait for either outcome.
  ASSERT_TRUE(wait_until([&] { return advisories("refused") == 1 || dlq.size() > 0; }, 10s));
  EXPECT_EQ(dlq.size(), 0u) << "an accepted command was dead-lettered on a made-up advisory";
  EXPECT_EQ(advisories("refused"), 1);
  EXPECT_EQ(advisories("dead_lettered"), 0);
}

TEST_F(HostileBusTest, AnAdvisoryTheServerDoesNotConfirmIsRefused) {
  Collector dlq(client.get(), "org.acme.dlq.>");
  // A stored message that is not this consumer's (another command op), a sequence the stream
  // never had, and a delivery count that is not the consumer's max_deliver.
  const std::uint64_t other = publish_command("org.acme.cmd.secrets.sync", R"({"names":["X"]})");
  ASSERT_GT(other, 0u);
  publish(kAdvisory, advisory_for(other, kMaxDeliver));
  publish(kAdvisory, advisory_for(other + 1000, kMaxDeliver));
  publish(kAdvisory, advisory_for(other, kMaxDeliver + 7));
  Collector accepted(client.get(), "org.acme.events.deploy.*.accepted");
  const std::uint64_t sequence =
      publish_command("org.acme.cmd.deploy", R"({"repos":["api"],"env":"dev","requestId":"two"})");
  ASSERT_TRUE(wait_until([&] { return accepted.size() == 1; }, 10s));
  publish(kAdvisory, advisory_for(sequence, kMaxDeliver + 7));
  ASSERT_EQ(natsConnection_Flush(client.get()), NATS_OK);
  ASSERT_TRUE(wait_until([&] { return advisories("refused") == 4 || dlq.size() > 0; }, 10s))
      << advisories("refused");
  EXPECT_EQ(dlq.size(), 0u);
  EXPECT_EQ(advisories("refused"), 4);
  EXPECT_TRUE(status_answers());
}

TEST_F(HostileBusTest, ACommandPublishedStraightToTheDeliverySubjectIsRefused) {
  // The consumer's delivery subject is a plain subject: a client can publish a "command" there
  // that never went through ORGD_CMD (no stream sequence, no de-duplication, no audit).
  Collector accepted(client.get(), "org.acme.events.deploy.*.accepted");
  publish_command("org.acme.cmd.deploy", R"({"repos":["api"],"env":"dev","requestId":"real"})");
  ASSERT_TRUE(wait_until([&] { return accepted.size() == 1; }, 10s));
  publish("_ORGD_DELIVER.org.acme.deploy", R"({"repos":["api"],"env":"dev","requestId":"forged"})");
  ASSERT_EQ(natsConnection_Flush(client.get()), NATS_OK);
  auto refused = [&] {
    return daemon->metrics()
        .counter("orgd_messages_rejected_total", "",
                 {{"kind", "cmd"}, {"code", "invalid_argument"}})
        .value();
  };
  ASSERT_TRUE(wait_until([&] { return refused() == 1 || accepted.size() > 1; }, 10s));
  EXPECT_EQ(accepted.size(), 1u) << "a command that bypassed the stream was carried out";
  EXPECT_EQ(refused(), 1);
  EXPECT_TRUE(status_answers());
}

}  // namespace
}  // namespace orgd
