// The daemon's connection lifecycle against a real nats-server: a server that comes back with an
// empty store gets orgd's streams, KV buckets and command consumer back; a refused credential is
// reported and retried; orgd is ready soon after NATS returns from a long outage; and a stop
// without NATS is bounded.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ringbuffer_sink.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "daemon/app/daemon.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/core/logging.hpp"
#include "tests/support/collector.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_pki.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::Collector;
using testing::connect_client;
using testing::NatsServer;
using testing::NatsServerOptions;
using testing::TempDir;
using testing::wait_until;
using SteadyClock = std::chrono::steady_clock;

std::string config_yaml(const std::string& url, const std::string& data_dir,
                        const std::string& nats_extra = "") {
  return "org: acme\n"
         "nats:\n  urls: [" + url + "]\n  connect_timeout: 2s\n  reconnect_wait: 100ms\n"
         "  data_dir: " + data_dir + "\n" + nats_extra +
         "http:\n  listen: 127.0.0.1:0\n"
         "log:\n  level: warn\n"
         "deploy:\n  lease_ttl: 2s\n  retry_backoff: 50ms\n  health_gate: false\n"
         "providers:\n  local: {type: local}\n"
         "repos:\n"
         "  api:\n    deploy:\n      dev: {provider: local, duration: 50ms}\n";
}

std::unique_ptr<Daemon> make_daemon(const std::string& yaml) {
  auto config = load_config_string(yaml, "test.yaml", Environment());
  DaemonOptions options;
  options.deploy_poll_interval = 20ms;
  options.command_backoff = {200ms};
  return std::make_unique<Daemon>(config, options, Environment());
}

bool stream_exists(natsConnection* conn, const std::string& name) {
  jsCtx* js = nullptr;
  if (natsConnection_JetStream(&js, conn, nullptr) != NATS_OK) return false;
  jsStreamInfo* info = nullptr;
  const bool found = js_GetStreamInfo(&info, js, name.c_str(), nullptr, nullptr) == NATS_OK;
  if (found) jsStreamInfo_Destroy(info);
  jsCtx_Destroy(js);
  return found;
}

bool consumer_exists(natsConnection* conn, const std::string& stream,
                     const std::string& consumer) {
  jsCtx* js = nullptr;
  if (natsConnection_JetStream(&js, conn, nullptr) != NATS_OK) return false;
  jsConsumerInfo* info = nullptr;
  const bool found = js_GetConsumerInfo(&info, js, stream.c_str(), consumer.c_str(), nullptr,
                                        nullptr) == NATS_OK;
  if (found) jsConsumerInfo_Destroy(info);
  jsCtx_Destroy(js);
  return found;
}

int executions(const TempDir& data, const std::string& repo) {
  std::ifstream in(data.path() / "local" / repo / "dev" / "executions.log");
  int n = 0;
  std::string line;
  while (std::getline(in, line)) n += line.empty() ? 0 : 1;
  return n;
}

std::optional<nlohmann::json> readyz(const Daemon& d) {
  auto r = testing::http_get(d.http_port(), "/readyz");
  if (!r) return std::nullopt;
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  j["http_status"] = r->status;
  return j;
}

// Log lines of one subsystem at warning level and above, captured for the test.
class CapturedWarnings {
 public:
  explicit CapturedWarnings(const std::string& logger)
      : logger_(logging::get(logger)),
        sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(200)) {
    sink_->set_level(spdlog::level::warn);
    sink_->set_pattern("%l %v");
    logger_->sinks().push_back(sink_);
    previous_ = logger_->level();
    logger_->set_level(spdlog::level::info);
  }
  ~CapturedWarnings() {
    auto& sinks = logger_->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
    logger_->set_level(previous_);
  }
  bool contains(const std::string& text) const {
    for (const auto& line : sink_->last_formatted()) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  }
  std::string text() const {
    std::string out;
    for (const auto& line : sink_->last_formatted()) out += line;
    return out;
  }

 private:
  std::shared_ptr<spdlog::logger> logger_;
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  spdlog::level::level_enum previous_;
};

