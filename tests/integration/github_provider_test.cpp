// The github provider's targets through the SPI, with orgd's real HTTPS client against the fake
// GitHub on loopback: Actions secrets (sealed boxes opened by the fake, pagination, key
// rotation, names refused before any call, organization secrets for selected repositories)
// and workflow deploys (dispatch, the run followed to its end, a GitHub Deployment with its
// statuses, a failing run, cancel, rollback to the previous ref, a resumed target that finds
// its run instead of dispatching again).
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/net/https_client.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/github/actions_secrets.hpp"
#include "plugins/github/workflow_deploys.hpp"
#include "tests/fakes/fake_github.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::FakeGithubServer;
using testing::SecretScope;

constexpr const char* kToken = "ghp_orgdTestTokenCanary0123456789abcdef";

// A config with one github provider at the fake, and what it builds.
class GithubProviderTest : public ::testing::Test {
 protected:
  void SetUp() override { fake_.github().add_token(kToken); }

  std::shared_ptr<ProviderSet> build(const std::string& repos) {
    const std::string yaml = "org: acme\n"
                             "providers:\n"
                             "  gh: {type: github, api_url: '" + fake_.base_url() +
                             "', token_env: GH_TOKEN}\n"
                             "repos:\n" + repos;
    const Config config = load_config_string(yaml, "orgd.yaml", env_);
    ProviderEnvironment provided;
    provided.org = config.org;
    provided.data_dir = dir_.str();
    provided.environment = env_;
    provided.http = make_https_transport_factory(metrics_, env_);
    config_ = config;
    return ProviderSet::build(config, ProviderRegistry{}, provided);
  }

  std::unique_ptr<DeployTarget> deploy_target(const std::string& repo, const std::string& target) {
    auto set = build("  " + repo + ":\n    deploy:\n      prod: " + target + "\n");
    sets_.push_back(set);
    return set->find("gh")->make_deploy_target(config_.repos.at(repo).deploy.at("prod"),
                                               "orgd.yaml");
  }

  FakeGithubServer fake_;
  testing::TempDir dir_{"orgd-github-provider"};
  Environment env_{{{"GH_TOKEN", kToken}}};
  MetricsRegistry metrics_;
  Config config_;
  std::vector<std::shared_ptr<ProviderSet>> sets_;
};

DeployContext context(const std::string& repo, const std::string& deploy_id,
                      const std::string& ref = "v1.2.0") {
  DeployContext c;
  c.repo = repo;
  c.env = "prod";
  c.ref = ref;
  c.deploy_id = deploy_id;
  c.deadline = std::chrono::steady_clock::now() + 30s;
  return c;
}

// ---- Actions secrets ----------------------------------------------------------------------------

TEST_F(GithubProviderTest, ASecretIsSealedToTheRepositoryKeyAndListed) {
  auto set = build("  api:\n    secret_targets:\n      - {provider: gh}\n"
                   "      - {provider: gh, environment: production}\n");
  const auto& targets = set->secret_targets("api");
  ASSERT_EQ(targets.size(), 2u);
  EXPECT_EQ(targets[0]->describe(), "github acme/api");
  EXPECT_EQ(targets[1]->describe(), "github acme/api environment production");

  const Secret value = Secret::from("postgres://user:s3cret-canary@db/api");
  auto put = targets[0]->put("database_url", value);
  ASSERT_TRUE(put) << put.error().message;
  EXPECT_EQ(fake_.github().secret_value(SecretScope::repository("acme", "api"), "DATABASE_URL"),
            std::string(value.expose()))
      << "the fake opened the sealed box with the repository's private key";
  ASSERT_TRUE(targets[1]->put("DATABASE_URL", value));
  EXPECT_TRUE(fake_.github()
                  .secret_value(SecretScope::env("acme", "api", "production"), "DATABASE_URL")
                  .has_value());
  for (const auto& call : fake_.github().calls()) {
    EXPECT_EQ(call.body.find("s3cret-canary"), std::string::npos) << call.path;
  }

  auto listed = targets[0]->list();
  ASSERT_TRUE(listed) << listed.error().message;
  ASSERT_EQ(listed.value().size(), 1u);
  EXPECT_EQ(listed.value()[0].name, "DATABASE_URL");
  EXPECT_TRUE(listed.value()[0].updated_at.has_value());

  ASSERT_TRUE(targets[0]->remove("DATABASE_URL"));
  EXPECT_EQ(targets[0]->remove("DATABASE_URL").error().code, ErrorCode::not_found);
}

