// P.api.providers against a real nats-server: every provider of the config with its
// capabilities, and what its health probe found (ok, rate limit, circuit; a failing probe's
// error), answered from the background probes, which run again at their interval.
#include <gtest/gtest.h>
#include <google/protobuf/util/json_util.h>
#include <nats/nats.h>

#include <atomic>
#include <memory>
#include <string>

#include "daemon/app/daemon.hpp"
#include "orgd/v1/providers.pb.h"
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

// A provider whose probe says what the test sets: a cloud API with a rate limit and a client.
class ProbedProvider final : public Provider, public HealthProbe {
 public:
  ProbedProvider(std::string name, std::shared_ptr<std::atomic<int>> calls,
                 std::shared_ptr<std::atomic<bool>> healthy)
      : Provider(std::move(name), "remote"), calls_(std::move(calls)), healthy_(std::move(healthy)) {}
  Capabilities capabilities() const override {
    return {.secret_target = true, .health_probe = true};
  }
  HealthProbe* health_probe() override { return this; }
  Result<ProbeResult> probe() override {
    ++*calls_;
    if (!healthy_->load()) return unavailable("GET /rate_limit: 401 Bad credentials");
    ProbeResult r;
    r.ok = true;
    r.detail = "token of acme-bot";
    r.rate_limit_remaining = 4990;
    r.rate_limit_limit = 5000;
    r.circuit = "closed";
    return r;
  }

 private:
  std::shared_ptr<std::atomic<int>> calls_;
  std::shared_ptr<std::atomic<bool>> healthy_;
};

std::optional<v1::ProviderList> providers(natsConnection* client) {
  auto reply = testing::request(client, "org.acme.api.providers", "", 3000ms);
  if (!reply) return std::nullopt;
  v1::ProviderList list;
  if (!google::protobuf::util::JsonStringToMessage(*reply, &list).ok()) return std::nullopt;
  return list;
}

const v1::ProviderStatus* find(const v1::ProviderList& list, const std::string& name) {
  for (const auto& p : list.providers()) {
    if (p.name() == name) return &p;
  }
  return nullptr;
}

// An orgd with providers files (local), shell (exec) and cloud (a ProbedProvider counting its
// probes in `calls`, healthy while `healthy` says so), probing every `interval`.
std::unique_ptr<Daemon> start_daemon(const NatsServer& server, const TempDir& data,
                                     std::chrono::milliseconds interval,
                                     std::shared_ptr<std::atomic<int>> calls,
                                     std::shared_ptr<std::atomic<bool>> healthy) {
  const std::string yaml =
      "org: acme\n"
      "nats:\n  urls: [" + server.url() + "]\n  data_dir: " + data.str() + "\n"
      "http:\n  enabled: false\n"
      "log:\n  level: warn\n"
      "providers:\n  files: {type: local}\n  shell: {type: exec}\n  cloud: {type: remote}\n"
      "repos:\n  api:\n    deploy:\n      dev: {provider: files}\n";
  DaemonOptions options;
  options.provider_probe_interval = interval;
  options.provider_factories["remote"] = [calls, healthy](const ProviderConfig& config,
                                                          const ProviderServices&,
                                                          const std::string&) {
    return std::make_unique<ProbedProvider>(config.name, calls, healthy);
  };
  auto d = std::make_unique<Daemon>(load_config_string(yaml, "test.yaml", Environment()), options,
                                    Environment());
  d->start();
  EXPECT_TRUE(wait_until([&] { return d->ready(); }, 15s));
  return d;
}

TEST(ProvidersApiTest, EveryProviderWithItsCapabilitiesAndItsLastProbe) {
  NatsServer server;
  TempDir data("orgd-providers-data");
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto healthy = std::make_shared<std::atomic<bool>>(true);
  auto daemon = start_daemon(server, data, 200ms, calls, healthy);
  ASSERT_TRUE(daemon->ready());
  Daemon& d = *daemon;
  auto client = connect_client(server.url());

  std::optional<v1::ProviderList> list;
  ASSERT_TRUE(wait_until(
      [&] {
        list = providers(client.get());
        const auto* cloud = list ? find(*list, "cloud") : nullptr;
        return cloud != nullptr && cloud->probed();
      },
      10s));
  ASSERT_EQ(list->providers_size(), 3);
  const auto* files = find(*list, "files");
  ASSERT_NE(files, nullptr);
  EXPECT_EQ(files->type(), "local");
  EXPECT_EQ(std::vector<std::string>(files->capabilities().begin(), files->capabilities().end()),
            std::vector<std::string>{"deploy_target"});
  EXPECT_FALSE(files->probed()) << "local has no probe";
  const auto* cloud = find(*list, "cloud");
  EXPECT_TRUE(cloud->ok());
  EXPECT_EQ(cloud->detail(), "token of acme-bot");
  EXPECT_EQ(cloud->rate_limit_remaining(), 4990);
  EXPECT_EQ(cloud->rate_limit_limit(), 5000);
  EXPECT_EQ(cloud->circuit(), "closed");
  EXPECT_EQ(std::vector<std::string>(cloud->capabilities().begin(), cloud->capabilities().end()),
            (std::vector<std::string>{"secret_target", "health_probe"}));

  // A request is answered from memory; the probes run at their interval and say what changed.
  healthy->store(false);
  ASSERT_TRUE(wait_until(
      [&] {
        list = providers(client.get());
        const auto* c = list ? find(*list, "cloud") : nullptr;
        return c != nullptr && !c->ok();
      },
      10s));
  EXPECT_EQ(find(*list, "cloud")->last_error(), "GET /rate_limit: 401 Bad credentials");
  EXPECT_GE(calls->load(), 2);
  d.stop();
}

