// The cloudflare provider's settings and its targets': defaults, every key checked with
// file:line:key, api_url's loopback rule, steps and Containers choices, the secret target.
#include "plugins/cloudflare/cloudflare_settings.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "daemon/core/config.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/cloudflare/cloudflare_provider.hpp"

namespace orgd::cloudflare {
namespace {

using ::testing::HasSubstr;

constexpr const char* kAccount = "0123456789abcdef0123456789abcdef";

// providers.cf starts on line 3 of the file.
Config load(const std::string& block, const std::string& repos = "") {
  const std::string yaml = "org: acme\nproviders:\n  cf:\n    type: cloudflare\n" + block +
                           (repos.empty() ? "" : "repos:\n" + repos);
  return load_config_string(yaml, "orgd.yaml", Environment());
}

std::string base() { return std::string("    token_env: CF_TOKEN\n    account_id: ") + kAccount + "\n"; }

Settings parse(const std::string& block) {
  return parse_settings(load(block).providers.at("cf"), "orgd.yaml");
}

template <class F>
std::string problems(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string settings_problems(const std::string& block) {
  return problems([&] { (void)parse(block); });
}

// repos.web.deploy.prod: <target>, on line 7 of the file.
DeployTargetSettings target(const std::string& yaml) {
  const Config config = load(base(), "  web:\n    deploy:\n      prod: " + yaml + "\n");
  return parse_deploy_target(config.repos.at("web").deploy.at("prod"), "orgd.yaml");
}

std::string target_problems(const std::string& yaml) {
  return problems([&] { (void)target(yaml); });
}

TEST(CloudflareSettingsTest, Defaults) {
  const Settings s = parse(base());
  EXPECT_EQ(s.name, "cf");
  EXPECT_EQ(s.api_url, "https://api.cloudflare.com/client/v4");
  EXPECT_EQ(s.token_env, "CF_TOKEN");
  EXPECT_EQ(s.account_id, kAccount);
  EXPECT_EQ(s.ca_file, "");
  EXPECT_EQ(s.r2_url, "");
  EXPECT_EQ(s.r2_jurisdiction, "");
}

TEST(CloudflareSettingsTest, EveryKeyRead) {
  const Settings s = parse(base() +
                           "    api_url: http://127.0.0.1:8080/client/v4/\n"
                           "    ca_file: /etc/orgd/ca.pem\n"
                           "    r2_url: https://r2.example.com\n"
                           "    r2_jurisdiction: eu\n");
  EXPECT_EQ(s.api_url, "http://127.0.0.1:8080/client/v4") << "trailing slash dropped";
  EXPECT_EQ(s.ca_file, "/etc/orgd/ca.pem");
  EXPECT_EQ(s.r2_url, "https://r2.example.com");
  EXPECT_EQ(s.r2_jurisdiction, "eu");
}

TEST(CloudflareSettingsTest, RequiredKeysAndUnknownKeysNameFileLineAndKey) {
  const std::string missing = settings_problems("    ca_file: x\n");
  EXPECT_THAT(missing, HasSubstr("orgd.yaml:3: providers.cf.token_env: required key missing"));
  EXPECT_THAT(missing, HasSubstr("providers.cf.account_id: required key missing"));
  EXPECT_THAT(settings_problems(base() + "    zone: abc\n"),
              HasSubstr("orgd.yaml:7: providers.cf.zone: unknown key"));
}

TEST(CloudflareSettingsTest, BadValuesAreRefused) {
  EXPECT_THAT(settings_problems("    token_env: CF-TOKEN\n    account_id: " + std::string(kAccount) + "\n"),
              HasSubstr("orgd.yaml:5: providers.cf.token_env: must be an environment variable name"));
  EXPECT_THAT(settings_problems("    token_env: T\n    account_id: acme\n"),
              HasSubstr("orgd.yaml:6: providers.cf.account_id: must be the account's id"));
  EXPECT_THAT(settings_problems(base() + "    api_url: http://api.cloudflare.com/client/v4\n"),
              HasSubstr("providers.cf.api_url: http:// is accepted for loopback hosts only"));
  EXPECT_THAT(settings_problems(base() + "    api_url: https://user:pw@api.example.com\n"),
              HasSubstr("providers.cf.api_url: must not carry credentials"));
  EXPECT_THAT(settings_problems(base() + "    api_url: https://api.example.com/?x=1\n"),
              HasSubstr("providers.cf.api_url: must not have a query"));
  EXPECT_THAT(settings_problems(base() + "    r2_jurisdiction: mars\n"),
              HasSubstr("providers.cf.r2_jurisdiction: expected default, eu, fedramp or us"));
}

TEST(CloudflareSettingsTest, AWorkersTargetWithDefaults) {
  const auto t = target("{provider: cf, script: acme-web, dir: /srv/web/dist}");
  ASSERT_FALSE(t.containers);
  EXPECT_EQ(t.workers.script, "acme-web");
  EXPECT_EQ(t.workers.dir, "/srv/web/dist");
  EXPECT_EQ(t.workers.main_module, "index.js");
  EXPECT_EQ(t.workers.compatibility_date, "");
  EXPECT_EQ(t.workers.steps, (std::vector<int>{100}));
}

TEST(CloudflareSettingsTest, AWorkersTargetWithEveryKey) {
  const auto t = target(
      "{provider: cf, script: acme-web, dir: dist, main_module: worker.mjs, "
      "compatibility_date: 2026-09-01, steps: [10, 50, 100]}");
  EXPECT_EQ(t.workers.main_module, "worker.mjs");
  EXPECT_EQ(t.workers.compatibility_date, "2026-09-01");
  EXPECT_EQ(t.workers.steps, (std::vector<int>{10, 50, 100}));
}

TEST(CloudflareSettingsTest, StepsMustIncreaseStayInRangeAndEndAt100) {
  EXPECT_THAT(target_problems("{provider: cf, script: w, dir: d, steps: [50, 10, 100]}"),
              HasSubstr("orgd.yaml:10: deploy.prod.steps: steps must increase"));
  EXPECT_THAT(target_problems("{provider: cf, script: w, dir: d, steps: [10, 50]}"),
              HasSubstr("deploy.prod.steps: the last step must be 100"));
  EXPECT_THAT(target_problems("{provider: cf, script: w, dir: d, steps: [0, 100]}"),
              HasSubstr("each step is a percentage from 1 to 100 (got 0)"));
  EXPECT_THAT(target_problems("{provider: cf, script: w, dir: d, steps: [ten, 100]}"),
              HasSubstr("(got ten)"));
  EXPECT_THAT(target_problems("{provider: cf, script: w, dir: d, steps: []}"),
              HasSubstr("the last step must be 100"));
}

TEST(CloudflareSettingsTest, WorkersTargetProblemsNameTheirKeys) {
  EXPECT_THAT(target_problems("{provider: cf, dir: d}"),
              HasSubstr("deploy.prod.script: required: the Worker's name"));
  EXPECT_THAT(target_problems("{provider: cf, script: Acme Web, dir: d}"),
              HasSubstr("deploy.prod.script: must be a Worker name"));
  EXPECT_THAT(target_problems("{provider: cf, script: w}"),
              HasSubstr("deploy.prod.dir: required key missing"));
  EXPECT_THAT(target_problems("{provider: cf, script: w, dir: d, compatibility_date: soon}"),
              HasSubstr("deploy.prod.compatibility_date: must be a date YYYY-MM-DD"));
  EXPECT_THAT(target_problems("{provider: cf, script: w, dir: d, main_module: ../x.js}"),
              HasSubstr("deploy.prod.main_module: must be a file name inside dir"));
  EXPECT_THAT(target_problems("{provider: cf, script: w, dir: d, image: x}"),
              HasSubstr("deploy.prod.image: only for a Containers target"));
  EXPECT_THAT(target_problems("{provider: cf, script: w, dir: d, routes: [x]}"),
              HasSubstr("deploy.prod.routes: unknown key"));
}

TEST(CloudflareSettingsTest, AContainersTarget) {
  const auto t = target("{provider: cf, application: app-123, image: registry.example/web:v2}");
  ASSERT_TRUE(t.containers);
  EXPECT_EQ(t.app.application, "app-123");
  EXPECT_EQ(t.app.image, "registry.example/web:v2");
  EXPECT_EQ(t.app.step_percentage, 100);
  EXPECT_TRUE(t.app.steps.empty());
  EXPECT_EQ(t.app.kind, "full_auto");

  const auto stepped = target(
      "{provider: cf, application: app-123, image: i, steps: [10, 100], poll_interval: 1s}");
  EXPECT_EQ(stepped.app.steps, (std::vector<int>{10, 100}));
  EXPECT_EQ(stepped.app.step_percentage, 0);
  EXPECT_EQ(stepped.app.poll_interval, std::chrono::seconds{1});
  EXPECT_EQ(target("{provider: cf, application: a, image: i, step_percentage: 25}").app.step_percentage,
            25);
}

TEST(CloudflareSettingsTest, ContainersTargetProblems) {
  EXPECT_THAT(target_problems("{provider: cf, application: a}"),
              HasSubstr("deploy.prod.image: required key missing"));
  EXPECT_THAT(target_problems("{provider: cf, application: a, image: i, step_percentage: 30}"),
              HasSubstr("deploy.prod.step_percentage: one of 5, 10, 20, 25, 50, 100"));
  EXPECT_THAT(target_problems("{provider: cf, application: a, image: i, steps: [5, 100]}"),
              HasSubstr("from 10 to 100 (got 5)"));
  EXPECT_THAT(
      target_problems("{provider: cf, application: a, image: i, step_percentage: 10, steps: [10, 100]}"),
      HasSubstr("step_percentage and steps are exclusive"));
  EXPECT_THAT(target_problems("{provider: cf, application: a, image: i, script: w}"),
              HasSubstr("deploy.prod.script: a target is a Worker (script) or an application"));
  EXPECT_THAT(target_problems("{provider: cf, application: a, image: i, dir: d}"),
              HasSubstr("deploy.prod.dir: a Containers target (application) has no dir"));
  EXPECT_THAT(target_problems("{provider: cf, application: a, image: i, kind: sometimes}"),
              HasSubstr("deploy.prod.kind: expected full_auto or full_manual"));
}

TEST(CloudflareSettingsTest, TheSecretTargetNamesItsWorker) {
  const Config config = load(base(), "  web:\n    secret_targets:\n"
                                     "      - {provider: cf, script: acme-web}\n"
                                     "      - {provider: cf}\n"
                                     "      - {provider: cf, script: w, environment: x}\n");
  const auto& targets = config.repos.at("web").secret_targets;
  EXPECT_EQ(parse_secret_script(targets.at(0), "orgd.yaml"), "acme-web");
  EXPECT_THAT(problems([&] { (void)parse_secret_script(targets.at(1), "orgd.yaml"); }),
              HasSubstr("repos.web.secret_targets[1].script: required key missing"));
  EXPECT_THAT(problems([&] { (void)parse_secret_script(targets.at(2), "orgd.yaml"); }),
              HasSubstr("secret_targets[2].environment: unknown key"));
}

TEST(CloudflareSettingsTest, TheRegistryBuildsTheProviderWithItsCapabilities) {
  const Config config = load(base());
  ProviderRegistry registry;
  ASSERT_TRUE(registry.supports("cloudflare"));
  ProviderEnvironment env{"/tmp"};
  auto provider = registry.create(config.providers.at("cf"), env, "orgd.yaml");
  ASSERT_TRUE(provider);
  EXPECT_EQ(provider->type(), "cloudflare");
  const auto caps = provider->capabilities();
  EXPECT_TRUE(caps.deploy_target);
  EXPECT_TRUE(caps.secret_target);
  EXPECT_TRUE(caps.health_probe);
  EXPECT_NE(provider->health_probe(), nullptr);
  EXPECT_THAT(problems([&] {
                (void)registry.create(load("    token_env: T\n").providers.at("cf"), env,
                                      "orgd.yaml");
              }),
              HasSubstr("providers.cf.account_id: required key missing"));
}

}  // namespace
}  // namespace orgd::cloudflare