// A5: a nats-server that comes back with an empty store (a lost volume, a new node) gets back
// everything orgd keeps there, and commands are consumed again without restarting orgd.
TEST(ReconnectTest, AStoreLossGetsStreamsBucketsAndTheCommandConsumerBack) {
  NatsServer server;
  TempDir data("orgd-reconnect-data");
  auto d = make_daemon(config_yaml(server.url(), data.str()));
  d->start();
  ASSERT_TRUE(wait_until([&] { return d->ready(); }, 15s)) << "orgd never became ready";
  // A stream orgd knows nothing of shows that the store really went: orgd re-creates its own
  // streams as soon as it reconnects, maybe before this test looks, so they cannot show it.
  {
    auto before = connect_client(server.url());
    jsCtx* js = nullptr;
    ASSERT_EQ(natsConnection_JetStream(&js, before.get(), nullptr), NATS_OK);
    jsStreamConfig marker;
    jsStreamConfig_Init(&marker);
    marker.Name = "STORE_LOSS_MARKER";
    const char* subjects[] = {"store.loss.marker"};
    marker.Subjects = subjects;
    marker.SubjectsLen = 1;
    jsStreamInfo* info = nullptr;
    ASSERT_EQ(js_AddStream(&info, js, &marker, nullptr, nullptr), NATS_OK);
    jsStreamInfo_Destroy(info);
    jsCtx_Destroy(js);
  }

  server.stop();
  ASSERT_TRUE(wait_until([&] { return !d->ready(); }, 10s)) << "orgd did not see the outage";
  fs::remove_all(fs::path(server.store_dir()) / "jetstream");
  server.start();
  auto client = connect_client(server.url());
  ASSERT_FALSE(stream_exists(client.get(), "STORE_LOSS_MARKER")) << "the store was not emptied";

  ASSERT_TRUE(wait_until([&] { return d->ready(); }, 15s)) << "orgd not ready after the loss";
  for (const char* stream : {kCmdStream, kEventsStream, kHealthStream, kDlqStream,
                             "KV_orgd_deploys", "KV_orgd_locks", "KV_orgd_leases"}) {
    EXPECT_TRUE(stream_exists(client.get(), stream)) << stream << " was not re-created";
  }
  EXPECT_TRUE(consumer_exists(client.get(), kCmdStream, "orgd_cmd_deploy"))
      << "the durable command consumer was not re-created";

  // A command published now is consumed and its deploy runs.
  Collector finished(client.get(), "org.acme.events.deploy.*.finished");
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  const std::string body = R"({"repos":["api"],"env":"dev","requestId":"after-store-loss"})";
  jsPubAck* ack = nullptr;
  ASSERT_EQ(js_Publish(&ack, js, "org.acme.cmd.deploy", body.data(),
                       static_cast<int>(body.size()), nullptr, nullptr),
            NATS_OK);
  jsPubAck_Destroy(ack);
  jsCtx_Destroy(js);
  EXPECT_TRUE(wait_until([&] { return finished.size() >= 1; }, 20s))
      << "the command on org.acme.cmd.deploy was never consumed";
  EXPECT_TRUE(wait_until([&] { return executions(data, "api") == 1; }, 5s));
  // The API answers again too (core subscriptions).
  EXPECT_TRUE(testing::request(client.get(), "org.acme.api.status", "", 3000ms).has_value());
  d->stop();
}

// A6: a refused credential is said at warning level and in /readyz, and orgd keeps trying
// until a server takes it.
TEST(ReconnectTest, ARefusedCredentialIsReportedAndRetriedUntilAServerTakesIt) {
  NatsServerOptions auth;
  auth.wait_for_jetstream = false;  // anonymous probes are refused
  auth.extra_config = "authorization { token: \"right-token\" }\n";
  auto server = std::make_unique<NatsServer>(auth);
  const auto port = server->port();
  TempDir data("orgd-reconnect-data");
  CapturedWarnings warnings("bus");
  auto d = make_daemon(config_yaml(server->url(), data.str(), "  token: wrong-token-canary\n"));
  d->start();

  std::optional<nlohmann::json> status;
  ASSERT_TRUE(wait_until(
      [&] {
        status = readyz(*d);
        return status && status->value("nats_connect_attempts", 0) >= 3;
      },
      20s))
      << "orgd does not keep trying: " << (status ? status->dump() : "no /readyz");
  EXPECT_EQ(status->value("http_status", 0), 503);
  EXPECT_FALSE(status->value("ready", true));
  EXPECT_NE(status->value("reason", "").find("uthorization"), std::string::npos)
      << status->dump();
  EXPECT_TRUE(warnings.contains("uthorization")) << warnings.text();
  EXPECT_FALSE(warnings.contains("wrong-token-canary")) << warnings.text();
  EXPECT_EQ(status->dump().find("wrong-token-canary"), std::string::npos);

  // A server that takes the connection appears where the refusing one was.
  server.reset();
  NatsServerOptions open;
  open.port = port;
  server = std::make_unique<NatsServer>(open);
  EXPECT_TRUE(wait_until([&] { return d->ready(); }, 20s))
      << "orgd never connected to the server that takes it";
  d->stop();
}

