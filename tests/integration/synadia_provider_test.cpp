// The synadia provider against the fake control plane over real HTTP (the daemon's HTTPS
// client, loopback): names resolved once, the account ensured, users made in the signing-key
// group, their creds downloaded, revoked then deleted (idempotently); 401, 404 and a 429 with
// Retry-After; the probe's token check, quotas and its connect to a real nats-server in
// operator mode trusting the fake's account (a revoked user's creds refused); quotas reaching
// P.api.providers' ProviderStatus and `orgctl providers`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <string>

#include "daemon/app/provider_monitor.hpp"
#include "daemon/bus/nats_connection.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/net/https_client.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/synadia/synadia_provider.hpp"
#include "tests/fakes/fake_synadia.hpp"
#include "tests/support/nats_auth.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::FakeSynadiaServer;
using testing::NatsServer;

constexpr const char* kToken = "uat_synadia-test-token-canary-0123456789";
constexpr const char* kCreateUser = "POST /accounts/{accountId}/nats-users";
constexpr const char* kCreds = "POST /nats-users/{userId}/creds";
constexpr const char* kRevoke = "PUT /accounts/{accountId}/nats-user-revocations/{userNkeyPublic}";
constexpr const char* kDeleteUser = "DELETE /nats-users/{userId}";

class SynadiaProviderTest : public ::testing::Test {
 protected:
  SynadiaProviderTest() {
    team_ = fake_.synadia().add_team("acme");
    system_ = fake_.synadia().add_system(team_, "prod-system");
    account_ = fake_.synadia().add_account(system_, "deployers");
  }

  std::unique_ptr<Provider> provider(const std::string& extra = "",
                                     const std::string& token = kToken) {
    const std::string yaml = "org: acme\nproviders:\n  syn:\n    type: synadia\n    api_url: '" +
                             fake_.base_url() +
                             "'\n    token_env: SYN_TOKEN\n    system: prod-system\n"
                             "    account: deployers\n" +
                             extra;
    env_ = Environment{{{"SYN_TOKEN", token}, {"DEPLOY_CREDS", creds_env_value_}}};
    config_ = load_config_string(yaml, "orgd.yaml", env_);
    ProviderEnvironment provided;
    provided.environment = env_;
    provided.data_dir = dir_.str();
    provided.http = make_https_transport_factory(metrics_, Environment{});
    return ProviderRegistry{}.create(config_.providers.at("syn"), provided, "orgd.yaml");
  }

  static std::string all_calls_text(const testing::FakeSynadia& fake) {
    std::string out;
    for (const auto& c : fake.calls()) out += c.method + " " + c.path + " " + std::to_string(c.status) + "\n";
    return out;
  }

  FakeSynadiaServer fake_{kToken};
  std::string team_, system_, account_;
  std::string creds_env_value_;
  testing::TempDir dir_{"orgd-synadia"};
  Environment env_;
  MetricsRegistry metrics_;
  Config config_;
};

