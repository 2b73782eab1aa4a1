// The cloudflare provider's targets against the fake Cloudflare API over loopback HTTP, with
// orgd's real HTTPS client: a Workers deploy through its steps, a start tried again and a crash
// between upload and deployment recovered without a second upload, rollback (with force across
// a changed secret), Containers rollouts (completed, reverted, seen through the application),
// the token probe for user and account tokens, success:false at HTTP 200, and the rate limit's
// 429 waited for or returned as rate_limited without more requests.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/net/https_client.hpp"
#include "daemon/plugin/provider_services.hpp"
#include "plugins/cloudflare/cloudflare_provider.hpp"
#include "plugins/cloudflare/worker_secrets.hpp"
#include "tests/fakes/fake_cloudflare.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_pki.hpp"

namespace orgd::cloudflare {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using orgd::testing::FakeCloudflare;
using orgd::testing::FakeCloudflareServer;

constexpr const char* kToken = "cf-provider-test-token-canary";
constexpr const char* kUpload = "POST /accounts/{account_id}/workers/scripts/{script_name}/versions";
constexpr const char* kDeploy =
    "POST /accounts/{account_id}/workers/scripts/{script_name}/deployments";

class CloudflareProviderTest : public ::testing::Test {
 protected:
  CloudflareProviderTest() {
    fake_.cloudflare().add_token(kToken);
    fake_.cloudflare().add_worker("acme-web", {{"API_KEY", "first"}});
    fake_.cloudflare().add_application("app-1", "registry.example/web:v1");
    std::ofstream(dir_ / "index.js") << "export default { fetch() { return new Response('v2') } }";
    std::ofstream(dir_ / "index.js.map") << "{}";
  }

  // The provider from a config whose repos: block is `repos`, on a client that tries once and
  // waits on virtual time (a rate limit's wait moves both clocks on instead of sleeping).
  void build(const std::string& repos, const std::string& token = kToken, int max_attempts = 1) {
    const std::string yaml = "org: acme\nproviders:\n  cf: {type: cloudflare, api_url: '" +
                             fake_.base_url() + "', token_env: CF_TOKEN, account_id: " +
                             fake_.cloudflare().account_id() + "}\nrepos:\n" + repos;
    env_ = Environment{{{"CF_TOKEN", token}}};
    config_ = load_config_string(yaml, "orgd.yaml", env_);
    ProviderEnvironment provided;
    provided.environment = env_;
    provided.data_dir = dir_.str();
    auto offset = offset_;
    provided.http = [offset, max_attempts](
                        const HttpClientOptions& given) -> Result<std::shared_ptr<HttpTransport>> {
      HttpClientOptions options = given;
      options.max_attempts = max_attempts;
      HttpsClientHooks hooks;
      hooks.sleep = [offset](std::chrono::milliseconds d) { *offset += d.count(); };
      hooks.steady_now = [offset] {
        return std::chrono::steady_clock::now() + std::chrono::milliseconds{offset->load()};
      };
      hooks.system_now = [offset] {
        return std::chrono::system_clock::now() + std::chrono::milliseconds{offset->load()};
      };
      auto client = HttpsClient::create(options, nullptr, hooks);
      if (!client) return client.error();
      return std::shared_ptr<HttpTransport>(client.value());
    };
    provider_ = make_cloudflare_provider(config_.providers.at("cf"),
                                         services_for(config_.providers.at("cf"), provided),
                                         "orgd.yaml");
  }
  std::unique_ptr<DeployTarget> target(const std::string& settings, int max_attempts = 1) {
    build("  web:\n    deploy:\n      prod: {provider: cf, " + settings + "}\n", kToken, max_attempts);
    return provider_->make_deploy_target(config_.repos.at("web").deploy.at("prod"), "orgd.yaml");
  }
  std::string workers(const std::string& steps) {
    return "script: acme-web, dir: '" + dir_.str() + "', compatibility_date: 2026-09-01, steps: " + steps;
  }
  DeployContext context(const std::string& id = "d-1") {
    DeployContext c;
    c.repo = "web";
    c.env = "prod";
    c.ref = "v2.0.0";
    c.deploy_id = id;
    c.deadline = std::chrono::steady_clock::now() + 30s;
    return c;
  }
  LogSink sink() {
    return [this](std::string_view line) { log_.emplace_back(line); };
  }
  orgd::testing::CfWorker worker() { return *fake_.cloudflare().worker("acme-web"); }
  static const orgd::testing::CfDeployment& live(const orgd::testing::CfWorker& w) {
    return w.deployments.back();
  }
  std::size_t uploads() { return fake_.cloudflare().count(kUpload); }

