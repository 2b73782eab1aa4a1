// Deploys through the cloudflare provider end to end: orgd (real nats-server, real HTTPS client)
// uploads a Worker version to the fake Cloudflare API and deploys it through steps [10, 100],
// running its health gate after the 10% step before going on; a gate that fails at 10% rolls
// the Worker back to the version it served before; a Containers application rolls out through
// the rollouts API, then the gate.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "daemon/app/daemon.hpp"
#include "tests/fakes/fake_cloudflare.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using testing::connect_client;
using testing::FakeCloudflareServer;
using testing::NatsServer;
using testing::TempDir;
using testing::wait_until;
using v1::DeployRecord;
using v1::DeployStep;

constexpr const char* kToken = "cf-deploy-test-token";
using Versions = std::vector<std::pair<std::string, double>>;

class CloudflareDeployTest : public ::testing::Test {
 protected:
  CloudflareDeployTest() {
    fake_.cloudflare().add_token(kToken);
    fake_.cloudflare().add_worker("acme-web");
    fake_.cloudflare().add_application("app-7", "registry.example/api:v1");
    std::filesystem::create_directories(dist_.path());
    std::ofstream(dist_ / "index.js") << "export default { fetch() { return new Response('v2') } }";
  }
  ~CloudflareDeployTest() override {
    reporting_ = false;
    if (reporter_.joinable()) reporter_.join();
    if (daemon_) daemon_->stop();
  }

  void start(const std::string& gate_timeout) {
    const std::string yaml =
        "org: acme\n"
        "nats:\n  urls: [" + server_.url() + "]\n  data_dir: " + data_.str() + "\n"
        "http:\n  listen: 127.0.0.1:0\n"
        "log:\n  level: warn\n"
        "deploy:\n  health_gate: {timeout: " + gate_timeout + ", soak: 200ms}\n"
        "providers:\n"
        "  cf: {type: cloudflare, api_url: '" + fake_.base_url() + "', token_env: CF_TOKEN, "
        "account_id: " + fake_.cloudflare().account_id() + "}\n"
        "repos:\n"
        "  web:\n    deploy:\n      prod: {provider: cf, script: acme-web, dir: '" + dist_.str() +
        "', steps: [10, 100]}\n    health: {services: [http]}\n"
        "  api:\n    deploy:\n      prod: {provider: cf, application: app-7, image: "
        "'registry.example/api:v2', poll_interval: 100ms}\n    health: {services: [http]}\n";
    const Environment env(std::map<std::string, std::string>{{"CF_TOKEN", kToken}});
    DaemonOptions options;
    options.deploy_poll_interval = 50ms;
    daemon_ = std::make_unique<Daemon>(load_config_string(yaml, "test.yaml", env), options, env);
    daemon_->start();
    ASSERT_TRUE(wait_until([&] { return daemon_->ready(); }, 15s));
    client_ = connect_client(server_.url());
  }

  // `repo` reports its http service ok every 50 ms until the test ends.
  void report_healthy(const std::string& repo) {
    reporter_ = std::thread([this, repo] {
      const std::string subject = "org.acme.health." + repo + ".http";
      while (reporting_) {
        const std::string body = R"({"status":"ok","ttlSeconds":30})";
        natsConnection_Publish(client_.get(), subject.c_str(), body.data(),
                               static_cast<int>(body.size()));
        std::this_thread::sleep_for(50ms);
      }
    });
  }

  const DeployStep& step(const DeployRecord& record, const std::string& repo) {
    for (const auto& s : record.steps()) {
      if (s.repo() == repo) return s;
    }
    static DeployStep none;
    ADD_FAILURE() << "no step " << repo;
    return none;
  }

  NatsServer server_;
  TempDir data_{"orgd-cf-deploy"};
  TempDir dist_{"orgd-cf-dist"};
  FakeCloudflareServer fake_;
  std::unique_ptr<Daemon> daemon_;
  testing::NatsConnectionPtr client_;
  std::atomic<bool> reporting_{true};
  std::thread reporter_;
};

TEST_F(CloudflareDeployTest, AWorkerGoesOutAt10PercentPassesItsGateThenGoesTo100) {
  start("5s");
  report_healthy("web");
  const std::string before = fake_.cloudflare().worker("acme-web")->versions.front().id;
  const auto accepted = testing::api_deploy(client_.get(), "org.acme",
                                            R"({"repos":["web"],"env":"prod","ref":"v2.0.0"})");
  const auto record =
      testing::wait_deploy_finished(client_.get(), "org.acme", accepted.deploy_id(), 60s, 100ms);
  ASSERT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_EQ(step(record, "web").phases_passed(), 1);
  EXPECT_THAT(step(record, "web").handle(), HasSubstr("version="));
  const auto worker = fake_.cloudflare().worker("acme-web");
  ASSERT_EQ(worker->versions.size(), 2u) << "one upload";
  const std::string uploaded = worker->versions.back().id;
  EXPECT_THAT(worker->versions.back().annotations["workers/message"].get<std::string>(),
              HasSubstr("orgd deploy " + accepted.deploy_id()));
  ASSERT_EQ(worker->deployments.size(), 3u) << "the first deploy, the 10% step, the 100% step";
  EXPECT_EQ(worker->deployments[1].versions, (Versions{{uploaded, 10}, {before, 90}}));
  EXPECT_EQ(worker->deployments[2].versions, (Versions{{uploaded, 100}}));
}

TEST_F(CloudflareDeployTest, AGateFailingAt10PercentRollsTheWorkerBack) {
  start("1s");  // web never reports: its gate fails after the 10% step
  const std::string before = fake_.cloudflare().worker("acme-web")->versions.front().id;
  const auto accepted =
      testing::api_deploy(client_.get(), "org.acme", R"({"repos":["web"],"env":"prod"})");
  const auto record =
      testing::wait_deploy_finished(client_.get(), "org.acme", accepted.deploy_id(), 60s, 100ms);
  ASSERT_EQ(record.state(), DeployRecord::failed) << record.DebugString();
  EXPECT_THAT(step(record, "web").error(), HasSubstr("phase 1: health gate"));
  EXPECT_THAT(step(record, "web").error(), HasSubstr("rolled back"));
  const auto worker = fake_.cloudflare().worker("acme-web");
  ASSERT_EQ(worker->deployments.size(), 3u) << "the first deploy, the 10% step, the rollback";
  EXPECT_EQ(worker->deployments.back().versions, (Versions{{before, 100}}));
}

TEST_F(CloudflareDeployTest, AContainersApplicationRollsOutThenPassesItsGate) {
  start("5s");
  report_healthy("api");
  const auto accepted =
      testing::api_deploy(client_.get(), "org.acme", R"({"repos":["api"],"env":"prod"})");
  const auto record =
      testing::wait_deploy_finished(client_.get(), "org.acme", accepted.deploy_id(), 60s, 100ms);
  ASSERT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_TRUE(step(record, "api").has_healthy_at());
  EXPECT_THAT(step(record, "api").handle(), HasSubstr("rollout="));
  ASSERT_EQ(fake_.cloudflare().rollouts().size(), 1u);
  EXPECT_EQ(fake_.cloudflare().rollouts()[0].status, "completed");
  EXPECT_EQ(fake_.cloudflare().application("app-7")->image, "registry.example/api:v2");
}

}  // namespace
}  // namespace orgd