TEST_F(SynadiaProviderTest, IssuesAUserInTheDefaultGroupWithItsCredsAndResolvesNamesOnce) {
  auto p = provider("    jwt_expires_in: 1h\n");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->type(), "synadia");
  EXPECT_EQ(p->capabilities().names(), (std::vector<std::string>{"credential_issuer", "health_probe"}));
  auto issued = p->credential_issuer()->issue("NATS_DEPLOYER_CREDS");
  ASSERT_TRUE(issued) << issued.error().message << all_calls_text(fake_.synadia());

  const auto users = fake_.synadia().users();
  ASSERT_EQ(users.size(), 1u);
  const auto& user = users[0];
  EXPECT_TRUE(std::regex_match(user.name, std::regex("orgd-nats-deployer-creds-\\d{8}T\\d{6}Z")))
      << user.name;
  EXPECT_EQ(user.account_id, account_);
  EXPECT_EQ(issued.value().value.expose(), testing::creds_file_text(user.jwt, user.seed));
  EXPECT_EQ(issued.value().id, user.id + ":" + account_ + ":" + user.public_key);
  ASSERT_TRUE(issued.value().expires_at);
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*issued.value().expires_at), *user.expires_at);
  // The request asked for the configured lifetime, in the Default group.
  const auto calls = fake_.synadia().calls();
  for (const auto& c : calls) {
    if (c.route != kCreateUser) continue;
    const auto body = nlohmann::json::parse(c.body);
    EXPECT_EQ(body["jwt_expires_in_secs"], 3600);
    EXPECT_EQ(body["sk_group_id"], user.sk_group_id);
  }

  ASSERT_TRUE(p->credential_issuer()->issue("NATS_DEPLOYER_CREDS"));
  EXPECT_EQ(fake_.synadia().users().size(), 2u);
  EXPECT_EQ(fake_.synadia().count("GET /systems/{systemId}"), 1u);
  EXPECT_EQ(fake_.synadia().count("GET /systems/{systemId}/accounts"), 1u) << "ids are kept";
  EXPECT_EQ(fake_.synadia().count("GET /accounts/{accountId}/account-sk-groups"), 1u);
  EXPECT_EQ(fake_.synadia().count(kCreds), 2u);
}

TEST_F(SynadiaProviderTest, RevokeRevokesTheKeyThenDeletesTheUserAndIsIdempotent) {
  auto p = provider();
  auto issued = p->credential_issuer()->issue("CREDS");
  ASSERT_TRUE(issued) << issued.error().message;
  const auto user = fake_.synadia().users().at(0);
  ASSERT_TRUE(p->credential_issuer()->revoke(issued.value().id));
  EXPECT_TRUE(fake_.synadia().users().empty());
  const auto revoked = fake_.synadia().revocations(account_);
  ASSERT_EQ(revoked.count(user.public_key), 1u);
  EXPECT_GE(revoked.at(user.public_key), user.issued_at) << "before: 0 is now";
  // The revocation went first, with before: 0.
  const auto calls = fake_.synadia().calls();
  std::size_t revoke_at = 0, delete_at = 0;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].route == kRevoke) {
      revoke_at = i;
      EXPECT_EQ(nlohmann::json::parse(calls[i].body), nlohmann::json({{"before", 0}}));
    }
    if (calls[i].route == kDeleteUser) delete_at = i;
  }
  EXPECT_LT(revoke_at, delete_at);
  // Again: already gone is success (the revocation is put again, the delete answers 404).
  auto again = p->credential_issuer()->revoke(issued.value().id);
  EXPECT_TRUE(again) << again.error().message;
  // A bare user id of a user that is gone.
  EXPECT_TRUE(p->credential_issuer()->revoke(user.id));
}

TEST_F(SynadiaProviderTest, AMissingAccountIsNamedOrCreatedWhenAsked) {
  const std::string yaml_account = "ci-bots";
  auto named = [&](bool create) {
    const std::string yaml = "org: acme\nproviders:\n  syn:\n    type: synadia\n    api_url: '" +
                             fake_.base_url() +
                             "'\n    token_env: SYN_TOKEN\n    system: " + system_ +
                             "\n    account: " + yaml_account + "\n" +
                             (create ? "    create_account: true\n" : "");
    env_ = Environment{{{"SYN_TOKEN", kToken}}};
    config_ = load_config_string(yaml, "orgd.yaml", env_);
    ProviderEnvironment provided;
    provided.environment = env_;
    provided.http = make_https_transport_factory(metrics_, Environment{});
    return ProviderRegistry{}.create(config_.providers.at("syn"), provided, "orgd.yaml");
  };
  auto refused = named(false)->credential_issuer()->issue("CREDS");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::not_found);
  EXPECT_THAT(refused.error().message, HasSubstr("account 'ci-bots' not found"));
  EXPECT_THAT(refused.error().message, HasSubstr("deployers (" + account_ + ")"));
  EXPECT_FALSE(fake_.synadia().account_id("ci-bots"));

  auto made = named(true)->credential_issuer()->issue("CREDS");
  ASSERT_TRUE(made) << made.error().message;
  const auto id = fake_.synadia().account_id("ci-bots");
  ASSERT_TRUE(id);
  EXPECT_EQ(fake_.synadia().count("POST /systems/{systemId}/accounts"), 1u);
  EXPECT_EQ(fake_.synadia().users().at(0).account_id, *id);
}

