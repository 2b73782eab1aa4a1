// A cross-repo deploy through the github provider, end to end: orgd (real nats-server, real
// HTTPS client) dispatches each repo's workflow at the fake GitHub in dependency order, follows
// the runs, and keeps a GitHub Deployment per step; a workflow_run webhook for a completed run
// makes its step finish at once instead of at its next poll.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "daemon/app/daemon.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/net/https_client.hpp"
#include "tests/fakes/fake_github.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::connect_client;
using testing::FakeGithubServer;
using testing::NatsServer;
using testing::TempDir;
using testing::wait_until;

constexpr const char* kToken = "ghp_orgdDeployTestToken0123456789abcdef";
constexpr const char* kWebhookSecret = "whsec-deploy-test";

std::string target(const std::string& poll_interval) {
  return "{provider: gh, workflow: deploy.yml, poll_interval: " + poll_interval +
         ", inputs: {version: '${ORGD_REF}', deploy_id: '${ORGD_DEPLOY_ID}'}}";
}

class GithubDeployTest : public ::testing::Test {
 protected:
  void start(const std::string& api_poll_interval) {
    fake_.github().add_token(kToken);
    const std::string yaml =
        "org: acme\n"
        "nats:\n  urls: [" + server_.url() + "]\n  data_dir: " + data_.str() + "\n"
        "http:\n  listen: 127.0.0.1:0\n"
        "log:\n  level: warn\n"
        "deploy:\n  health_gate: false\n"
        "providers:\n"
        "  gh: {type: github, api_url: '" + fake_.base_url() + "', token_env: GH_TOKEN}\n"
        "repos:\n"
        "  api:\n    deploy:\n      prod: " + target(api_poll_interval) + "\n"
        "  web:\n    depends_on: [api]\n    deploy:\n      prod: " + target("1s") + "\n"
        "  worker:\n    depends_on: [api]\n    deploy:\n      prod: " + target("1s") + "\n";
    const Environment env(std::map<std::string, std::string>{
        {"GH_TOKEN", kToken}, {"GITHUB_WEBHOOK_SECRET", kWebhookSecret}});
    daemon_ = std::make_unique<Daemon>(load_config_string(yaml, "test.yaml", env),
                                       DaemonOptions{}, env);
    daemon_->start();
    ASSERT_TRUE(wait_until([&] { return daemon_->ready(); }, 15s));
    client_ = connect_client(server_.url());
  }
  void TearDown() override {
    if (daemon_) daemon_->stop();
  }

  NatsServer server_;
  TempDir data_{"orgd-github-deploy"};
  FakeGithubServer fake_;
  std::unique_ptr<Daemon> daemon_;
  testing::NatsConnectionPtr client_;
};

TEST_F(GithubDeployTest, ThreeReposDeployInOrderEachWithItsRunAndDeployment) {
  start("1s");
  fake_.github().complete_runs_after_polls(1, "success");
  const auto accepted = testing::api_deploy(client_.get(), "org.acme",
                                            R"({"all":true,"env":"prod","ref":"v3.1.0"})");
  const auto record =
      testing::wait_deploy_finished(client_.get(), "org.acme", accepted.deploy_id(), 60s, 200ms);
  ASSERT_EQ(record.state(), v1::DeployRecord::succeeded) << record.DebugString();
  for (const auto& step : record.steps()) {
    EXPECT_NE(step.handle().find("run="), std::string::npos) << step.repo();
    EXPECT_NE(step.url().find("/actions/runs/"), std::string::npos) << step.repo();
  }
  const auto runs = fake_.github().runs();
  ASSERT_EQ(runs.size(), 3u) << "one dispatch per repo";
  EXPECT_EQ(runs[0].repo, "api") << "api first: web and worker depend on it";
  for (const auto& run : runs) EXPECT_EQ(run.inputs["deploy_id"], accepted.deploy_id());
  const auto deployments = fake_.github().deployments();
  ASSERT_EQ(deployments.size(), 3u);
  for (const auto& deployment : deployments) {
    EXPECT_EQ(deployment.ref, "v3.1.0");
    EXPECT_EQ(deployment.environment, "prod");
    ASSERT_FALSE(deployment.statuses.empty()) << deployment.repo;
    EXPECT_EQ(deployment.statuses.front().state, "in_progress") << deployment.repo;
    EXPECT_EQ(deployment.statuses.back().state, "success") << deployment.repo;
  }
}

TEST_F(GithubDeployTest, AWorkflowRunWebhookFinishesTheStepBeforeItsNextPoll) {
  // api is polled once a minute: only the webhook can end it within the wait below.
  start("60s");
  const auto accepted =
      testing::api_deploy(client_.get(), "org.acme", R"({"repos":["api"],"env":"prod"})");
  std::optional<testing::FakeRun> run;
  ASSERT_TRUE(wait_until(
      [&] {
        const auto runs = fake_.github().runs();
        if (!runs.empty()) run = runs[0];
        return run.has_value();
      },
      15s));
  ASSERT_TRUE(wait_until(
      [&] {
        auto r = testing::api_deploy_get(client_.get(), "org.acme", accepted.deploy_id());
        return r && r->steps_size() == 1 &&
               r->steps(0).handle().find("run=") != std::string::npos;
      },
      15s));
  fake_.github().complete_run(run->id, "success");

  MetricsRegistry metrics;
  auto http = make_https_transport_factory(metrics, Environment{});
  auto transport = http(HttpClientOptions{});
  ASSERT_TRUE(transport);
  const auto delivery = testing::webhook_delivery(
      "workflow_run", fake_.github().workflow_run_event(run->id), kWebhookSecret, "guid-run-1");
  HttpRequest post;
  post.method = "POST";
  post.url = "http://127.0.0.1:" + std::to_string(daemon_->http_port()) + "/webhooks/github";
  post.headers = delivery.headers;
  post.body = delivery.body;
  auto answer = transport.value()->send(post);
  ASSERT_TRUE(answer) << answer.error().message;
  ASSERT_EQ(answer.value().status / 100, 2) << answer.value().body;

  const auto record =
      testing::wait_deploy_finished(client_.get(), "org.acme", accepted.deploy_id(), 20s, 200ms);
  EXPECT_EQ(record.state(), v1::DeployRecord::succeeded) << record.DebugString();
}

}  // namespace
}  // namespace orgd