  std::shared_ptr<std::atomic<long long>> offset_ = std::make_shared<std::atomic<long long>>(0);
  orgd::testing::TempDir dir_{"orgd-cf-provider"};
  FakeCloudflareServer fake_{FakeCloudflare::Options{[offset = offset_] {
    return std::chrono::system_clock::now() + std::chrono::milliseconds{offset->load()};
  }}};
  Environment env_;
  Config config_;
  std::unique_ptr<Provider> provider_;
  std::vector<std::string> log_;
};

using Versions = std::vector<std::pair<std::string, double>>;

TEST_F(CloudflareProviderTest, AWorkersDeployGoesThroughItsStepsAndIsUploadedOnce) {
  auto t = target(workers("[10, 50, 100]"));
  const std::string before = worker().versions.front().id;
  auto started = t->start(context(), sink());
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().status, DeployStatus::phase_done);
  EXPECT_EQ(started.value().phase, 1);
  const std::string uploaded = worker().versions.back().id;
  EXPECT_EQ(live(worker()).versions, (Versions{{uploaded, 10}, {before, 90}}));

  // What was uploaded: metadata first with the annotations, then the modules.
  const auto version = worker().versions.back();
  EXPECT_EQ(version.main_module, "index.js");
  EXPECT_EQ(version.compatibility_date, "2026-09-01");
  EXPECT_EQ(version.annotations["workers/message"], "orgd deploy d-1 attempt 1: web v2.0.0 to prod");
  EXPECT_EQ(version.annotations["workers/tag"], "v2.0.0");
  EXPECT_EQ(version.secrets.at("API_KEY"), "first") << "keep_bindings kept the Worker's secrets";
  ASSERT_EQ(version.modules.size(), 2u);
  EXPECT_EQ(version.modules[0].name, "index.js");
  EXPECT_EQ(version.modules[0].content_type, "application/javascript+module");
  EXPECT_EQ(version.modules[1].content_type, "application/source-map");

  DeployContext c = context();
  c.handle = started.value().handle;
  auto polled = t->poll(c);
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::phase_done);
  EXPECT_EQ(polled.value().phase, 1);

  c.phases_passed = 1;
  auto second = t->advance(c);
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second.value().status, DeployStatus::phase_done);
  EXPECT_EQ(second.value().phase, 2);
  EXPECT_EQ(live(worker()).versions, (Versions{{uploaded, 50}, {before, 50}}));

  c.handle = second.value().handle;
  c.phases_passed = 2;
  auto last = t->advance(c);
  ASSERT_TRUE(last) << last.error().message;
  EXPECT_EQ(last.value().status, DeployStatus::succeeded);
  EXPECT_EQ(live(worker()).versions, (Versions{{uploaded, 100}}));
  EXPECT_EQ(uploads(), 1u);
  // Calls per deploy: the start looks for an earlier upload and the live deployment, uploads,
  // deploys; the poll reads the live deployment; each advance deploys.
  EXPECT_EQ(dynamic_cast<CloudflareProvider&>(*provider_).rest()->calls(), 7u);
  EXPECT_EQ(fake_.cloudflare().calls().size(), 7u);
  for (const auto& call : fake_.cloudflare().calls()) {
    EXPECT_EQ(call.header("authorization"), std::string("Bearer ") + kToken);
    EXPECT_EQ(call.body.find(kToken), std::string::npos);
  }
}

TEST_F(CloudflareProviderTest, OneStepOf100DeploysAtOnce) {
  auto t = target(workers("[100]"));
  auto started = t->start(context(), sink());
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().status, DeployStatus::succeeded);
  EXPECT_EQ(live(worker()).versions, (Versions{{worker().versions.back().id, 100}}));
}

