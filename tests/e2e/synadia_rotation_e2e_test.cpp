// Synadia creds rotated end to end through the binaries: orgd on a real nats-server with the
// `synadia` provider on the fake control plane and the fake GitHub as the secret's target.
// `orgctl secrets rotate NATS_DEPLOYER_CREDS` issues a NATS user at the fake, its creds reach
// GitHub; the next rotation issues another, and once the overlap is over the first user is
// revoked (before: 0) and deleted at the fake. The fake's JWTs are real: a nats-server trusting
// the fake's account accepts the current creds and refuses the revoked ones. No creds seed is
// ever on the bus or in either process's output.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "plugins/synadia/health_probe.hpp"
#include "tests/fakes/fake_github.hpp"
#include "tests/fakes/fake_synadia.hpp"
#include "tests/support/collector.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_auth.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/secret_values.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::FakeGithubServer;
using testing::FakeSynadiaServer;
using testing::NatsServer;
using testing::SecretScope;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::wait_until;

constexpr const char* kGhToken = "ghp_orgdSynadiaE2eToken0123456789abcdef";
constexpr const char* kSynToken = "uat_orgdSynadiaE2eTokenCanary0123456789";
constexpr const char* kRevoke = "PUT /accounts/{accountId}/nats-user-revocations/{userNkeyPublic}";

class SynadiaRotationE2e : public ::testing::Test {
 protected:
  SynadiaRotationE2e() : master_key_(testing::random_master_key_base64()) {
    github_.github().add_token(kGhToken);
    const auto team = synadia_.synadia().add_team("acme");
    const auto system = synadia_.synadia().add_system(team, "acme-prod");
    account_ = synadia_.synadia().add_account(system, "deployers");
  }

  std::string config() const {
    return "org: acme\n"
           "nats:\n  urls: [" + server_.url() + "]\n  connect_timeout: 2s\n"
           "  reconnect_wait: 100ms\n  data_dir: " + data_.str() + "\n"
           "http:\n  enabled: false\n"
           "log:\n  level: debug\n"
           "deploy:\n  lease_ttl: 2s\n"
           "providers:\n"
           "  gh: {type: github, api_url: '" + github_.base_url() + "', token_env: GH_TOKEN}\n"
           "  syn: {type: synadia, api_url: '" + synadia_.base_url() +
           "', token_env: SYNADIA_TOKEN, system: acme-prod, account: deployers}\n"
           "repos:\n"
           "  api:\n    secrets: [NATS_DEPLOYER_CREDS]\n"
           "    secret_targets:\n      - {provider: gh}\n"
           "secrets:\n  master_key_env: ORGD_MASTER_KEY\n  sync_interval: 0\n"
           "  rotation:\n    NATS_DEPLOYER_CREDS: {issuer: syn, overlap: 3s}\n";
  }

  std::unique_ptr<Subprocess> start_orgd() {
    const auto path = work_.path() / "orgd.yaml";
    testing::write_file(path, config());
    SubprocessOptions options;
    options.argv = {ORGD_DAEMON_BINARY, "--config", path.string()};
    options.unset_env = testing::kOutsideEnv;
    options.env = {{"GH_TOKEN", kGhToken},
                   {"SYNADIA_TOKEN", kSynToken},
                   {"ORGD_MASTER_KEY", master_key_}};
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

  int orgctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {ORGCTL_BINARY, "--server", server_.url(), "--org", "acme"};
    argv.insert(argv.end(), args.begin(), args.end());
    SubprocessOptions options;
    options.argv = std::move(argv);
    options.unset_env = testing::kOutsideEnv;
    options.cwd = work_.path();
    Subprocess p(std::move(options));
    const auto status = p.wait_for_exit(60s);
    if (!status) p.kill();
    outputs_ += p.stdout_text() + p.stderr_text();
    return status.value_or(-1);
  }

  std::optional<std::string> at_github() {
    return github_.github().secret_value(SecretScope::repository("acme", "api"),
                                         "NATS_DEPLOYER_CREDS");
  }

  // The fake's user whose creds GitHub holds now.
  std::optional<testing::SynUser> held_user() {
    const auto held = at_github();
    if (!held) return std::nullopt;
    for (const auto& u : synadia_.synadia().users()) {
      if (testing::creds_file_text(u.jwt, u.seed) == *held) return u;
    }
    return std::nullopt;
  }

