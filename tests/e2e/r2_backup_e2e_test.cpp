// Vault backups in R2 through the binaries (docs/r2-backups.md): `orgd --check-config` builds
// the store (a bad bucket name is exit 2 naming file:line), `orgctl secrets backup --to-r2`
// writes a passphrase backup to the fake R2 and prints its key, `orgctl secrets backups` lists
// it, `orgctl secrets restore r2://KEY` and `--from-r2 KEY` bring the value back (the fake
// Worker sees it again). No value, token or derived key in any output, nor in the clear in
// anything the fake S3 was sent.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "tests/fakes/fake_cloudflare.hpp"
#include "tests/fakes/fake_s3.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/secret_values.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::wait_until;

constexpr const char* kCfToken = "cf-r2-e2e-token-canary-0a9b8c7d";

struct Ran {
  std::optional<int> status;
  std::string out, err;
};

class R2BackupE2e : public ::testing::Test {
 protected:
  R2BackupE2e() : master_key_(testing::random_master_key_base64()) {
    cf_.cloudflare().add_token(kCfToken);
    cf_.cloudflare().add_worker("acme-api");
    testing::connect_r2(cf_.cloudflare(), s3_.s3());
  }

  std::string config(const std::string& bucket = "acme-backups") {
    return "org: acme\n"
           "nats:\n  urls: [" +
           server_.url() + "]\n  data_dir: " + data_.str() +
           "\n"
           "http:\n  enabled: false\n"
           "providers:\n"
           "  cf: {type: cloudflare, api_url: '" +
           cf_.base_url() +
           "', token_env: CF_TOKEN, "
           "account_id: " +
           cf_.cloudflare().account_id() + ", r2_url: '" + s3_.base_url() +
           "'}\n"
           "repos:\n"
           "  api:\n    secrets: [DATABASE_URL]\n"
           "    secret_targets:\n      - {provider: cf, script: acme-api}\n"
           "secrets:\n  master_key_env: ORGD_MASTER_KEY\n  sync_interval: 0\n"
           "  backup: {interval: 24h, keep: 3, r2: {bucket: " +
           bucket + "}}\n";
  }

  Ran run(std::vector<std::string> argv, std::map<std::string, std::string> env = {}) {
    SubprocessOptions options;
    options.argv = std::move(argv);
    options.env = std::move(env);
    options.unset_env = testing::kOutsideEnv;
    options.cwd = work_.path();
    Subprocess p(std::move(options));
    Ran ran;
    ran.status = p.wait_for_exit(60s);
    if (!ran.status) p.kill();
    ran.out = p.stdout_text();
    ran.err = p.stderr_text();
    outputs_ += ran.out + ran.err;
    return ran;
  }

