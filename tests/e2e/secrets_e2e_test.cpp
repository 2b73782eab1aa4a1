// The secrets engine through the binaries: `orgctl secrets` import, set, list, sync, backup and
// restore against an orgd process (real nats-server, the fake GitHub opening what it is sent),
// and a rotation whose orgd is SIGKILLed while a target refuses the new value: the next orgd
// finishes it from the record in KV. Neither process's output ever shows a value.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "tests/fakes/fake_github.hpp"
#include "tests/support/collector.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/secret_values.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::FakeGithubServer;
using testing::NatsServer;
using testing::SecretScope;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::wait_until;
using ::testing::HasSubstr;

constexpr const char* kToken = "ghp_orgdSecretsE2eToken0123456789abcdef";

using testing::random_hex;

struct Ran {
  std::optional<int> status;
  std::string out, err;
};

class SecretsE2e : public ::testing::Test {
 protected:
  SecretsE2e() : master_key_(testing::random_master_key_base64()) { fake_.github().add_token(kToken); }

  std::string config() const {
    return "org: acme\n"
           "nats:\n  urls: [" + server_.url() + "]\n  connect_timeout: 2s\n"
           "  reconnect_wait: 100ms\n  data_dir: " + data_.str() + "\n"
           "http:\n  enabled: false\n"
           "log:\n  level: debug\n"
           "deploy:\n  lease_ttl: 2s\n"
           "providers:\n"
           "  gh: {type: github, api_url: '" + fake_.base_url() + "', token_env: GH_TOKEN}\n"
           "repos:\n"
           "  api:\n    secrets: [DATABASE_URL, SESSION_KEY]\n"
           "    secret_targets:\n      - {provider: gh}\n"
           "secrets:\n  master_key_env: ORGD_MASTER_KEY\n  sync_interval: 0\n"
           "  rotation:\n    SESSION_KEY: {generate: {length: 48}, overlap: 0s}\n";
  }