// A6: a TLS failure says so in /readyz and in a warning, and orgd keeps trying: orgd without
// TLS settings against a server that requires TLS, and orgd trusting another CA than the one
// that signed the server's certificate.
TEST(ReconnectTest, ATlsFailureIsReportedAsTlsAndRetried) {
  testing::TestPki pki;
  ASSERT_TRUE(pki.make()) << "openssl could not make the test certificates";
  testing::TestPki other;
  ASSERT_TRUE(other.make()) << "openssl could not make the test certificates";
  NatsServerOptions tls;
  tls.wait_for_jetstream = false;  // the fixture's plain probe is refused
  tls.extra_config = pki.server_tls_block(/*verify=*/false);
  NatsServer server(tls);
  const std::string url = "nats://127.0.0.1:" + std::to_string(server.port());
  struct Case {
    const char* name;
    std::string nats_extra;
  };
  const Case cases[] = {
      {"no TLS settings", ""},
      {"another CA", "  tls:\n    ca_file: " + other.path("ca.pem") + "\n"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir data("orgd-reconnect-data");
    CapturedWarnings warnings("bus");
    auto d = make_daemon(config_yaml(url, data.str(), c.nats_extra));
    d->start();
    std::optional<nlohmann::json> status;
    EXPECT_TRUE(wait_until(
        [&] {
          status = readyz(*d);
          return status && status->value("nats_connect_attempts", 0) >= 2 &&
                 status->value("reason", "").rfind("TLS", 0) != std::string::npos;
        },
        20s))
        << (status ? status->dump() : "no /readyz");
    EXPECT_FALSE(status && status->value("ready", true));
    EXPECT_TRUE(warnings.contains("TLS")) << warnings.text();
    d->stop();
  }
  // With the right CA it connects (the server's certificate names 127.0.0.1).
  TempDir data("orgd-reconnect-data");
  auto d = make_daemon(
      config_yaml(url, data.str(), "  tls:\n    ca_file: " + pki.path("ca.pem") + "\n"));
  d->start();
  EXPECT_TRUE(wait_until([&] { return d->ready(); }, 20s)) << readyz(*d).value_or("{}").dump();
  d->stop();
}

// A6 and A5 together: a connected orgd whose server comes back refusing it (nats.c then gives
// the connection up) and later accepting it again, with an empty store: orgd makes a new
// connection and puts everything back on it: streams, buckets, the command consumer and the
// core subscriptions.
TEST(ReconnectTest, AConnectionGivenUpAfterARefusalIsMadeAgainWithEverythingOnIt) {
  auto server = std::make_unique<NatsServer>();
  const auto port = server->port();
  TempDir data("orgd-reconnect-data");
  auto d = make_daemon(config_yaml(server->url(), data.str()));
  d->start();
  ASSERT_TRUE(wait_until([&] { return d->ready(); }, 15s)) << "orgd never became ready";
  {
    // A deploy on the first connection: orgd's acknowledged publishers make their JetStream
    // context there, and must not keep using it once the connection is replaced.
    auto first = connect_client(server->url());
    Collector finished(first.get(), "org.acme.events.deploy.*.finished");
    const std::string body = R"({"repos":["api"],"env":"dev","requestId":"before-refusal"})";
    ASSERT_TRUE(testing::request(first.get(), "org.acme.api.deploy", body, 5000ms).has_value());
    ASSERT_TRUE(wait_until([&] { return finished.size() >= 1; }, 20s))
        << "no finished event on the first connection";
  }

  server.reset();
  NatsServerOptions refusing;
  refusing.port = port;
  refusing.wait_for_jetstream = false;
  refusing.extra_config = "authorization { token: \"only-for-others\" }\n";
  server = std::make_unique<NatsServer>(refusing);
  std::optional<nlohmann::json> status;
  ASSERT_TRUE(wait_until(
      [&] {
        status = readyz(*d);
        // "closed": nats.c gave the connection up, so the next one is a new connection.
        return status && status->value("nats", "") == "closed" &&
               status->value("reason", "").find("uthorization") != std::string::npos;
      },
      20s))
      << (status ? status->dump() : "no /readyz");

  server.reset();
  NatsServerOptions open;
  open.port = port;
  server = std::make_unique<NatsServer>(open);
  ASSERT_TRUE(wait_until([&] { return d->ready(); }, 20s)) << "orgd never came back";
  auto client = connect_client(server->url());
  EXPECT_TRUE(stream_exists(client.get(), "KV_orgd_deploys"));
  EXPECT_TRUE(consumer_exists(client.get(), kCmdStream, "orgd_cmd_deploy"));
  EXPECT_TRUE(testing::request(client.get(), "org.acme.api.status", "", 3000ms).has_value())
      << "the API subscriptions were not made on the new connection";
  Collector finished(client.get(), "org.acme.events.deploy.*.finished");
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  const std::string body = R"({"repos":["api"],"env":"dev","requestId":"after-refusal"})";
  jsPubAck* ack = nullptr;
  ASSERT_EQ(js_Publish(&ack, js, "org.acme.cmd.deploy", body.data(),
                       static_cast<int>(body.size()), nullptr, nullptr),
            NATS_OK);
  jsPubAck_Destroy(ack);
  jsCtx_Destroy(js);
  EXPECT_TRUE(wait_until([&] { return finished.size() >= 1; }, 20s))
      << "the command was not consumed, or its events not published, on the new connection";
  d->stop();
}

// A6: after an outage long enough for the reconnect backoff to grow, orgd is ready again soon
// after NATS returns, not after the backoff's full delay.
TEST(ReconnectTest, ReadySoonAfterALongOutageEnds) {
  NatsServer server;
  TempDir data("orgd-reconnect-data");
  auto d = make_daemon(config_yaml(server.url(), data.str()));
  d->start();
  ASSERT_TRUE(wait_until([&] { return d->ready(); }, 15s)) << "orgd never became ready";
  server.stop();
  ASSERT_TRUE(wait_until([&] { return !d->ready(); }, 10s));
  // The outage is the fault injected: with reconnect_wait 100ms, a backoff that doubles without
  // a low cap has grown past 6 s by now, so orgd would try again only seconds after the return.
  std::this_thread::sleep_for(15s);
  server.start();
  const auto returned = SteadyClock::now();
  // Generous for a loaded machine, yet shorter than the gaps an uncapped backoff leaves.
  EXPECT_TRUE(wait_until([&] { return d->ready(); }, 5s))
      << "orgd not ready within 5 s of NATS returning";
  std::cout << "[ timing   ] ready "
            << std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() -
                                                                     returned)
                   .count()
            << " ms after NATS returned\n";
  d->stop();
}