TEST_F(GithubProviderTest, TwoHundredOrganizationSecretsArePutAndListedOverTwoPages) {
  auto set = build("  api:\n    secret_targets:\n      - {provider: gh, org: true}\n");
  auto& target = *set->secret_targets("api").at(0);
  for (int i = 0; i < 200; ++i) {
    auto put = target.put("SECRET_" + std::to_string(i), Secret::from("value-" + std::to_string(i)));
    ASSERT_TRUE(put) << i << ": " << put.error().message;
  }
  EXPECT_EQ(fake_.github().count("GET /orgs/{org}/actions/secrets/public-key"), 1u)
      << "the key is fetched once and cached";
  fake_.github().clear_calls();
  auto listed = target.list();
  ASSERT_TRUE(listed) << listed.error().message;
  EXPECT_EQ(listed.value().size(), 200u);
  EXPECT_EQ(fake_.github().count("GET /orgs/{org}/actions/secrets"), 2u) << "100 per page";
  EXPECT_EQ(fake_.github().secret_value(SecretScope::org("acme"), "SECRET_199"), "value-199");
}

TEST_F(GithubProviderTest, ARotatedKeyIsFetchedAgainAndThePutSucceeds) {
  auto set = build("  api:\n    secret_targets:\n      - {provider: gh}\n");
  auto& target = *set->secret_targets("api").at(0);
  ASSERT_TRUE(target.put("TOKEN_A", Secret::from("one")));
  fake_.github().rotate_public_key(SecretScope::repository("acme", "api"));
  auto put = target.put("TOKEN_A", Secret::from("two"));
  ASSERT_TRUE(put) << put.error().message;
  EXPECT_EQ(fake_.github().secret_value(SecretScope::repository("acme", "api"), "TOKEN_A"), "two");
  EXPECT_EQ(fake_.github().count("GET /repos/{owner}/{repo}/actions/secrets/public-key"), 2u);
}