TEST_F(SynadiaProviderTest, SeveralGroupsWithoutADefaultNeedSkGroup) {
  // A second account whose groups are neither one nor named Default.
  const std::string other = fake_.synadia().add_account(system_, "ops");
  const std::string ci = fake_.synadia().add_sk_group(other, "ci");
  (void)fake_.synadia().add_sk_group(other, "humans");
  // add_account made a Default group too: with it, the default wins.
  auto p = provider();
  ASSERT_TRUE(p->credential_issuer()->issue("CREDS"));

  const std::string yaml = "org: acme\nproviders:\n  syn:\n    type: synadia\n    api_url: '" +
                           fake_.base_url() +
                           "'\n    token_env: SYN_TOKEN\n    system: prod-system\n"
                           "    account: ops\n    sk_group: ci\n";
  config_ = load_config_string(yaml, "orgd.yaml", env_);
  ProviderEnvironment provided;
  provided.environment = env_;
  provided.http = make_https_transport_factory(metrics_, Environment{});
  auto in_ci = ProviderRegistry{}.create(config_.providers.at("syn"), provided, "orgd.yaml");
  ASSERT_TRUE(in_ci->credential_issuer()->issue("CREDS"));
  bool found = false;
  for (const auto& u : fake_.synadia().users()) found = found || u.sk_group_id == ci;
  EXPECT_TRUE(found);

  const std::string unknown = "org: acme\nproviders:\n  syn:\n    type: synadia\n    api_url: '" +
                              fake_.base_url() +
                              "'\n    token_env: SYN_TOKEN\n    system: prod-system\n"
                              "    account: ops\n    sk_group: nope\n";
  config_ = load_config_string(unknown, "orgd.yaml", env_);
  auto bad = ProviderRegistry{}.create(config_.providers.at("syn"), provided, "orgd.yaml");
  auto refused = bad->credential_issuer()->issue("CREDS");
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused.error().message, HasSubstr("signing-key group 'nope' not found"));
  EXPECT_THAT(refused.error().message, HasSubstr("humans"));
}

TEST_F(SynadiaProviderTest, AWrongTokenIs401AndNeverShown) {
  auto p = provider("", "uat_wrong-token-canary-987654321");
  auto refused = p->credential_issuer()->issue("CREDS");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().retry, Retry::permanent);
  EXPECT_THAT(refused.error().message, HasSubstr("Synadia answered 401: unauthorized"));
  EXPECT_THAT(refused.error().message, Not(HasSubstr("canary")));
  auto probed = p->health_probe()->probe();
  ASSERT_TRUE(probed);
  EXPECT_FALSE(probed.value().ok);
  EXPECT_THAT(probed.value().detail, HasSubstr("401"));
  EXPECT_THAT(probed.value().detail + probed.value().last_error, Not(HasSubstr("canary")));
  EXPECT_TRUE(fake_.synadia().users().empty());
  // The token went as a bearer token (and the fake refused it).
  EXPECT_EQ(fake_.synadia().calls().at(0).authorization, "Bearer uat_wrong-token-canary-987654321");
}