  std::unique_ptr<Subprocess> start_orgd(const TempDir& dir) {
    const auto path = dir.path() / "orgd.yaml";
    testing::write_file(path, config());
    SubprocessOptions options;
    options.argv = {ORGD_DAEMON_BINARY, "--config", path.string()};
    options.unset_env = testing::kOutsideEnv;
    options.env = {{"GH_TOKEN", kToken}, {"ORGD_MASTER_KEY", master_key_}};
    options.cwd = dir.path();
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

  Ran orgctl(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv = {ORGCTL_BINARY, "--server", server_.url(), "--org", "acme"};
    argv.insert(argv.end(), args.begin(), args.end());
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

  std::optional<std::string> at_github(const std::string& name) {
    return fake_.github().secret_value(SecretScope::repository("acme", "api"), name);
  }

  NatsServer server_;
  FakeGithubServer fake_;
  TempDir data_{"orgd-secrets-e2e-data"};
  TempDir work_{"orgd-secrets-e2e-work"};
  testing::NatsConnectionPtr client_ = testing::connect_client(server_.url());
  std::string master_key_;
  std::string outputs_;  // everything orgctl printed
};

TEST_F(SecretsE2e, OrgctlImportsSetsListsSyncsBacksUpAndRestores) {
  TempDir dir("orgd-secrets-e2e-a");
  auto orgd = start_orgd(dir);
  const std::string db = "canary-db-" + random_hex(8);
  const std::string session = "canary-session-" + random_hex(8);
  testing::write_file(work_.path() / ".env",
                      "# api's secrets\nDATABASE_URL=" + db + "\nSESSION_KEY='" + session + "'\n");

  auto imported = orgctl({"secrets", "import", ".env", "--scope", "api"});
  ASSERT_EQ(imported.status, 0) << imported.err;
  EXPECT_THAT(imported.out, HasSubstr("imported 2 secrets into api (2 changed)"));
  ASSERT_TRUE(wait_until([&] { return at_github("DATABASE_URL") == db; }, 30s));
  ASSERT_TRUE(wait_until([&] { return at_github("SESSION_KEY") == session; }, 30s));

  const std::string newer = "canary-db2-" + random_hex(8);
  testing::write_file(work_.path() / "value.txt", newer + "\n");
  auto set = orgctl({"secrets", "set", "DATABASE_URL", "--scope", "api", "--from-file",
                     "value.txt"});
  ASSERT_EQ(set.status, 0) << set.err;
  EXPECT_THAT(set.out, HasSubstr("api/DATABASE_URL version 2"));
  ASSERT_TRUE(wait_until([&] { return at_github("DATABASE_URL") == newer; }, 30s))
      << "the trailing newline of the file is not part of the value";

  Ran list;
  ASSERT_TRUE(wait_until(
      [&] {
        list = orgctl({"secrets", "list"});
        return list.status == 0 && list.out.find("behind") == std::string::npos &&
               list.out.find("in_sync") != std::string::npos;
      },
      30s))
      << list.out << list.err;
  EXPECT_THAT(list.out, HasSubstr("DATABASE_URL"));
  EXPECT_THAT(list.out, HasSubstr("SESSION_KEY"));

  auto diff = orgctl({"secrets", "diff"});
  ASSERT_EQ(diff.status, 0) << diff.err;
  EXPECT_THAT(diff.out, HasSubstr("in sync: nothing to push or remove"));

  auto backup = orgctl({"secrets", "backup", "--out", "vault.bak", "--passphrase-env", "PASS"},
                       {{"PASS", "a long backup passphrase"}});
  ASSERT_EQ(backup.status, 0) << backup.err;
  EXPECT_THAT(backup.out, HasSubstr("wrote vault.bak: 2 secrets"));
  const auto file = testing::read_file(work_.path() / "vault.bak");
  EXPECT_EQ(file.find(newer), std::string::npos) << "the backup is encrypted";

  auto later = orgctl({"secrets", "set", "DATABASE_URL", "--scope", "api", "--from-file",
                       ".env"});  // any other value
  ASSERT_EQ(later.status, 0) << later.err;
  auto wrong = orgctl({"secrets", "restore", "vault.bak", "--passphrase-env", "PASS"},
                      {{"PASS", "not the passphrase"}});
  EXPECT_EQ(wrong.status, 1) << "a wrong passphrase is refused: " << wrong.out;
  auto restored = orgctl({"secrets", "restore", "vault.bak", "--passphrase-env", "PASS"},
                         {{"PASS", "a long backup passphrase"}});
  ASSERT_EQ(restored.status, 0) << restored.err;
  ASSERT_TRUE(wait_until([&] { return at_github("DATABASE_URL") == newer; }, 30s));

  orgd->signal(SIGTERM);
  ASSERT_TRUE(orgd->wait_for_exit(20s).has_value());
  const std::string everything = outputs_ + orgd->stdout_text() + orgd->stderr_text();
  for (const auto& value : {db, session, newer, master_key_, std::string{kToken}}) {
    EXPECT_EQ(everything.find(value), std::string::npos) << value.substr(0, 12) << "… printed";
  }
}

TEST_F(SecretsE2e, ARotationInterruptedBySigkillIsFinishedByTheNextOrgd) {
  TempDir first_dir("orgd-secrets-e2e-b");
  TempDir second_dir("orgd-secrets-e2e-c");
  auto first = start_orgd(first_dir);
  testing::write_file(work_.path() / ".env",
                      "DATABASE_URL=canary-" + random_hex(8) + "\nSESSION_KEY=canary-old-" +
                          random_hex(8) + "\n");
  ASSERT_EQ(orgctl({"secrets", "import", ".env", "--scope", "api"}).status, 0);
  ASSERT_TRUE(wait_until([&] { return at_github("SESSION_KEY").has_value(); }, 30s));
  const std::string old_value = *at_github("SESSION_KEY");

  // GitHub refuses every write: the rotation's new value cannot reach the target.
  fake_.github().inject(testing::FakeFault::server_errors(100000, 503)
                            .on("PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}"));
  auto rotate = orgctl({"secrets", "rotate", "SESSION_KEY", "--scope", "api"});
  ASSERT_EQ(rotate.status, 0) << rotate.err;
  ASSERT_TRUE(wait_until(
      [&] {
        auto r = orgctl({"-o", "json", "secrets", "rotate", "SESSION_KEY", "--scope", "api"});
        return r.out.find("\"phase\":\"pushing\"") != std::string::npos &&
               r.out.find("behind") != std::string::npos;
      },
      30s));
  first->kill();  // SIGKILL mid-rotation
  EXPECT_EQ(at_github("SESSION_KEY"), old_value) << "the old value is still the one GitHub has";

  fake_.github().clear_faults();
  testing::Collector events(client_.get(), "org.acme.events.secrets.SESSION_KEY.>");
  auto second = start_orgd(second_dir);
  ASSERT_TRUE(wait_until(
      [&] {
        const auto now = at_github("SESSION_KEY");
        return now && *now != old_value;
      },
      60s))
      << second->describe();
  EXPECT_EQ(at_github("SESSION_KEY")->size(), 48u);
  ASSERT_TRUE(wait_until(
      [&] {
        for (const auto& m : events.messages()) {
          if (m.subject == "org.acme.events.secrets.SESSION_KEY.rotation_retired") return true;
        }
        return false;
      },
      30s))
      << "the old value is retired once the new one is active";
  const std::string everything =
      outputs_ + first->stderr_text() + second->stdout_text() + second->stderr_text();
  EXPECT_EQ(everything.find(old_value), std::string::npos);
  EXPECT_EQ(everything.find(*at_github("SESSION_KEY")), std::string::npos);
}

}  // namespace
}  // namespace orgd
