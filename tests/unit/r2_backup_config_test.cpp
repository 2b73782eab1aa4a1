// secrets.backup.r2 (docs/r2-backups.md): read with file:line errors like the rest of the
// config (the bucket required, unknown keys and providers refused, the prefix's default), and
// its store built with the providers: the one provider offering an object store unless one is
// named, refused when there is none or several, or the named one has none; the bucket name
// checked by the cloudflare provider.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/plugin/registry.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

const std::string kCloudflare =
    "{type: cloudflare, token_env: CF_TOKEN, account_id: 0123456789abcdef0123456789abcdef}";

std::string yaml(const std::string& providers, const std::string& r2) {
  return "org: acme\nproviders:\n" + providers +
         "secrets:\n  master_key_env: ORGD_MASTER_KEY\n  backup:\n    r2: " + r2 + "\n";
}

// The problems of loading `text` and building its providers ("" when none).
std::string problems(const std::string& text) {
  testing::TempDir dir{"orgd-r2-config"};
  try {
    const Config config = load_config_string(text, "orgd.yaml", Environment());
    ProviderEnvironment env;
    env.data_dir = dir.str();
    (void)deploy::Inventory::build(config, ProviderRegistry(), env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(R2BackupConfig, IsReadWithItsDefaults) {
  const Config config = load_config_string(
      yaml("  cf: " + kCloudflare + "\n", "{bucket: acme-backups}"), "orgd.yaml", Environment());
  const auto& r2 = config.secrets.backup.r2;
  EXPECT_TRUE(r2.enabled);
  EXPECT_EQ(r2.bucket, "acme-backups");
  EXPECT_EQ(r2.prefix, "orgd/backups/");
  EXPECT_EQ(r2.provider, "");
  EXPECT_EQ(r2.line, 7);
  EXPECT_TRUE(config.secrets.backup.scheduled());
  EXPECT_FALSE(
      load_config_string("org: acme\n", "orgd.yaml", Environment()).secrets.backup.scheduled());
}

TEST(R2BackupConfig, ProblemsNameFileLineAndKey) {
  const std::string cf = "  cf: " + kCloudflare + "\n";
  EXPECT_THAT(problems(yaml(cf, "{prefix: x/}")),
              HasSubstr("orgd.yaml:7: secrets.backup.r2.bucket: required key missing"));
  EXPECT_THAT(problems(yaml(cf, "{bucket: b-1, buckt: x}")),
              HasSubstr("orgd.yaml:7: secrets.backup.r2.buckt: unknown key"));
  EXPECT_THAT(problems(yaml(cf, "{bucket: b-1, provider: nope}")),
              HasSubstr("orgd.yaml:7: secrets.backup.r2.provider: unknown provider \"nope\""));
  EXPECT_THAT(problems(yaml(cf, "{bucket: [a]}")),
              HasSubstr("orgd.yaml:7: secrets.backup.r2.bucket"));
  EXPECT_THAT(problems(yaml(cf, "{bucket: Not_Valid}")),
              HasSubstr("orgd.yaml:7: secrets.backup.r2.bucket: an R2 bucket name is 3 to 63"));
  EXPECT_THAT(
      problems(yaml(cf, "{bucket: acme-backups, prefix: /abs/}")),
      HasSubstr("orgd.yaml:7: secrets.backup.r2.prefix: a key prefix does not begin with '/'"));
}

TEST(R2BackupConfig, TheStoresProviderIsTheOneOfferingOneOrTheNamedOne) {
  const std::string cf = "  cf: " + kCloudflare + "\n";
  const std::string local = "  files: {type: local}\n";
  EXPECT_THAT(problems(yaml(cf + local, "{bucket: acme-backups}")), IsEmpty());
  EXPECT_THAT(problems(yaml(local, "{bucket: acme-backups}")),
              HasSubstr("orgd.yaml:7: secrets.backup.r2: no provider offers an object store"));
  EXPECT_THAT(problems(yaml(cf + local, "{bucket: acme-backups, provider: files}")),
              HasSubstr("orgd.yaml:8: secrets.backup.r2.provider: provider files (local) has no "
                        "object store"));
  const std::string two = cf + "  cf2: " + kCloudflare + "\n";
  EXPECT_THAT(problems(yaml(two, "{bucket: acme-backups}")),
              HasSubstr("secrets.backup.r2.provider: required when several providers offer an "
                        "object store (cf, cf2)"));
  EXPECT_THAT(problems(yaml(two, "{bucket: acme-backups, provider: cf2}")), IsEmpty());
}

TEST(R2BackupConfig, TheBuiltStoreDescribesItself) {
  testing::TempDir dir{"orgd-r2-config"};
  const Config config = load_config_string(
      yaml("  cf: " + kCloudflare + "\n", "{bucket: acme-backups, prefix: acme/}"), "orgd.yaml",
      Environment());
  ProviderEnvironment env;
  env.data_dir = dir.str();
  const auto set = ProviderSet::build(config, ProviderRegistry(), env);
  ASSERT_NE(set->backup_store(), nullptr);
  EXPECT_EQ(set->backup_store()->describe(), "r2 acme-backups/acme/");
}

}  // namespace
}  // namespace orgd