  Ran orgctl(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv = {ORGCTL_BINARY, "--server", server_.url(), "--org", "acme"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(std::move(argv), std::move(env));
  }

  std::unique_ptr<Subprocess> start_orgd() {
    const auto path = work_.path() / "orgd.yaml";
    testing::write_file(path, config());
    SubprocessOptions options;
    options.argv = {ORGD_DAEMON_BINARY, "--config", path.string()};
    options.unset_env = testing::kOutsideEnv;
    options.env = {{"CF_TOKEN", kCfToken}, {"ORGD_MASTER_KEY", master_key_}};
    options.cwd = work_.path();
    auto orgd = std::make_unique<Subprocess>(std::move(options));
    EXPECT_TRUE(wait_until(
        [&] {
          auto reply = testing::api_call(client_.get(), "org.acme.api.secrets.key", "{}", 1s);
          return (reply && !reply->error_code) || !orgd->running();
        },
        30s));
    EXPECT_TRUE(orgd->running()) << orgd->describe();
    return orgd;
  }

  bool worker_has(const std::string& value) {
    const auto secrets = cf_.cloudflare().secrets("acme-api");
    const auto it = secrets.find("DATABASE_URL");
    return it != secrets.end() && it->second == value;
  }

  testing::NatsServer server_;
  testing::FakeCloudflareServer cf_;
  testing::FakeS3Server s3_;
  TempDir data_{"orgd-r2-e2e-data"};
  TempDir work_{"orgd-r2-e2e-work"};
  testing::NatsConnectionPtr client_ = testing::connect_client(server_.url());
  std::string master_key_;
  std::string outputs_;
};

TEST_F(R2BackupE2e, CheckConfigBuildsTheStore) {
  testing::write_file(work_.path() / "good.yaml", config());
  testing::write_file(work_.path() / "bad.yaml", config("Bad_Bucket"));
  auto good = run({ORGD_DAEMON_BINARY, "--check-config", "--config", "good.yaml"});
  EXPECT_EQ(good.status, 0) << good.out << good.err;
  auto bad = run({ORGD_DAEMON_BINARY, "--check-config", "--config", "bad.yaml"});
  EXPECT_EQ(bad.status, 2) << bad.out << bad.err;
  EXPECT_THAT(bad.out + bad.err,
              HasSubstr("bad.yaml:17: secrets.backup.r2.bucket: an R2 bucket name"));
}

TEST_F(R2BackupE2e, OrgctlBacksUpToR2ListsAndRestoresFromIt) {
  const std::string db = testing::canary("db");
  testing::write_file(work_.path() / "value.txt", db);
  auto orgd = start_orgd();
  ASSERT_EQ(orgctl({"secrets", "set", "DATABASE_URL", "--scope", "api", "--from-file", "value.txt"})
                .status,
            0);
  ASSERT_TRUE(wait_until([&] { return worker_has(db); }, 30s));

  const std::map<std::string, std::string> pass{{"PASS", "an r2 backup passphrase"}};
  auto backup = orgctl({"secrets", "backup", "--to-r2", "--passphrase-env", "PASS"}, pass);
  ASSERT_EQ(backup.status, 0) << backup.err;
  EXPECT_THAT(backup.out, HasSubstr("wrote r2://orgd-vault-"));
  EXPECT_THAT(backup.out, HasSubstr("to r2 acme-backups/orgd/backups/: 1 secrets"));
  const auto at = backup.out.find("r2://");
  const std::string key = backup.out.substr(at + 5, backup.out.find(' ', at) - at - 5);
  ASSERT_EQ(s3_.s3().objects("acme-backups").count("orgd/backups/" + key), 1u);

  auto listed = orgctl({"secrets", "backups"});
  ASSERT_EQ(listed.status, 0) << listed.err;
  EXPECT_THAT(listed.out, HasSubstr("r2 acme-backups/orgd/backups/"));
  EXPECT_THAT(listed.out, HasSubstr("r2://" + key));
  auto both = orgctl({"secrets", "backup", "--to-r2", "--out", "x.bak"});
  EXPECT_NE(both.status, 0) << "--out and --to-r2 exclude each other";
  auto help = orgctl({"secrets", "--help"});
  EXPECT_THAT(help.out, HasSubstr("backups"));

  const std::string later = testing::canary("db-later");
  testing::write_file(work_.path() / "value.txt", later);
  ASSERT_EQ(orgctl({"secrets", "set", "DATABASE_URL", "--scope", "api", "--from-file", "value.txt"})
                .status,
            0);
  ASSERT_TRUE(wait_until([&] { return worker_has(later); }, 30s));
  auto wrong = orgctl({"secrets", "restore", "r2://" + key, "--passphrase-env", "PASS"},
                      {{"PASS", "not the passphrase"}});
  EXPECT_EQ(wrong.status, 1) << wrong.out;
  auto restored = orgctl({"secrets", "restore", "r2://" + key, "--passphrase-env", "PASS"}, pass);
  ASSERT_EQ(restored.status, 0) << restored.err;
  EXPECT_THAT(restored.out, HasSubstr("restored 1 secrets"));
  ASSERT_TRUE(wait_until([&] { return worker_has(db); }, 30s));

  ASSERT_EQ(orgctl({"secrets", "set", "DATABASE_URL", "--scope", "api", "--from-file", "value.txt"})
                .status,
            0);
  ASSERT_TRUE(wait_until([&] { return worker_has(later); }, 30s));
  auto from = orgctl({"secrets", "restore", "--from-r2", key, "--passphrase-env", "PASS"}, pass);
  ASSERT_EQ(from.status, 0) << from.err;
  ASSERT_TRUE(wait_until([&] { return worker_has(db); }, 30s));

  orgd->signal(SIGTERM);
  ASSERT_TRUE(orgd->wait_for_exit(20s).has_value());
  const std::string everything = outputs_ + orgd->stdout_text() + orgd->stderr_text();
  for (const auto& value :
       {db, later, master_key_, std::string{kCfToken}, testing::fake_sha256_hex(kCfToken)}) {
    EXPECT_EQ(everything.find(value), std::string::npos) << value.substr(0, 12) << "… printed";
  }
  for (const auto& call : s3_.s3().calls()) {
    EXPECT_EQ(call.body.find(db), std::string::npos);
    EXPECT_EQ(call.body.find(later), std::string::npos);
    EXPECT_NE(call.code, "SignatureDoesNotMatch");
  }
}

}  // namespace
}  // namespace orgd
