// Which provider offers what (DESIGN.md §8): ProviderSet builds every provider of a config and
// refuses a target whose provider lacks the capability it needs, naming file and line; secret
// targets are built with their provider's validation; capabilities are listed by name.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/plugin/registry.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

// A provider with secret targets only, as a cloud's secrets store would be.
class VaultOnlyTarget final : public SecretTarget {
 public:
  explicit VaultOnlyTarget(std::string where) : where_(std::move(where)) {}
  std::string describe() const override { return "vault " + where_; }
  Result<std::vector<SecretInfo>> list() override { return std::vector<SecretInfo>{}; }
  Result<Ok> put(const std::string&, const Secret&) override { return Ok{}; }
  Result<Ok> remove(const std::string& name) override { return not_found(name); }

 private:
  std::string where_;
};

class VaultOnlyProvider final : public Provider {
 public:
  explicit VaultOnlyProvider(std::string name) : Provider(std::move(name), "remote") {}
  Capabilities capabilities() const override { return {.secret_target = true}; }
  std::unique_ptr<SecretTarget> make_secret_target(const SecretTargetConfig& target,
                                                   const std::string& source_file) override {
    SettingsReader reader = secret_target_settings(target, source_file);
    const std::string path = reader.required_string("path");
    reader.finish();
    return std::make_unique<VaultOnlyTarget>(path);
  }
};

ProviderRegistry registry_with_vault() {
  ProviderRegistry registry;
  registry.add_factory("remote", [](const ProviderConfig& config, const ProviderServices&,
                                    const std::string&) {
    return std::make_unique<VaultOnlyProvider>(config.name);
  });
  return registry;
}

std::string problems_of(const std::string& yaml, const std::string& data_dir) {
  try {
    const Config config = load_config_string(yaml, "orgd.yaml", Environment());
    ProviderEnvironment env;
    env.data_dir = data_dir;
    (void)deploy::Inventory::build(config, registry_with_vault(), env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no ConfigError)";
}

const std::string kProviders =
    "org: acme\n"                       // 1
    "providers:\n"                      // 2
    "  files: {type: local}\n"          // 3
    "  vault: {type: remote}\n"         // 4
    "repos:\n"                          // 5
    "  api:\n";                         // 6

TEST(ProviderSetTest, ADeployTargetOnAProviderWithoutDeployTargetsIsAConfigErrorWithItsLine) {
  testing::TempDir dir;
  const std::string problems = problems_of(kProviders +
                                               "    deploy:\n"                  // 7
                                               "      dev: {provider: vault}\n",  // 8
                                           dir.str());
  EXPECT_NE(problems.find("orgd.yaml:8: repos.api.deploy.dev.provider: provider vault (remote) "
                          "has no deploy targets (it offers: secret_target)"),
            std::string::npos)
      << problems;
}

TEST(ProviderSetTest, ASecretTargetOnAProviderWithoutSecretTargetsIsAConfigErrorWithItsLine) {
  testing::TempDir dir;
  const std::string problems = problems_of(kProviders +
                                               "    secret_targets:\n"            // 7
                                               "      - {provider: vault, path: kv/api}\n"  // 8
                                               "      - {provider: files}\n",     // 9
                                           dir.str());
  EXPECT_NE(problems.find("orgd.yaml:9: repos.api.secret_targets[1].provider: provider files "
                          "(local) has no secret targets (it offers: deploy_target)"),
            std::string::npos)
      << problems;
  EXPECT_EQ(problems.find("secret_targets[0]"), std::string::npos) << problems;
}

TEST(ProviderSetTest, SecretTargetsAreBuiltWithTheirProvidersValidation) {
  testing::TempDir dir;
  const std::string missing = problems_of(kProviders +
                                              "    secret_targets:\n"
                                              "      - {provider: vault, prune: true}\n",
                                          dir.str());
  EXPECT_NE(missing.find("orgd.yaml:8: repos.api.secret_targets[0].path: required key missing"),
            std::string::npos)
      << missing;

  const Config config = load_config_string(kProviders +
                                               "    secret_targets:\n"
                                               "      - {provider: vault, path: kv/api, prune: true}\n",
                                           "orgd.yaml", Environment());
  ASSERT_EQ(config.repos.at("api").secret_targets.size(), 1u);
  EXPECT_TRUE(config.repos.at("api").secret_targets[0].prune);
  ProviderEnvironment env;
  env.data_dir = dir.str();
  const auto set = ProviderSet::build(config, registry_with_vault(), env);
  ASSERT_EQ(set->secret_targets("api").size(), 1u);
  EXPECT_EQ(set->secret_targets("api")[0]->describe(), "vault kv/api");
  EXPECT_TRUE(set->secret_targets("web").empty());
  ASSERT_NE(set->find("vault"), nullptr);
  EXPECT_EQ(set->find("vault")->capabilities().names(), std::vector<std::string>{"secret_target"});
  EXPECT_EQ(set->find("files")->capabilities().names(), std::vector<std::string>{"deploy_target"});
}

TEST(ProviderSetTest, ASecretTargetNamingNoDeclaredProviderIsReportedByTheLoader) {
  const std::string yaml = kProviders +
                           "    secret_targets:\n"
                           "      - {provider: nowhere}\n"
                           "      - {path: x}\n"
                           "      - just-a-name\n";
  std::string problems;
  try {
    (void)load_config_string(yaml, "orgd.yaml", Environment());
  } catch (const ConfigError& e) {
    problems = e.what();
  }
  EXPECT_NE(problems.find("orgd.yaml:8: repos.api.secret_targets[0].provider: unknown provider "
                          "\"nowhere\""),
            std::string::npos)
      << problems;
  EXPECT_NE(problems.find("orgd.yaml:9: repos.api.secret_targets[1].provider: required key "
                          "missing"),
            std::string::npos)
      << problems;
  EXPECT_NE(problems.find("orgd.yaml:10: repos.api.secret_targets[2]: expected a map"),
            std::string::npos)
      << problems;
}

}  // namespace
}  // namespace orgd
