// The github provider's settings: defaults, every key checked with file:line:key, the
// token/App exclusivity, api_url's loopback rule; the provider on today's SPI.
#include "plugins/github/github_settings.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "daemon/core/config.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/github/github_provider.hpp"

namespace orgd::github {
namespace {

using ::testing::HasSubstr;

// The config around one github provider block (`block` is indented under providers.gh), so
// lines are the file's: providers.gh starts on line 3.
Config load(const std::string& block) {
  const std::string yaml = "org: acme\nproviders:\n  gh:\n    type: github\n" + block;
  return load_config_string(yaml, "orgd.yaml", Environment());
}

Settings parse(const std::string& block) {
  const Config config = load(block);
  return parse_settings(config.providers.at("gh"), "orgd.yaml", config.org);
}

std::string problems(const std::string& block) {
  try {
    (void)parse(block);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(GithubSettingsTest, DefaultsWithAToken) {
  const Settings s = parse("    token_env: GH_TOKEN\n");
  EXPECT_EQ(s.name, "gh");
  EXPECT_EQ(s.api_url, "https://api.github.com");
  EXPECT_EQ(s.token_env, "GH_TOKEN");
  EXPECT_FALSE(s.app);
  EXPECT_EQ(s.owner, "acme");  // the org name
  EXPECT_EQ(s.ca_file, "");
  EXPECT_EQ(s.webhook_secret_env, "GITHUB_WEBHOOK_SECRET");
  EXPECT_EQ(s.webhook_dedup_window, std::chrono::hours{24});
  EXPECT_EQ(s.api_version, "2022-11-28");
}

TEST(GithubSettingsTest, EveryKeyRead) {
  const Settings s = parse(
      "    api_url: http://127.0.0.1:8443/api/v3/\n"
      "    app: {id: 12345, installation_id: 67890, private_key_file: /etc/orgd/app.pem}\n"
      "    owner: acme-corp\n"
      "    ca_file: /etc/orgd/ca.pem\n"
      "    webhook_secret_env: HOOK_SECRET\n"
      "    webhook_dedup_window: 72h\n"
      "    api_version: 2026-03-10\n");
  EXPECT_EQ(s.api_url, "http://127.0.0.1:8443/api/v3");  // trailing slash dropped
  EXPECT_FALSE(s.token_env);
  ASSERT_TRUE(s.app);
  EXPECT_EQ(s.app->id, "12345");
  EXPECT_EQ(s.app->installation_id, "67890");
  EXPECT_EQ(s.app->private_key_file, "/etc/orgd/app.pem");
  EXPECT_EQ(s.owner, "acme-corp");
  EXPECT_EQ(s.ca_file, "/etc/orgd/ca.pem");
  EXPECT_EQ(s.webhook_secret_env, "HOOK_SECRET");
  EXPECT_EQ(s.webhook_dedup_window, std::chrono::hours{72});
  EXPECT_EQ(s.api_version, "2026-03-10");
}

TEST(GithubSettingsTest, AppClientIdAccepted) {
  const Settings s =
      parse("    app: {id: Iv23liAbC.9, installation_id: '1', private_key_file: k.pem}\n");
  ASSERT_TRUE(s.app);
  EXPECT_EQ(s.app->id, "Iv23liAbC.9");
}

TEST(GithubSettingsTest, TokenOrAppExactlyOne) {
  EXPECT_THAT(problems(""), HasSubstr("orgd.yaml:3: providers.gh: needs token_env"));
  EXPECT_THAT(problems("    token_env: T\n"
                       "    app: {id: 1, installation_id: 2, private_key_file: k.pem}\n"),
              HasSubstr("orgd.yaml:3: providers.gh: token_env and app are exclusive"));
}

TEST(GithubSettingsTest, ProblemsNameFileLineAndKey) {
  const std::string text = problems(
      "    token_env: 1BAD\n"                 // line 5
      "    api_url: http://api.github.com\n"  // 6
      "    owner: -acme\n"                    // 7
      "    webhook_dedup_window: 200h\n"      // 8
      "    api_version: latest\n"             // 9
      "    colour: blue\n"                    // 10
      "    webhook_secret_env: ''\n");        // 11
  EXPECT_THAT(text, HasSubstr("orgd.yaml:5: providers.gh.token_env: must be an environment "
                              "variable name"));
  EXPECT_THAT(text, HasSubstr("orgd.yaml:6: providers.gh.api_url: http:// is accepted for "
                              "loopback hosts only"));
  EXPECT_THAT(text, HasSubstr("orgd.yaml:7: providers.gh.owner: must be a GitHub organization"));
  EXPECT_THAT(text, HasSubstr("orgd.yaml:8: providers.gh.webhook_dedup_window: must be between"));
  EXPECT_THAT(text, HasSubstr("orgd.yaml:9: providers.gh.api_version: must be a GitHub REST API "
                              "version"));
  EXPECT_THAT(text, HasSubstr("orgd.yaml:10: providers.gh.colour: unknown key"));
  EXPECT_THAT(text, HasSubstr("orgd.yaml:11: providers.gh.webhook_secret_env: must not be empty"));
}

TEST(GithubSettingsTest, AppProblems) {
  const std::string text = problems(
      "    app:\n"                    // line 5
      "      id: 'x y'\n"             // 6
      "      installation_id: abc\n"  // 7
      "      key: k.pem\n");          // 8
  EXPECT_THAT(text, HasSubstr("orgd.yaml:6: providers.gh.app.id: must be the App's client ID"));
  EXPECT_THAT(text, HasSubstr("orgd.yaml:7: providers.gh.app.installation_id: must be a number"));
  EXPECT_THAT(text, HasSubstr("orgd.yaml:8: providers.gh.app.key: unknown key"));
  EXPECT_THAT(text, HasSubstr("providers.gh.app.private_key_file: required key missing"));
  EXPECT_THAT(problems("    app: 42\n"),
              HasSubstr("orgd.yaml:5: providers.gh.app: expected a map"));
}

TEST(GithubProviderTest, RegisteredWithDeployAndSecretTargetsAndAHealthProbe) {
  const Config config = load("    token_env: GH_TOKEN\n");
  ProviderRegistry registry;
  ASSERT_TRUE(registry.supports("github"));
  auto provider = registry.create(config.providers.at("gh"), ProviderEnvironment{}, "orgd.yaml");
  ASSERT_TRUE(provider);
  EXPECT_EQ(provider->type(), "github");
  EXPECT_TRUE(provider->capabilities().health_probe);
  EXPECT_TRUE(provider->capabilities().deploy_target);
  EXPECT_TRUE(provider->capabilities().secret_target);
  EXPECT_FALSE(provider->capabilities().credential_issuer);
  auto* github = dynamic_cast<GithubProvider*>(provider.get());
  ASSERT_NE(github, nullptr);
  EXPECT_EQ(github->settings().token_env, "GH_TOKEN");
  EXPECT_EQ(github->settings().owner, "");  // no org given

  ProviderEnvironment with_org;
  with_org.org = "acme";
  auto owned = registry.create(config.providers.at("gh"), with_org, "orgd.yaml");
  EXPECT_EQ(dynamic_cast<GithubProvider*>(owned.get())->settings().owner, "acme");
}

TEST(GithubProviderTest, ADeployTargetsSettingsAreCheckedWithFileAndLine) {
  const std::string yaml =
      "org: acme\n"
      "providers:\n"
      "  gh: {type: github, token_env: GH_TOKEN}\n"
      "repos:\n"
      "  api:\n"
      "    deploy:\n"
      "      production: {provider: gh, workflow: deploy.yml, poll_interval: 10ms}\n";
  const Config config = load_config_string(yaml, "orgd.yaml", Environment());
  try {
    ProviderEnvironment env;
    env.org = "acme";
    (void)deploy::Inventory::build(config, ProviderRegistry{}, env);
    FAIL() << "a poll interval under a second was accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("orgd.yaml:7: repos.api.deploy.production.poll_interval: at "
                                    "least 1s"));
  }
}

TEST(GithubProviderTest, InvalidSettingsStopTheRegistry) {
  const Config config = load("    token_env: GH_TOKEN\n    owner: 'a b'\n");
  ProviderRegistry registry;
  try {
    (void)registry.create(config.providers.at("gh"), ProviderEnvironment{}, "orgd.yaml");
    FAIL() << "invalid settings accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("orgd.yaml:6: providers.gh.owner"));
  }
}

}  // namespace
}  // namespace orgd::github
