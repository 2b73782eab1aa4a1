// The daemon in-process against a real nats-server: a health state that ORGD_HEALTH cannot take
// (the stream is gone) is counted as a failed publish and retried until the stream is back.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include "daemon/app/daemon.hpp"
#include "daemon/bus/streams.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::connect_client;
using testing::NatsServer;
using testing::TempDir;
using testing::wait_until;

TEST(DaemonAckedPublishTest, AHealthStateTheStreamRefusedIsCountedAndRetried) {
  NatsServer server;
  TempDir dir;
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
      "repos:\n  api:\n    health: {services: [http]}\n";
  Daemon daemon(load_config_string(yaml, "test.yaml", Environment()), DaemonOptions{},
                Environment());
  daemon.start();
  ASSERT_TRUE(wait_until([&] { return daemon.ready(); }, 15s));
  auto client = connect_client(server.url());
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  auto count = [&](const char* result) {
    return daemon.metrics()
        .counter("orgd_acked_publishes_total", "", {{"kind", "health_state"}, {"result", result}})
        .value();
  };

  ASSERT_EQ(js_DeleteStream(js, kHealthStream, nullptr, nullptr), NATS_OK);
  const std::string report = R"({"status":"ok","version":"1.0.0"})";
  ASSERT_EQ(natsConnection_PublishString(client.get(), "org.acme.health.api.http", report.c_str()),
            NATS_OK);
  ASSERT_TRUE(wait_until([&] { return count("failed") >= 1; }, 15s));
  EXPECT_EQ(count("acked"), 0);

  for (const auto& spec : orgd_streams("org.acme", 1)) {
    if (spec.name == kHealthStream) {
      ASSERT_TRUE(ensure_stream(js, spec).ok());
    }
  }
  ASSERT_TRUE(wait_until([&] { return count("acked") == 1; }, 20s));
  natsMsg* stored = nullptr;
  ASSERT_EQ(
      js_GetLastMsg(&stored, js, kHealthStream, "org.acme.state.health.api.http", nullptr, nullptr),
      NATS_OK);
  const std::string state(natsMsg_GetData(stored),
                          static_cast<std::size_t>(natsMsg_GetDataLength(stored)));
  natsMsg_Destroy(stored);
  EXPECT_NE(state.find("1.0.0"), std::string::npos) << state;
  EXPECT_EQ(count("given_up"), 0);
  daemon.stop();
  jsCtx_Destroy(js);
}

}  // namespace
}  // namespace orgd