TEST_F(CloudflareProviderTest, ACrashBetweenUploadAndDeploymentIsRecoveredWithoutASecondUpload) {
  auto t = target(workers("[10, 100]"));
  // The deployment's answer is lost (success:false at 200): the version is uploaded, not deployed.
  fake_.cloudflare().fail_with_success_false(1, kDeploy);
  auto failed = t->start(context(), sink());
  ASSERT_FALSE(failed);
  EXPECT_THAT(failed.error().message, HasSubstr("Cloudflare answered 200 with success: false: [10013]"));
  EXPECT_EQ(failed.error().retry, Retry::retryable);
  EXPECT_EQ(uploads(), 1u);

  auto recovered = t->recover(context());
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(recovered.value().status, DeployStatus::phase_done);
  EXPECT_EQ(uploads(), 1u) << "the attempt's upload was found by its annotation";
  EXPECT_EQ(live(worker()).versions.at(0), (std::pair<std::string, double>{worker().versions.back().id, 10}));

  // A start tried again after that finds the deploy where it is.
  auto again = t->start(context(), sink());
  ASSERT_TRUE(again);
  EXPECT_EQ(again.value().status, DeployStatus::phase_done);
  EXPECT_EQ(uploads(), 1u);

  // Another attempt knows nothing of it.
  DeployContext other = context();
  other.attempt = 2;
  auto none = t->recover(other);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::not_found);
}

TEST_F(CloudflareProviderTest, AGateFailingAtTheFirstStepRollsBackToThePreviousVersion) {
  auto t = target(workers("[10, 100]"));
  const std::string before = worker().versions.front().id;
  auto started = t->start(context(), sink());
  ASSERT_TRUE(started);
  DeployContext c = context();
  c.handle = started.value().handle;
  auto back = t->rollback(c, sink());
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back.value().status, DeployStatus::succeeded);
  EXPECT_EQ(live(worker()).versions, (Versions{{before, 100}}));
  EXPECT_FALSE(live(worker()).forced);
}

TEST_F(CloudflareProviderTest, ARollbackAcrossAChangedSecretIsForcedAndSaysSo) {
  auto t = target(workers("[100]"));
  const std::string before = worker().versions.front().id;
  auto started = t->start(context(), sink());
  ASSERT_TRUE(started);
  ASSERT_EQ(started.value().status, DeployStatus::succeeded);
  // A secret sync since: a new version with the changed secret, deployed at 100%.
  WorkerSecretTarget secrets(dynamic_cast<CloudflareProvider&>(*provider_).rest(), "acme-web");
  ASSERT_TRUE(secrets.put("API_KEY", Secret::from("second-canary")));
  DeployContext c = context();
  c.handle = started.value().handle;
  log_.clear();
  auto back = t->rollback(c, sink());
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(live(worker()).versions, (Versions{{before, 100}}));
  EXPECT_TRUE(live(worker()).forced);
  ASSERT_FALSE(log_.empty());
  EXPECT_THAT(log_.front(), HasSubstr("(10220); deploying it with force=true"));
  EXPECT_EQ(fake_.cloudflare().count(kDeploy), 3u) << "the step, the refused rollback, the forced one";
  for (const auto& line : log_) EXPECT_EQ(line.find("canary"), std::string::npos);
}

TEST_F(CloudflareProviderTest, ARollbackWithoutThisDeploysHandleUsesThePreviousDeploy) {
  auto t = target(workers("[100]"));
  const std::string before = worker().versions.front().id;
  ASSERT_TRUE(t->start(context(), sink()));
  DeployContext c = context("d-2");
  c.previous = PreviousDeploy{"d-0", "v1", "version=" + before + ";previous=;phase=1"};
  auto back = t->rollback(c, sink());
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(live(worker()).versions, (Versions{{before, 100}}));
  DeployContext nothing = context("d-3");
  auto refused = t->rollback(nothing, sink());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().retry, Retry::permanent);
}

TEST_F(CloudflareProviderTest, ADeployReplacedBesideOrgdFailsAtItsNextPoll) {
  auto t = target(workers("[10, 100]"));
  auto started = t->start(context(), sink());
  ASSERT_TRUE(started);
  const std::string other = fake_.cloudflare().add_version("acme-web");
  fake_.cloudflare().add_deployment("acme-web", {{other, 100}});
  DeployContext c = context();
  c.handle = started.value().handle;
  auto polled = t->poll(c);
  ASSERT_TRUE(polled) << polled.error().message;
  EXPECT_EQ(polled.value().status, DeployStatus::failed);
  EXPECT_THAT(polled.value().error, HasSubstr("is not deployed"));
  c.handle = "run=1;deployment=2";
  auto foreign = t->poll(c);
  ASSERT_FALSE(foreign);
  EXPECT_EQ(foreign.error().retry, Retry::permanent);
}

TEST_F(CloudflareProviderTest, AMissingMainModuleFailsTheStartWithoutAnUpload) {
  auto t = target("script: acme-web, dir: '" + dir_.str() + "', main_module: worker.mjs");
  auto started = t->start(context(), sink());
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().retry, Retry::permanent);
  EXPECT_THAT(started.error().message, HasSubstr("has no worker.mjs (main_module)"));
  EXPECT_EQ(uploads(), 0u);
}