TEST_F(SynadiaProviderTest, AnUnknownSystemIs404AndTheChoicesAreNamed) {
  const std::string yaml = "org: acme\nproviders:\n  syn:\n    type: synadia\n    api_url: '" +
                           fake_.base_url() +
                           "'\n    token_env: SYN_TOKEN\n    system: staging\n"
                           "    account: deployers\n";
  env_ = Environment{{{"SYN_TOKEN", kToken}}};
  config_ = load_config_string(yaml, "orgd.yaml", env_);
  ProviderEnvironment provided;
  provided.environment = env_;
  provided.http = make_https_transport_factory(metrics_, Environment{});
  auto p = ProviderRegistry{}.create(config_.providers.at("syn"), provided, "orgd.yaml");
  auto refused = p->credential_issuer()->issue("CREDS");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::not_found);
  EXPECT_THAT(refused.error().message,
              HasSubstr("system 'staging' not found (systems: prod-system (" + system_ + "))"));
  EXPECT_EQ(fake_.synadia().calls().at(0).status, 404);
  // A user id that is not there: 404 read as not_found by the API client.
  auto direct = provider();
  auto gone = dynamic_cast<synadia::SynadiaProvider&>(*direct).api()->get_user("usr9999");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ErrorCode::not_found);
  EXPECT_THAT(gone.error().message, HasSubstr("Synadia answered 404: user not found"));
}

TEST_F(SynadiaProviderTest, A429IsWaitedOutByItsRetryAfter) {
  auto p = provider();
  fake_.synadia().throttle_next(1, 1);
  const auto started = std::chrono::steady_clock::now();
  auto issued = p->credential_issuer()->issue("CREDS");
  ASSERT_TRUE(issued) << issued.error().message;
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds{900});
  const auto calls = fake_.synadia().calls();
  ASSERT_GE(calls.size(), 2u);
  EXPECT_EQ(calls[0].status, 429);
  EXPECT_EQ(calls[1].path, calls[0].path) << "the same request sent again";
  EXPECT_EQ(calls[1].method, calls[0].method);
  EXPECT_NE(calls[1].status, 429);
}

TEST_F(SynadiaProviderTest, TheProbeChecksTheTokenReadsQuotasAndConnectsToNats) {
  fake_.synadia().set_account_limits(
      account_, {{"mem_storage", 1 << 20}, {"disk_storage", 1 << 30}, {"streams", 10},
                 {"consumer", -1}, {"conn", 100}});
  fake_.synadia().set_account_usage(account_,
                                    {{"memory", 2048}, {"storage", 5 << 20}, {"streams", 3},
                                     {"consumers", 7}});
  NatsServer nats(testing::server_with_config(fake_.synadia().server_config()));
  auto p = provider("    nats_url: " + nats.url() + "\n");
  // No creds named and none issued yet: the connect is not tried.
  auto first = p->health_probe()->probe();
  ASSERT_TRUE(first);
  EXPECT_TRUE(first.value().ok) << first.value().detail;
  EXPECT_THAT(first.value().detail, HasSubstr("system prod-system account deployers"));
  EXPECT_THAT(first.value().detail, HasSubstr("NATS connect not tried"));
  const auto& q = first.value().quotas;
  ASSERT_EQ(q.size(), 5u);
  EXPECT_EQ(q[0].name, "jetstream_memory_bytes");
  EXPECT_EQ(q[0].used, 2048);
  EXPECT_EQ(q[0].limit, 1 << 20);
  EXPECT_EQ(q[1].name, "jetstream_storage_bytes");
  EXPECT_EQ(q[2].name, "jetstream_streams");
  EXPECT_EQ(q[2].used, 3);
  EXPECT_EQ(q[2].limit, 10);
  EXPECT_EQ(q[3].name, "jetstream_consumers");
  EXPECT_EQ(q[3].used, 7);
  EXPECT_FALSE(q[3].limit) << "-1 is unlimited";
  EXPECT_EQ(q[4].name, "connections");
  EXPECT_EQ(q[4].used, 0) << "the fake's metrics count no connections";
  EXPECT_EQ(q[4].limit, 100);

  // Issued creds: the probe connects with them (the server trusts the fake's account).
  ASSERT_TRUE(p->credential_issuer()->issue("CREDS"));
  auto second = p->health_probe()->probe();
  ASSERT_TRUE(second);
  EXPECT_TRUE(second.value().ok) << second.value().detail << nats.log_text();
  EXPECT_THAT(second.value().detail, HasSubstr("NATS connect ok"));
}