  NatsServer server_;
  FakeGithubServer github_;
  FakeSynadiaServer synadia_{kSynToken};
  std::string account_;
  TempDir data_{"orgd-synadia-e2e-data"};
  TempDir work_{"orgd-synadia-e2e-work"};
  testing::NatsConnectionPtr client_ = testing::connect_client(server_.url());
  std::string master_key_;
  std::string outputs_;
};

TEST_F(SynadiaRotationE2e, IssuedCredsReachGithubAndTheOldUserIsRevokedAndDeletedAfterTheOverlap) {
  testing::Collector everything(client_.get(), ">");
  natsConnection_Flush(client_.get());
  auto orgd = start_orgd();

  ASSERT_EQ(orgctl({"secrets", "rotate", "NATS_DEPLOYER_CREDS", "--scope", "api"}), 0) << outputs_;
  ASSERT_TRUE(wait_until([&] { return held_user().has_value(); }, 30s))
      << orgd->describe() << outputs_;
  const testing::SynUser first = *held_user();
  EXPECT_THAT(first.name, ::testing::StartsWith("orgd-nats-deployer-creds-"));
  const std::string first_creds = *at_github();
  // The first rotation ends after its overlap (it had no credential to revoke); the next one
  // revokes the credential this one issued.
  const auto retired = [&](std::size_t count) {
    std::size_t n = 0;
    for (const auto& m : everything.messages()) {
      n += m.subject == "org.acme.events.secrets.NATS_DEPLOYER_CREDS.rotation_retired" ? 1 : 0;
    }
    return n >= count;
  };
  ASSERT_TRUE(wait_until([&] { return retired(1); }, 30s)) << orgd->describe();
  EXPECT_TRUE(synadia_.synadia().revocations(account_).empty());

  ASSERT_EQ(orgctl({"secrets", "rotate", "NATS_DEPLOYER_CREDS", "--scope", "api"}), 0) << outputs_;
  ASSERT_TRUE(wait_until(
      [&] {
        const auto now = held_user();
        return now && now->id != first.id;
      },
      30s))
      << orgd->describe() << outputs_;
  const testing::SynUser second = *held_user();
  // The overlap: the first user still exists right after the switch.
  EXPECT_TRUE(synadia_.synadia().user(first.id).has_value());

  // After the overlap: revoked, then deleted; the second user stays.
  ASSERT_TRUE(wait_until([&] { return !synadia_.synadia().user(first.id).has_value(); }, 60s))
      << orgd->describe();
  EXPECT_EQ(synadia_.synadia().revocations(account_).count(first.public_key), 1u);
  EXPECT_EQ(synadia_.synadia().revocations(account_).count(second.public_key), 0u);
  EXPECT_TRUE(synadia_.synadia().user(second.id).has_value());
  EXPECT_GE(synadia_.synadia().count(kRevoke), 1u);

  // The managed NATS (a server given the account's JWT as it is now) refuses the old creds and
  // accepts the new.
  NatsServer managed(testing::server_with_config(synadia_.synadia().server_config()));
  auto old_connect = synadia::try_nats_connect(managed.url(), Secret::from(first_creds), 5000ms);
  EXPECT_FALSE(old_connect) << "the revoked user still connects";
  auto new_connect = synadia::try_nats_connect(
      managed.url(), Secret::from(testing::creds_file_text(second.jwt, second.seed)), 5000ms);
  EXPECT_TRUE(new_connect) << new_connect.error().message << managed.log_text();

  orgd->signal(SIGTERM);
  ASSERT_TRUE(orgd->wait_for_exit(20s).has_value());
  const std::string output = outputs_ + orgd->stdout_text() + orgd->stderr_text();
  for (const std::string& canary : {first.seed, second.seed, std::string(kSynToken)}) {
    EXPECT_EQ(output.find(canary), std::string::npos) << canary.substr(0, 6) << "… printed";
    for (const auto& m : everything.messages()) {
      EXPECT_EQ(std::string(m.data.begin(), m.data.end()).find(canary), std::string::npos)
          << "in clear on " << m.subject;
    }
  }
}

}  // namespace
}  // namespace orgd