TEST_F(GithubProviderTest, BadNamesAndValuesAreRefusedBeforeAnyCall) {
  auto set = build("  api:\n    secret_targets:\n      - {provider: gh}\n");
  auto& target = *set->secret_targets("api").at(0);
  for (const char* name : {"GITHUB_TOKEN", "github_x", "1PASSWORD", "BAD-NAME", ""}) {
    auto put = target.put(name, Secret::from("value-canary"));
    ASSERT_FALSE(put) << name;
    EXPECT_EQ(put.error().retry, Retry::permanent);
    EXPECT_EQ(put.error().message.find("value-canary"), std::string::npos);
  }
  EXPECT_FALSE(target.put("BIG", Secret::from(std::string(48'001, 'x'))));
  EXPECT_TRUE(fake_.github().calls().empty());
}

TEST_F(GithubProviderTest, OrganizationSecretsForSelectedRepositoriesCarryTheirIds) {
  auto set = build("  api:\n    secret_targets:\n"
                   "      - {provider: gh, org: true, visibility: selected, selected_repos: "
                   "[api, web]}\n");
  ASSERT_TRUE(set->secret_targets("api").at(0)->put("NPM_TOKEN", Secret::from("npm-value")));
  const auto secret = fake_.github().secret(SecretScope::org("acme"), "NPM_TOKEN");
  ASSERT_TRUE(secret.has_value());
  EXPECT_EQ(secret->visibility, "selected");
  EXPECT_EQ(secret->selected_repository_ids,
            (std::vector<std::int64_t>{fake_.github().repository_id("acme", "api"),
                                       fake_.github().repository_id("acme", "web")}));
}

TEST_F(GithubProviderTest, ASecretTargetsSettingsAreCheckedAtLoad) {
  std::string problems;
  try {
    build("  api:\n    secret_targets:\n      - {provider: gh, visibility: all}\n");
  } catch (const ConfigError& e) {
    problems = e.what();
  }
  EXPECT_NE(problems.find("repos.api.secret_targets[0].visibility: only for organization "
                          "secrets"),
            std::string::npos)
      << problems;
}

// ---- Workflow deploys ---------------------------------------------------------------------------

constexpr const char* kWorkflow =
    "{provider: gh, workflow: deploy.yml, inputs: {version: '${ORGD_REF}', deploy_id: "
    "'${ORGD_DEPLOY_ID}'}, poll_interval: 1s}";

TEST_F(GithubProviderTest, ADeployDispatchesTheWorkflowFollowsTheRunAndKeepsADeployment) {
  auto target = deploy_target("api", kWorkflow);
  fake_.github().complete_runs_after_polls(2, "success");
  DeployContext c = context("api", "d-100");
  auto started = target->start(c, {});
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().status, DeployStatus::running);
  EXPECT_EQ(started.value().next_poll_after, std::chrono::milliseconds{1000});
  ASSERT_EQ(fake_.github().runs().size(), 1u);
  const auto run = fake_.github().runs()[0];
  EXPECT_EQ(run.inputs["version"], "v1.2.0");
  EXPECT_EQ(run.inputs["deploy_id"], "d-100");
  EXPECT_EQ(run.ref, "main");
  EXPECT_NE(started.value().handle.find("run=" + std::to_string(run.id)), std::string::npos);
  EXPECT_FALSE(started.value().url.empty());

  c.handle = started.value().handle;
  DeployProgress progress = started.value();
  for (int i = 0; i < 5 && progress.status == DeployStatus::running; ++i) {
    auto polled = target->poll(c);
    ASSERT_TRUE(polled) << polled.error().message;
    progress = polled.value();
  }
  EXPECT_EQ(progress.status, DeployStatus::succeeded) << progress.detail;
  ASSERT_EQ(fake_.github().deployments().size(), 1u);
  const auto deployment = fake_.github().deployments()[0];
  EXPECT_EQ(deployment.ref, "v1.2.0");
  EXPECT_EQ(deployment.environment, "prod");
  EXPECT_FALSE(deployment.auto_merge);
  ASSERT_TRUE(deployment.required_contexts.has_value());
  EXPECT_TRUE(deployment.required_contexts->empty());
  std::vector<std::string> states;
  for (const auto& s : deployment.statuses) states.push_back(s.state);
  EXPECT_EQ(states, (std::vector<std::string>{"in_progress", "success"}));
  EXPECT_EQ(deployment.statuses.back().log_url, progress.url);
  for (const auto& call : fake_.github().calls()) {
    EXPECT_EQ(call.header("authorization"), "Bearer " + std::string(kToken)) << call.path;
  }
}

TEST_F(GithubProviderTest, AFailingRunFailsTheDeployAndItsDeployment) {
  auto target = deploy_target("api", kWorkflow);
  fake_.github().complete_runs_after_polls(1, "failure");
  DeployContext c = context("api", "d-101");
  auto started = target->start(c, {});
  ASSERT_TRUE(started);
  c.handle = started.value().handle;
  auto polled = target->poll(c);
  for (int i = 0; i < 3 && polled && polled.value().status == DeployStatus::running; ++i) {
    polled = target->poll(c);
  }
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::failed);
  EXPECT_NE(polled.value().error.find("concluded failure"), std::string::npos);
  EXPECT_EQ(fake_.github().deployments()[0].statuses.back().state, "failure");
}

TEST_F(GithubProviderTest, CancelCancelsTheRun) {
  auto target = deploy_target("api", kWorkflow);
  DeployContext c = context("api", "d-102");
  auto started = target->start(c, {});
  ASSERT_TRUE(started);
  c.handle = started.value().handle;
  auto cancelled = target->cancel(c);
  ASSERT_TRUE(cancelled) << cancelled.error().message;
  EXPECT_EQ(fake_.github().count("POST /repos/{owner}/{repo}/actions/runs/{run_id}/cancel"), 1u);
  auto polled = target->poll(c);
  for (int i = 0; i < 3 && polled && polled.value().status == DeployStatus::running; ++i) {
    polled = target->poll(c);
  }
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::failed);
  EXPECT_NE(polled.value().error.find("cancelled"), std::string::npos) << polled.value().error;
}

TEST_F(GithubProviderTest, RollbackDispatchesThePreviousRefAndWaitsForItsRun) {
  auto target = deploy_target("api", kWorkflow);
  fake_.github().complete_runs_after_polls(1, "success");
  DeployContext c = context("api", "d-103", "v2.0.0");
  auto none = target->rollback(c, {});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().retry, Retry::permanent) << "nothing known to go back to";
  c.previous = PreviousDeploy{"d-090", "v1.9.0", "run=1"};
  auto back = target->rollback(c, {});
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back.value().status, DeployStatus::succeeded);
  ASSERT_EQ(fake_.github().runs().size(), 1u);
  EXPECT_EQ(fake_.github().runs()[0].inputs["version"], "v1.9.0");
  EXPECT_EQ(fake_.github().deployments()[0].ref, "v1.9.0");
}