// A8: stopping while NATS is gone is bounded: 5 s is the contract (DESIGN: SIGTERM exits 0
// within 5 s, NATS up or not).
TEST(ReconnectTest, StopWithoutNatsEndsWithinFiveSeconds) {
  NatsServer server;
  TempDir data("orgd-reconnect-data");
  auto d = make_daemon(config_yaml(server.url(), data.str()));
  d->start();
  ASSERT_TRUE(wait_until([&] { return d->ready(); }, 15s)) << "orgd never became ready";
  server.stop();
  ASSERT_TRUE(wait_until([&] { return !d->ready(); }, 10s));
  const auto began = SteadyClock::now();
  d->stop();
  const auto took = SteadyClock::now() - began;
  EXPECT_LT(took, 5s) << "stop() took "
                      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                      << " ms without NATS";
}

// The same while a deploy runs: its runner and the scheduler are in KV calls that would each
// wait for their timeout.
TEST(ReconnectTest, StopWithoutNatsDuringADeployEndsWithinFiveSeconds) {
  NatsServer server;
  TempDir data("orgd-reconnect-data");
  std::string yaml = config_yaml(server.url(), data.str());
  yaml.replace(yaml.find("duration: 50ms"), std::string("duration: 50ms").size(),
               "duration: 30s");
  auto d = make_daemon(yaml);
  d->start();
  ASSERT_TRUE(wait_until([&] { return d->ready(); }, 15s)) << "orgd never became ready";
  auto client = connect_client(server.url());
  auto accepted = testing::request(client.get(), "org.acme.api.deploy",
                                   R"({"repos":["api"],"env":"dev"})", 5000ms);
  ASSERT_TRUE(accepted.has_value());
  ASSERT_TRUE(wait_until([&] { return d->orchestrator()->running() == 1; }, 5s)) << *accepted;
  client.reset();
  server.stop();
  ASSERT_TRUE(wait_until([&] { return !d->ready(); }, 10s));
  const auto began = SteadyClock::now();
  d->stop();
  const auto took = SteadyClock::now() - began;
  EXPECT_LT(took, 5s) << "stop() took "
                      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                      << " ms without NATS during a deploy";
}

// ... and before NATS was ever reached, when /readyz says it is unreachable.
TEST(ReconnectTest, StopBeforeNatsWasEverReachedEndsWithinFiveSeconds) {
  NatsServer server;
  server.stop();
  TempDir data("orgd-reconnect-data");
  auto d = make_daemon(config_yaml(server.url(), data.str()));
  d->start();
  ASSERT_FALSE(d->ready());
  // /readyz says why.
  std::optional<nlohmann::json> status;
  EXPECT_TRUE(wait_until(
      [&] {
        status = readyz(*d);
        return status && status->value("reason", "").find("unreachable") != std::string::npos;
      },
      5s))
      << (status ? status->dump() : "no /readyz");
  const auto began = SteadyClock::now();
  d->stop();
  const auto took = SteadyClock::now() - began;
  EXPECT_LT(took, 5s) << "stop() took "
                      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                      << " ms without NATS";
}

}  // namespace
}  // namespace orgd