TEST_F(SynadiaProviderTest, ConfiguredCredsAreRefusedOnceRevokedAndAClosedPortFailsTheProbe) {
  // Creds from the fake, handed over as creds_env.
  auto maker = provider();
  auto issued = maker->credential_issuer()->issue("CREDS");
  ASSERT_TRUE(issued);
  creds_env_value_ = std::string(issued.value().value.expose());
  const std::string seed = fake_.synadia().users().at(0).seed;
  {
    NatsServer nats(testing::server_with_config(fake_.synadia().server_config()));
    auto p = provider("    nats_url: " + nats.url() + "\n    creds_env: DEPLOY_CREDS\n");
    auto ok = p->health_probe()->probe();
    ASSERT_TRUE(ok);
    EXPECT_TRUE(ok.value().ok) << ok.value().detail << nats.log_text();
  }
  ASSERT_TRUE(maker->credential_issuer()->revoke(issued.value().id));
  {
    // The account's JWT as it is now carries the revocation.
    NatsServer nats(testing::server_with_config(fake_.synadia().server_config()));
    auto p = provider("    nats_url: " + nats.url() + "\n    creds_env: DEPLOY_CREDS\n");
    auto refused = p->health_probe()->probe();
    ASSERT_TRUE(refused);
    EXPECT_FALSE(refused.value().ok);
    EXPECT_THAT(refused.value().detail, HasSubstr("connecting to " + nats.url()));
    EXPECT_THAT(refused.value().detail + refused.value().last_error, Not(HasSubstr(seed)));
  }
  {
    NatsServer nats(testing::server_with_config(fake_.synadia().server_config()));
    const std::string url = nats.url();
    nats.stop();
    auto p = provider("    nats_url: " + url + "\n    creds_env: DEPLOY_CREDS\n");
    auto closed = p->health_probe()->probe();
    ASSERT_TRUE(closed);
    EXPECT_FALSE(closed.value().ok);
    EXPECT_THAT(closed.value().last_error, HasSubstr("connecting to " + url));
  }
}

TEST_F(SynadiaProviderTest, QuotasReachProviderStatus) {
  fake_.synadia().set_account_limits(account_, {{"disk_storage", 1 << 30}, {"streams", 10}});
  fake_.synadia().set_account_usage(account_, {{"storage", 5 << 20}, {"streams", 3}});
  std::shared_ptr<ProviderSet> built;
  {
    const std::string yaml = "org: acme\nproviders:\n  syn:\n    type: synadia\n    api_url: '" +
                             fake_.base_url() +
                             "'\n    token_env: SYN_TOKEN\n    system: prod-system\n"
                             "    account: deployers\n";
    env_ = Environment{{{"SYN_TOKEN", kToken}}};
    config_ = load_config_string(yaml, "orgd.yaml", env_);
    ProviderEnvironment provided;
    provided.environment = env_;
    provided.http = make_https_transport_factory(metrics_, Environment{});
    built = ProviderSet::build(config_, ProviderRegistry{}, provided);
  }
  SystemClock clock;
  ProviderMonitor monitor(std::chrono::minutes{10}, clock, metrics_);
  monitor.set_providers(built);
  monitor.probe_all();
  const auto list = monitor.list();
  ASSERT_EQ(list.providers_size(), 1);
  const auto& status = list.providers(0);
  EXPECT_TRUE(status.ok()) << status.detail();
  // Every quota the metrics count; limits where jwt_settings has them.
  ASSERT_EQ(status.quotas_size(), 5);
  EXPECT_EQ(status.quotas(0).name(), "jetstream_memory_bytes");
  EXPECT_FALSE(status.quotas(0).has_limit());
  EXPECT_EQ(status.quotas(1).name(), "jetstream_storage_bytes");
  EXPECT_EQ(status.quotas(1).used(), 5 << 20);
  EXPECT_EQ(status.quotas(1).limit(), 1 << 30);
  EXPECT_EQ(status.quotas(2).name(), "jetstream_streams");
  EXPECT_EQ(status.quotas(2).used(), 3);
  EXPECT_EQ(status.quotas(2).limit(), 10);
}

}  // namespace
}  // namespace orgd
