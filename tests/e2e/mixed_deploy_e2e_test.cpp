// One deploy across three platforms, through the orgd binary on a real nats-server: api by a
// GitHub Actions workflow (the fake GitHub), web as a Cloudflare Worker going out at 10% then
// 100% with orgd's health gate between (the fake Cloudflare API), and worker through the
// JavaScript example remote provider (node, on the bus). web and worker depend on api, so api
// must have finished before either starts. A second deploy whose web never reports healthy at
// 10% rolls web back to the version it had.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "tests/fakes/fake_cloudflare.hpp"
#include "tests/fakes/fake_github.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/remote_example.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using testing::FakeCloudflareServer;
using testing::FakeGithubServer;
using testing::NatsServer;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::wait_until;
using ::testing::HasSubstr;

constexpr const char* kGithubToken = "ghp_mixedE2eToken0123456789abcdef012345";
constexpr const char* kCloudflareToken = "cf-mixed-e2e-token-5a1b9c";

const std::filesystem::path kExample = testing::remote_example_dir();

const v1::DeployStep* step(const v1::DeployRecord& record, const std::string& repo) {
  for (const auto& s : record.steps()) {
    if (s.repo() == repo) return &s;
  }
  return nullptr;
}

class MixedDeployE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto missing = testing::remote_example_missing(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    node_ = testing::find_node();
    server_ = std::make_unique<NatsServer>();
    client_ = testing::connect_client(server_->url());
    github_.github().add_token(kGithubToken);
    github_.github().complete_runs_after_polls(1, "success");
    cloudflare_.cloudflare().add_token(kCloudflareToken);
    cloudflare_.cloudflare().add_worker("acme-web");
    std::filesystem::create_directories(dist_.path());
    std::ofstream(dist_ / "index.js") << "export default { fetch() { return new Response('v2') } }";

    SubprocessOptions provider;
    provider.argv = {node_,      (kExample / "provider.js").string(),
                     "--server", server_->url(),
                     "--subject", "org.acme.plugin.ext",
                     "--polls",  "1",
                     "--state-file", (work_ / "provider-state.json").string()};
    provider.unset_env = testing::kOutsideEnv;
    provider.cwd = work_.path();
    provider_ = std::make_unique<Subprocess>(std::move(provider));
    ASSERT_TRUE(wait_until(
        [&] {
          return std::filesystem::exists(work_ / "provider-state.json") || !provider_->running();
        },
        30s));
    ASSERT_TRUE(provider_->running()) << provider_->describe();

    const std::string config =
        "org: acme\n"
        "nats:\n  urls: [" + server_->url() + "]\n  connect_timeout: 2s\n"
        "  reconnect_wait: 100ms\n  data_dir: " + data_.str() + "\n"
        "http:\n  enabled: false\n"
        "log:\n  level: info\n"
        "deploy:\n  lease_ttl: 2s\n  health_gate: {timeout: 3s, soak: 300ms}\n"
        "providers:\n"
        "  gh: {type: github, api_url: '" + github_.base_url() + "', token_env: GH_TOKEN}\n"
        "  cf: {type: cloudflare, api_url: '" + cloudflare_.base_url() +
        "', token_env: CF_TOKEN, account_id: " + cloudflare_.cloudflare().account_id() + "}\n"
        "  ext: {type: remote, timeout: 5s, capabilities: [deploy_target, health_probe]}\n"
        "repos:\n"
        "  api:\n    deploy:\n      prod: {provider: gh, workflow: deploy.yml, poll_interval: 1s, "
        "health_gate: false}\n"
        "  web:\n    depends_on: [api]\n    deploy:\n      prod: {provider: cf, script: acme-web, "
        "dir: '" + dist_.str() + "', compatibility_date: '2026-11-01', steps: [10, 100]}\n"
        "    health: {services: [http]}\n"
        "  worker:\n    depends_on: [api]\n    deploy:\n      prod: {provider: ext, "
        "health_gate: false}\n";
    testing::write_file(work_ / "orgd.yaml", config);
    SubprocessOptions orgd;
    orgd.argv = {ORGD_DAEMON_BINARY, "--config", (work_ / "orgd.yaml").string()};
    orgd.unset_env = testing::kOutsideEnv;
    orgd.env = {{"GH_TOKEN", kGithubToken}, {"CF_TOKEN", kCloudflareToken}};
    orgd.cwd = work_.path();
    orgd_ = std::make_unique<Subprocess>(std::move(orgd));
    ASSERT_TRUE(wait_until(
        [&] {
          return testing::api_call(client_.get(), "org.acme.api.repos", "", 1s).has_value() ||
                 !orgd_->running();
        },
        30s));
    ASSERT_TRUE(orgd_->running()) << orgd_->describe();
  }

  void TearDown() override {
    reporting_ = false;
    if (reporter_.joinable()) reporter_.join();
    std::string output;
    if (orgd_) {
      orgd_->signal(SIGTERM);
      EXPECT_TRUE(orgd_->wait_for_exit(20s).has_value()) << orgd_->describe();
      output += orgd_->stdout_text() + orgd_->stderr_text();
    }
    if (provider_) {
      provider_->signal(SIGTERM);
      EXPECT_TRUE(provider_->wait_for_exit(10s).has_value());
    }
    // The tokens went to their APIs only.
    EXPECT_EQ(output.find(kGithubToken), std::string::npos);
    EXPECT_EQ(output.find(kCloudflareToken), std::string::npos);
  }

  // web's http service reports ok every 100 ms from now on (reports newer than the 10% step
  // are what its gate waits for).
  void report_web_healthy() {
    reporter_ = std::thread([this] {
      auto conn = testing::connect_client(server_->url());
      const std::string body = R"({"status":"ok","ttlSeconds":30})";
      while (reporting_) {
        natsConnection_Publish(conn.get(), "org.acme.health.web.http", body.data(),
                               static_cast<int>(body.size()));
        std::this_thread::sleep_for(100ms);
      }
    });
  }

  v1::DeployRecord deploy() {
    const auto accepted = testing::api_deploy(client_.get(), "org.acme",
                                              R"({"all":true,"env":"prod","ref":"v2"})");
    EXPECT_EQ(accepted.waves_size(), 2) << accepted.DebugString();
    return testing::wait_deploy_finished(client_.get(), "org.acme", accepted.deploy_id(), 90s,
                                         250ms);
  }

  std::optional<json> provider_state() const {
    const auto file = work_ / "provider-state.json";
    if (!std::filesystem::exists(file)) return std::nullopt;
    auto j = json::parse(testing::read_file(file), nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return j;
  }

  std::string node_;
  TempDir data_{"orgd-mixed-e2e-data"};
  TempDir work_{"orgd-mixed-e2e-work"};
  TempDir dist_{"orgd-mixed-e2e-dist"};
  FakeGithubServer github_;
  FakeCloudflareServer cloudflare_;
  std::unique_ptr<NatsServer> server_;
  testing::NatsConnectionPtr client_;
  std::unique_ptr<Subprocess> provider_;
  std::unique_ptr<Subprocess> orgd_;
  std::atomic<bool> reporting_{true};
  std::thread reporter_;
};

