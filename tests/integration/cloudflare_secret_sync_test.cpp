// Worker secrets synced by the secrets engine (SecretSync, orgd_sync in a real nats-server's
// JetStream KV) through the cloudflare provider's secret target and orgd's real HTTPS client,
// against the fake Cloudflare API: while a gradual deploy is between its steps Cloudflare
// refuses secret edits, the sync reports them behind with a retryable error that says why and
// pushes nothing; once the Worker's latest version is fully deployed the next sync pushes them
// (each put a new version deployed at 100%), and a sync with nothing changed writes nothing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <memory>
#include <string>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/config.hpp"
#include "daemon/net/https_client.hpp"
#include "daemon/plugin/registry.hpp"
#include "daemon/secrets/secret_sync.hpp"
#include "tests/fakes/fake_cloudflare.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd::secrets {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using orgd::testing::FakeCloudflareServer;

constexpr const char* kToken = "cf-sync-test-token";
constexpr const char* kPut = "PUT /accounts/{account_id}/workers/scripts/{script_name}/secrets";

std::string canary(int i) { return "cf-sync-canary-" + std::to_string(i); }

class CloudflareSecretSyncTest : public ::testing::Test {
 protected:
  CloudflareSecretSyncTest() {
    fake_.cloudflare().add_token(kToken);
    fake_.cloudflare().add_worker("acme-web");
    EXPECT_EQ(natsConnection_JetStream(&js_, client_.get(), nullptr), NATS_OK);
    auto bucket = KvBucket::open(js_, {"orgd_sync", "secret sync test", Duration{0}, 1, 1});
    EXPECT_TRUE(bucket) << bucket.error().message;
    bucket_ = std::move(bucket.value());
  }
  ~CloudflareSecretSyncTest() override { jsCtx_Destroy(js_); }

  std::shared_ptr<SecretTarget> target() {
    const std::string yaml = "org: acme\nproviders:\n  cf: {type: cloudflare, api_url: '" +
                             fake_.base_url() + "', token_env: CF_TOKEN, account_id: " +
                             fake_.cloudflare().account_id() + "}\n" +
                             "repos:\n  web:\n    secret_targets:\n"
                             "      - {provider: cf, script: acme-web}\n";
    config_ = load_config_string(yaml, "orgd.yaml", env_);
    ProviderEnvironment provided;
    provided.environment = env_;
    provided.data_dir = dir_.str();
    provided.http = make_https_transport_factory(metrics_, Environment{});
    sets_.push_back(ProviderSet::build(config_, ProviderRegistry{}, provided));
    return sets_.back()->secret_targets("web").at(0);
  }

  SyncTarget desired(std::shared_ptr<SecretTarget> target, int count) {
    std::vector<DesiredSecret> want;
    for (int i = 0; i < count; ++i) {
      want.push_back({"SECRET_" + std::to_string(i),
                      std::make_shared<const Secret>(Secret::from(canary(i))), 1, "web"});
    }
    return SyncTarget::make("cf", std::move(target), false, std::move(want));
  }

  std::size_t writes() {
    std::size_t n = 0;
    for (const auto& call : fake_.cloudflare().calls()) n += call.method != "GET" ? 1 : 0;
    return n;
  }

  FakeCloudflareServer fake_;
  orgd::testing::NatsServer server_;
  orgd::testing::NatsConnectionPtr client_ = orgd::testing::connect_client(server_.url());
  jsCtx* js_ = nullptr;
  std::unique_ptr<KvBucket> bucket_;
  orgd::testing::TempDir dir_{"orgd-cf-sync"};
  Environment env_{{{"CF_TOKEN", kToken}}};
  MetricsRegistry metrics_;
  Config config_;
  std::vector<std::shared_ptr<ProviderSet>> sets_;
};

TEST_F(CloudflareSecretSyncTest, ARefusalDuringAGradualDeployIsBehindThenTheNextSyncPushes) {
  auto t = target();
  EXPECT_EQ(t->describe(), "cloudflare Worker acme-web");
  SecretSync sync{*bucket_, Secret::from(std::string(32, 'd')), SyncOptions{}};
  const auto want = desired(t, 3);

  // A gradual deploy between its steps: the latest version serves 10%.
  const std::string before = fake_.cloudflare().worker("acme-web")->versions.back().id;
  const std::string latest = fake_.cloudflare().add_version("acme-web");
  fake_.cloudflare().add_deployment("acme-web", {{latest, 10}, {before, 90}});

  auto refused = sync.sync({want});
  ASSERT_EQ(refused.targets.size(), 1u);
  const auto& r = refused.targets[0];
  ASSERT_FALSE(r.error) << r.error->message;
  EXPECT_FALSE(refused.in_sync());
  EXPECT_EQ(r.pushed, 0u);
  ASSERT_FALSE(r.failures.empty());
  EXPECT_EQ(r.failures[0].retry, Retry::retryable);
  EXPECT_THAT(r.failures[0].message, HasSubstr("latest version is not deployed (a gradual deploy in progress)"));
  EXPECT_EQ(r.behind.size(), 3u);
  for (const auto& f : r.failures) EXPECT_EQ(f.message.find("canary"), std::string::npos);
  EXPECT_TRUE(fake_.cloudflare().secrets("acme-web").empty());

  // The deploy finished: all traffic on the latest version.
  fake_.cloudflare().add_deployment("acme-web", {{latest, 100}});
  fake_.cloudflare().clear_calls();
  const std::size_t versions_before = fake_.cloudflare().worker("acme-web")->versions.size();
  auto pushed = sync.sync({want});
  EXPECT_TRUE(pushed.in_sync());
  EXPECT_EQ(pushed.targets[0].pushed, 3u);
  EXPECT_EQ(fake_.cloudflare().count(kPut), 3u);
  const auto secrets = fake_.cloudflare().secrets("acme-web");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(secrets.at("SECRET_" + std::to_string(i)), canary(i));
  const auto worker = fake_.cloudflare().worker("acme-web");
  EXPECT_EQ(worker->versions.size(), versions_before + 3) << "each secret change is a version";
  EXPECT_EQ(worker->deployments.back().versions.at(0).first, worker->versions.back().id)
      << "deployed at 100%";
  for (const auto& call : fake_.cloudflare().calls()) {
    if (call.route != kPut) EXPECT_EQ(call.body.find("canary"), std::string::npos) << call.path;
  }

  fake_.cloudflare().clear_calls();
  auto quiet = sync.sync({want});
  EXPECT_TRUE(quiet.in_sync());
  EXPECT_EQ(quiet.targets[0].unchanged, 3u);
  EXPECT_EQ(writes(), 0u);
}

}  // namespace
}  // namespace orgd::secrets