TEST_F(CloudflareProviderTest, AContainersRolloutIsFollowedToCompletion) {
  auto t = target("application: app-1, image: 'registry.example/web:v2', steps: [25, 100], poll_interval: 100ms");
  auto started = t->start(context(), sink());
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().status, DeployStatus::running);
  const auto rollout = fake_.cloudflare().rollouts().at(0);
  EXPECT_EQ(rollout.body["strategy"], "rolling");
  EXPECT_EQ(rollout.body["kind"], "full_auto");
  EXPECT_EQ(rollout.body["steps"][0]["step_size"]["percentage"], 25);
  EXPECT_EQ(rollout.body["target_configuration"]["image"], "registry.example/web:v2");
  DeployContext c = context();
  c.handle = started.value().handle;
  auto first = t->poll(c);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first.value().status, DeployStatus::running);
  auto second = t->poll(c);
  ASSERT_TRUE(second);
  EXPECT_EQ(second.value().status, DeployStatus::succeeded);
  EXPECT_EQ(fake_.cloudflare().application("app-1")->image, "registry.example/web:v2");

  // Rolled back: the previous image rolled out again, followed within the call.
  auto back = t->rollback(c, sink());
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back.value().status, DeployStatus::succeeded);
  EXPECT_EQ(fake_.cloudflare().application("app-1")->image, "registry.example/web:v1");
  EXPECT_EQ(fake_.cloudflare().rollouts().back().body["step_percentage"], 100);
}

TEST_F(CloudflareProviderTest, ARevertedRolloutFailsTheDeploy) {
  fake_.cloudflare().set_rollouts_revert(true);
  auto t = target("application: app-1, image: 'registry.example/web:v2', poll_interval: 100ms");
  auto started = t->start(context(), sink());
  ASSERT_TRUE(started);
  DeployContext c = context();
  c.handle = started.value().handle;
  ASSERT_TRUE(t->poll(c));
  auto ended = t->poll(c);
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended.value().status, DeployStatus::failed);
  EXPECT_THAT(ended.value().error, HasSubstr("was reverted"));
}

TEST_F(CloudflareProviderTest, ARolloutThatCannotBeReadIsFollowedThroughItsApplication) {
  fake_.cloudflare().set_rollout_get_supported(false);
  auto t = target("application: app-1, image: 'registry.example/web:v2', poll_interval: 100ms");
  auto started = t->start(context(), sink());
  ASSERT_TRUE(started);
  DeployContext c = context();
  c.handle = started.value().handle;
  DeployStatus status = DeployStatus::running;
  for (int i = 0; i < 5 && status == DeployStatus::running; ++i) {
    auto polled = t->poll(c);
    ASSERT_TRUE(polled) << polled.error().message;
    status = polled.value().status;
  }
  EXPECT_EQ(status, DeployStatus::succeeded);
}

TEST_F(CloudflareProviderTest, TheProbeVerifiesUserAndAccountTokens) {
  build("");
  auto user = provider_->health_probe()->probe();
  ASSERT_TRUE(user);
  EXPECT_TRUE(user.value().ok) << user.value().detail;
  EXPECT_THAT(user.value().detail, HasSubstr("user token tok"));
  EXPECT_THAT(user.value().detail, HasSubstr("active, no expiry"));
  EXPECT_EQ(user.value().rate_limit_limit, 1200);
  EXPECT_TRUE(user.value().rate_limit_remaining.has_value());
  fake_.cloudflare().clear_calls();
  ASSERT_TRUE(provider_->health_probe()->probe());
  EXPECT_EQ(fake_.cloudflare().calls().size(), 1u) << "a known user token is verified at once";

  fake_.cloudflare().add_token("account-token", /*account=*/true, "active", "2027-06-01T00:00:00Z");
  build("", "account-token");
  fake_.cloudflare().clear_calls();
  auto account = provider_->health_probe()->probe();
  ASSERT_TRUE(account);
  EXPECT_TRUE(account.value().ok);
  EXPECT_THAT(account.value().detail, HasSubstr("account token"));
  EXPECT_THAT(account.value().detail, HasSubstr("expires 2027-06-01T00:00:00Z"));
  EXPECT_EQ(fake_.cloudflare().count("GET /user/tokens/verify"), 0u) << "an account token's probe";

  fake_.cloudflare().add_token("disabled-token", false, "disabled");
  build("", "disabled-token");
  auto disabled = provider_->health_probe()->probe();
  ASSERT_TRUE(disabled);
  EXPECT_FALSE(disabled.value().ok);
  EXPECT_THAT(disabled.value().last_error, HasSubstr("the API token is disabled"));

  build("", "");
  auto missing = provider_->health_probe()->probe();
  ASSERT_TRUE(missing);
  EXPECT_FALSE(missing.value().ok);
  EXPECT_THAT(missing.value().detail, HasSubstr("Cloudflare API token: "));
  EXPECT_THAT(missing.value().detail, HasSubstr("CF_TOKEN"));

  build("", "not-a-token-canary");
  auto wrong = provider_->health_probe()->probe();
  ASSERT_TRUE(wrong);
  EXPECT_FALSE(wrong.value().ok);
  EXPECT_THAT(wrong.value().detail, HasSubstr("[10000] Authentication error"));
  EXPECT_EQ(wrong.value().detail.find("canary"), std::string::npos);
}