TEST_F(MixedDeployE2e, ApiOnGithubThenWebOnWorkersThroughItsGateAndWorkerOnARemoteProvider) {
  report_web_healthy();
  const auto record = deploy();
  ASSERT_EQ(record.state(), v1::DeployRecord::succeeded)
      << record.DebugString() << orgd_->describe() << provider_->describe();

  const auto* api = step(record, "api");
  const auto* web = step(record, "web");
  const auto* worker = step(record, "worker");
  ASSERT_TRUE(api && web && worker) << record.DebugString();
  // Dependency order: web and worker started after api had finished.
  EXPECT_LE(api->finished_at().seconds() * 1000 + api->finished_at().nanos() / 1'000'000,
            web->started_at().seconds() * 1000 + web->started_at().nanos() / 1'000'000);
  EXPECT_LE(api->finished_at().seconds() * 1000 + api->finished_at().nanos() / 1'000'000,
            worker->started_at().seconds() * 1000 + worker->started_at().nanos() / 1'000'000);

  // api: one workflow dispatch at GitHub.
  EXPECT_EQ(github_.github().runs().size(), 1u);
  // web: one version uploaded, deployed at 10% beside the old one, then at 100% after its gate.
  const auto worker_at_cf = cloudflare_.cloudflare().worker("acme-web");
  ASSERT_TRUE(worker_at_cf.has_value());
  const auto& deployments = worker_at_cf->deployments;
  ASSERT_GE(deployments.size(), 3u) << "the initial one, 10%, 100%";
  const auto& partial = deployments[deployments.size() - 2];
  const auto& full = deployments.back();
  ASSERT_EQ(partial.versions.size(), 2u);
  const std::string uploaded = worker_at_cf->versions.back().id;
  EXPECT_EQ(partial.versions[0].first, uploaded);
  EXPECT_EQ(partial.versions[0].second, 10.0);
  ASSERT_EQ(full.versions.size(), 1u);
  EXPECT_EQ(full.versions[0].first, uploaded);
  EXPECT_EQ(full.versions[0].second, 100.0);
  EXPECT_TRUE(web->has_healthy_at()) << "web's gate passed";
  // worker: deployed by the JavaScript provider, at the deploy's ref.
  const auto state = provider_state();
  ASSERT_TRUE(state.has_value());
  bool deployed = false;
  for (const auto& d : (*state)["deploys"]) {
    deployed = deployed || (d.value("repo", "") == "worker" && d.value("ref", "") == "v2" &&
                            d.value("status", "") == "succeeded");
  }
  EXPECT_TRUE(deployed) << state->dump();
}

TEST_F(MixedDeployE2e, AGateFailingAt10PercentRollsWebBackToTheVersionItHad) {
  const auto before = cloudflare_.cloudflare().worker("acme-web");
  ASSERT_TRUE(before.has_value());
  const std::string serving = before->deployments.back().versions.at(0).first;

  // web never reports: its gate fails after the 10% step.
  const auto record = deploy();
  EXPECT_NE(record.state(), v1::DeployRecord::succeeded) << record.DebugString();
  const auto* web = step(record, "web");
  ASSERT_NE(web, nullptr);
  EXPECT_THAT(web->error(), HasSubstr("health gate")) << record.DebugString();

  const auto after = cloudflare_.cloudflare().worker("acme-web");
  ASSERT_TRUE(after.has_value());
  const auto& last = after->deployments.back();
  ASSERT_EQ(last.versions.size(), 1u) << "rolled back to one version";
  EXPECT_EQ(last.versions[0].first, serving) << "the version web had before this deploy";
  EXPECT_EQ(last.versions[0].second, 100.0);
  bool went_to_10 = false;
  for (const auto& d : after->deployments) {
    for (const auto& [version, percentage] : d.versions) {
      went_to_10 = went_to_10 || (version != serving && percentage == 10.0);
    }
  }
  EXPECT_TRUE(went_to_10) << "the new version went out at 10% first";
}

}  // namespace
}  // namespace orgd