// `orgctl secrets test` asks for a probe now: the answer is a fresh probe, not the last one, and
// requests closer together than 5 s share one.
TEST(ProvidersApiTest, AProbeNowRequestProbesAtOnceAtMostOnceInFiveSeconds) {
  NatsServer server;
  TempDir data("orgd-providers-data");
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto healthy = std::make_shared<std::atomic<bool>>(true);
  // Only the start-up probe runs by itself.
  auto daemon = start_daemon(server, data, std::chrono::hours{1}, calls, healthy);
  ASSERT_TRUE(daemon->ready());
  Daemon& d = *daemon;
  auto client = connect_client(server.url());
  ASSERT_TRUE(wait_until([&] { return calls->load() >= 1; }, 10s)) << "the start-up probe";
  const int after_start = calls->load();
  healthy->store(false);
  auto plain = providers(client.get());
  ASSERT_TRUE(plain.has_value());
  EXPECT_TRUE(find(*plain, "cloud")->ok()) << "without probeNow: the last probe";
  EXPECT_EQ(calls->load(), after_start);

  auto reply = testing::request(client.get(), "org.acme.api.providers", R"({"probeNow":true})",
                                3000ms);
  ASSERT_TRUE(reply.has_value());
  v1::ProviderList fresh;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*reply, &fresh).ok());
  EXPECT_FALSE(find(fresh, "cloud")->ok()) << "probeNow: probed for this answer";
  EXPECT_EQ(calls->load(), after_start + 1);
  ASSERT_TRUE(testing::request(client.get(), "org.acme.api.providers", R"({"probeNow":true})",
                               3000ms)
                  .has_value());
  EXPECT_EQ(calls->load(), after_start + 1) << "a second probeNow within 5 s probes nothing";
  d.stop();
}

// A provider served by another process asks it over NATS through the requester it is given:
// unavailable before orgd connects and after it stops, the reply in between.
TEST(ProvidersApiTest, TheNatsRequesterProvidersAreGivenAsksOverOrgdsConnection) {
  NatsServer server;
  TempDir data("orgd-providers-data");
  const std::string yaml =
      "org: acme\n"
      "nats:\n  urls: [" + server.url() + "]\n  data_dir: " + data.str() + "\n"
      "http:\n  enabled: false\n"
      "log:\n  level: warn\n"
      "providers:\n  plugin: {type: remote}\n";
  auto requester = std::make_shared<std::shared_ptr<NatsRequester>>();
  DaemonOptions options;
  options.provider_factories["remote"] = [requester](const ProviderConfig& config,
                                                     const ProviderServices& services,
                                                     const std::string&) {
    *requester = services.nats;
    return std::make_unique<ProbedProvider>(config.name, std::make_shared<std::atomic<int>>(0),
                                            std::make_shared<std::atomic<bool>>(true));
  };
  Daemon d(load_config_string(yaml, "test.yaml", Environment()), options, Environment());
  ASSERT_TRUE(*requester);
  auto before = (*requester)->request("org.acme.plugin.plugin.describe", "{}", 500ms);
  ASSERT_FALSE(before);
  EXPECT_EQ(before.error().code, ErrorCode::unavailable);

  auto client = connect_client(server.url());
  natsSubscription* sub = nullptr;
  ASSERT_EQ(natsConnection_Subscribe(
                &sub, client.get(), "org.acme.plugin.plugin.describe",
                [](natsConnection* nc, natsSubscription*, natsMsg* msg, void*) {
                  const std::string answer = R"({"name":"plugin"})";
                  natsConnection_Publish(nc, natsMsg_GetReply(msg), answer.data(),
                                         static_cast<int>(answer.size()));
                  natsMsg_Destroy(msg);
                },
                nullptr),
            NATS_OK);
  ASSERT_EQ(natsConnection_Flush(client.get()), NATS_OK);
  d.start();
  ASSERT_TRUE(wait_until([&] { return d.ready(); }, 15s));
  auto answered = (*requester)->request("org.acme.plugin.plugin.describe", "{}", 3000ms);
  ASSERT_TRUE(answered) << answered.error().message;
  EXPECT_EQ(answered.value(), R"({"name":"plugin"})");
  d.stop();
  EXPECT_EQ((*requester)->request("org.acme.plugin.plugin.describe", "{}", 500ms).error().code,
            ErrorCode::unavailable);
  natsSubscription_Destroy(sub);
}

}  // namespace
}  // namespace orgd