TEST_F(GithubProviderTest, AResumedTargetFindsItsRunInsteadOfDispatchingAgain) {
  // Without return_run_details (older GHES) the run is found by its title.
  fake_.github().set_return_run_details_supported(false);
  fake_.github().set_run_name("deploy.yml", "deploy ${{ inputs.deploy_id }}");
  auto first = deploy_target("api", kWorkflow);
  DeployContext c = context("api", "d-104");
  auto started = first->start(c, {});
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().handle.find("run="), std::string::npos) << started.value().handle;
  EXPECT_NE(started.value().handle.find("since="), std::string::npos);

  // orgd restarts: a new target, the handle from the record.
  auto resumed = deploy_target("api", kWorkflow);
  c.handle = started.value().handle;
  auto polled = resumed->poll(c);
  ASSERT_TRUE(polled) << polled.error().message;
  EXPECT_NE(polled.value().handle.find("run=" + std::to_string(fake_.github().runs()[0].id)),
            std::string::npos)
      << polled.value().handle;
  // Crashed before even the handle was written: recover() finds the run by the deploy id.
  DeployContext lost = context("api", "d-104");
  auto recovered = resumed->recover(lost);
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(recovered.value().status, DeployStatus::running);
  EXPECT_EQ(fake_.github().runs().size(), 1u) << "one dispatch, however it was resumed";
  EXPECT_EQ(resumed->recover(context("api", "d-999")).error().code, ErrorCode::not_found);
}

TEST_F(GithubProviderTest, AWorkflowTargetsSettingsAreCheckedAtLoad) {
  std::string problems;
  try {
    deploy_target("api", "{provider: gh, inputs: {v: '${ORGD_VERSION}'}}");
  } catch (const ConfigError& e) {
    problems = e.what();
  }
  EXPECT_NE(problems.find("deploy.prod.workflow: required key missing"),
            std::string::npos)
      << problems;
  EXPECT_NE(problems.find("unknown placeholder ${ORGD_VERSION}"), std::string::npos) << problems;
}

}  // namespace
}  // namespace orgd