TEST_F(CloudflareProviderTest, A429PastTheDeadlineIsRateLimitedAndNothingMoreIsSent) {
  auto t = target(workers("[100]"));
  fake_.cloudflare().set_rate_limit_remaining(0);
  DeployContext c = context();
  c.deadline = std::chrono::steady_clock::now() + 10s;
  auto limited = t->start(c, sink());
  ASSERT_FALSE(limited);
  EXPECT_EQ(limited.error().retry, Retry::rate_limited);
  EXPECT_GE(limited.error().retry_after, 299s);
  EXPECT_LE(limited.error().retry_after, 300s);
  EXPECT_EQ(fake_.cloudflare().calls().size(), 1u);
  // Within the block, the client holds requests back instead of sending them.
  auto again = t->start(c, sink());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().retry, Retry::rate_limited);
  EXPECT_EQ(fake_.cloudflare().calls().size(), 1u) << "not hammered";
}

TEST_F(CloudflareProviderTest, A429WithinTheDeadlineIsWaitedForThenTheCallGoesThrough) {
  auto t = target(workers("[100]"), /*max_attempts=*/4);
  fake_.cloudflare().set_rate_limit_remaining(0);
  DeployContext c = context();
  c.deadline = std::chrono::steady_clock::now() + 20min;
  auto started = t->start(c, sink());
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().status, DeployStatus::succeeded);
  EXPECT_GE(offset_->load(), 300'000) << "the client waited out the five-minute block";
  std::size_t refused = 0;
  for (const auto& call : fake_.cloudflare().calls()) refused += call.status == 429 ? 1 : 0;
  EXPECT_EQ(refused, 1u);
}

TEST(CloudflareTlsTest, TheApiIsReachedOverTlsWithTheConfiguredCaOnly) {
  orgd::testing::TestPki pki;
  ASSERT_TRUE(pki.make());
  FakeCloudflareServer fake({}, {true, pki.path("server.pem"), pki.path("server-key.pem")});
  fake.cloudflare().add_token(kToken);
  MetricsRegistry metrics;
  ProviderEnvironment provided;
  provided.environment = Environment{{{"CF_TOKEN", kToken}}};
  provided.http = make_https_transport_factory(metrics, Environment{});
  auto probe_with = [&](const std::string& extra) {
    const std::string yaml = "org: acme\nproviders:\n  cf: {type: cloudflare, api_url: '" +
                             fake.base_url() + "', token_env: CF_TOKEN, account_id: " +
                             fake.cloudflare().account_id() + extra + "}\n";
    const Config config = load_config_string(yaml, "orgd.yaml", provided.environment);
    auto provider = make_cloudflare_provider(config.providers.at("cf"),
                                             services_for(config.providers.at("cf"), provided),
                                             "orgd.yaml");
    auto result = provider->health_probe()->probe();
    EXPECT_TRUE(result);
    return result ? result.value() : ProbeResult{};
  };
  ASSERT_EQ(fake.base_url().rfind("https://", 0), 0u);
  const ProbeResult trusted = probe_with(", ca_file: '" + pki.path("ca.pem") + "'");
  EXPECT_TRUE(trusted.ok) << trusted.detail;
  const ProbeResult untrusted = probe_with("");
  EXPECT_FALSE(untrusted.ok) << "the test CA is not in the system store";
  EXPECT_EQ(untrusted.detail.find(kToken), std::string::npos);
}

}  // namespace
}  // namespace orgd::cloudflare
