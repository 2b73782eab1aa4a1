// A GitHub deploy survives a SIGKILL of its orgd: the orgd binary dispatches the workflow at the
// fake GitHub, is killed while the run is in progress, and the orgd started after it follows the
// same run to its end (the handle in the deploy record names it): one dispatch, one Deployment.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <csignal>
#include <memory>
#include <string>

#include "tests/fakes/fake_github.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::FakeGithubServer;
using testing::NatsServer;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::wait_until;

constexpr const char* kToken = "ghp_orgdE2eToken0123456789abcdef0123";

std::unique_ptr<Subprocess> start_orgd(const TempDir& dir, const std::string& config) {
  const auto config_path = dir.path() / "orgd.yaml";
  testing::write_file(config_path, config);
  SubprocessOptions options;
  options.argv = {ORGD_DAEMON_BINARY, "--config", config_path.string()};
  options.unset_env = testing::kOutsideEnv;
  options.env = {{"GH_TOKEN", kToken}};
  options.cwd = dir.path();
  return std::make_unique<Subprocess>(std::move(options));
}

TEST(GithubDeployE2e, ASigkilledOrgdsDeployIsFollowedToItsEndWithoutASecondDispatch) {
  NatsServer server;
  FakeGithubServer fake;
  fake.github().add_token(kToken);
  TempDir data("orgd-gh-e2e-data");
  TempDir first_dir("orgd-gh-e2e-a");
  TempDir second_dir("orgd-gh-e2e-b");
  const std::string config =
      "org: acme\n"
      "nats:\n  urls: [" + server.url() + "]\n  connect_timeout: 2s\n  reconnect_wait: 100ms\n"
      "  data_dir: " + data.str() + "\n"
      "http:\n  enabled: false\n"
      "log:\n  level: info\n"
      "deploy:\n  lease_ttl: 2s\n  health_gate: false\n"
      "providers:\n"
      "  gh: {type: github, api_url: '" + fake.base_url() + "', token_env: GH_TOKEN}\n"
      "repos:\n"
      "  api:\n    deploy:\n      prod: {provider: gh, workflow: deploy.yml, poll_interval: 1s, "
      "inputs: {deploy_id: '${ORGD_DEPLOY_ID}'}}\n";
  auto client = testing::connect_client(server.url());

  auto first = start_orgd(first_dir, config);
  std::optional<testing::ApiReply> probe;
  ASSERT_TRUE(wait_until(
      [&] {
        probe = testing::api_call(client.get(), "org.acme.api.repos", "", 1s);
        return probe.has_value() || !first->running();
      },
      30s));
  ASSERT_TRUE(first->running()) << first->describe();
  const auto accepted =
      testing::api_deploy(client.get(), "org.acme", R"({"repos":["api"],"env":"prod"})");

  // The run is dispatched and its handle recorded; GitHub keeps it in progress.
  ASSERT_TRUE(wait_until(
      [&] {
        auto record = testing::api_deploy_get(client.get(), "org.acme", accepted.deploy_id());
        return record && record->steps_size() == 1 &&
               record->steps(0).handle().find("run=") != std::string::npos;
      },
      30s))
      << first->describe();
  ASSERT_EQ(fake.github().runs().size(), 1u);
  const auto run_id = fake.github().runs()[0].id;
  fake.github().set_run_status(run_id, "in_progress");
  ASSERT_TRUE(first->signal(SIGKILL));
  ASSERT_EQ(first->wait_for_exit(10s), -SIGKILL) << first->describe();

  auto second = start_orgd(second_dir, config);
  fake.github().complete_run(run_id, "success");
  const auto record = testing::wait_deploy_finished(client.get(), "org.acme",
                                                    accepted.deploy_id(), 60s, 250ms);
  EXPECT_EQ(record.state(), v1::DeployRecord::succeeded)
      << record.DebugString() << first->describe() << second->describe();
  EXPECT_EQ(fake.github().runs().size(), 1u) << "the resumed deploy dispatched again";
  EXPECT_EQ(fake.github().count("POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches"),
            1u);
  ASSERT_EQ(fake.github().deployments().size(), 1u);
  EXPECT_EQ(fake.github().deployments()[0].statuses.back().state, "success");
  // The token went to GitHub only: never into orgd's output.
  EXPECT_EQ((first->stdout_text() + first->stderr_text() + second->stdout_text() +
             second->stderr_text())
                .find(kToken),
            std::string::npos);
}

}  // namespace
}  // namespace orgd
