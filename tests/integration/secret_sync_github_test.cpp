// SecretSync against the fake GitHub over loopback HTTP, with orgd's real HTTPS client and the
// github provider's targets, and orgd_sync in a real nats-server's JetStream KV: 1,000
// organization secrets synced (the fake opens every sealed box), a second sync with nothing
// changed (one listing, no writes), drift repaired (a secret deleted and one changed behind
// orgd's back), unmanaged secrets kept unless prune, 5xx and 429 answers reported behind and
// finished by the next sync, and two replicas syncing at once pushing each change once.
//
// A GitHub repository holds at most 100 Actions secrets (the fake refuses the 101st as GitHub
// does), an organization 1,000: the 1,000-secret sync goes to an organization target.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/net/https_client.hpp"
#include "daemon/plugin/registry.hpp"
#include "daemon/secrets/secret_sync.hpp"
#include "tests/fakes/fake_github.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd::secrets {
namespace {

using namespace std::chrono_literals;
using orgd::testing::FakeFault;
using orgd::testing::FakeGithub;
using orgd::testing::FakeGithubServer;
using orgd::testing::SecretScope;

constexpr const char* kToken = "ghp_orgdSyncTestToken0123456789abcdef";
constexpr const char* kRepoPut = "PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}";
constexpr const char* kRepoList = "GET /repos/{owner}/{repo}/actions/secrets";
constexpr const char* kOrgPut = "PUT /orgs/{org}/actions/secrets/{secret_name}";
constexpr const char* kOrgList = "GET /orgs/{org}/actions/secrets";

// Forwards to a target and counts list() calls (API pages are counted by the fake).
class CountingTarget final : public SecretTarget {
 public:
  explicit CountingTarget(std::shared_ptr<SecretTarget> inner) : inner_(std::move(inner)) {}
  std::string describe() const override { return inner_->describe(); }
  Result<std::vector<SecretInfo>> list() override {
    ++lists;
    return inner_->list();
  }
  Result<Ok> put(const std::string& name, const Secret& value) override {
    return inner_->put(name, value);
  }
  Result<Ok> remove(const std::string& name) override { return inner_->remove(name); }
  std::atomic<int> lists{0};

 private:
  std::shared_ptr<SecretTarget> inner_;
};

std::string canary(int i) { return "sync-canary-value-" + std::to_string(i) + "-x"; }

std::string name(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "SECRET_%04d", i);
  return buf;
}

class SecretSyncGithubTest : public ::testing::Test {
 protected:
  SecretSyncGithubTest() {
    fake_.github().add_token(kToken);
    EXPECT_EQ(natsConnection_JetStream(&js_, client_.get(), nullptr), NATS_OK);
    auto bucket = KvBucket::open(js_, {"orgd_sync", "secret sync test", Duration{0}, 1, 1});
    EXPECT_TRUE(bucket) << bucket.error().message;
    bucket_ = std::move(bucket.value());
  }
  ~SecretSyncGithubTest() override { jsCtx_Destroy(js_); }

  // The repo api's secret targets from `targets` (YAML list items), built by the provider set
  // with a client that tries once (a 5xx or 429 comes back at once) and waits on virtual time
  // (a rate limit's wait moves both of its clocks on instead of sleeping).
  std::vector<std::shared_ptr<SecretTarget>> targets(const std::string& targets_yaml) {
    const std::string yaml = "org: acme\nproviders:\n  gh: {type: github, api_url: '" +
                             fake_.base_url() + "', token_env: GH_TOKEN}\n" +
                             "repos:\n  api:\n    secret_targets:\n" + targets_yaml;
    config_ = load_config_string(yaml, "orgd.yaml", env_);
    ProviderEnvironment provided;
    provided.org = config_.org;
    provided.data_dir = dir_.str();
    provided.environment = env_;
    auto offset = offset_;
    provided.http =
        [offset](const HttpClientOptions& given) -> Result<std::shared_ptr<HttpTransport>> {
      HttpClientOptions options = given;
      options.max_attempts = 1;
      HttpsClientHooks hooks;
      hooks.sleep = [offset](std::chrono::milliseconds d) { *offset += d.count(); };
      hooks.steady_now = [offset] {
        return std::chrono::steady_clock::now() + std::chrono::milliseconds{offset->load()};
      };
      hooks.system_now = [offset] {
        return std::chrono::system_clock::now() + std::chrono::milliseconds{offset->load()};
      };
      auto client = HttpsClient::create(options, nullptr, hooks);
      if (!client) return client.error();
      return std::shared_ptr<HttpTransport>(client.value());
    };
    sets_.push_back(ProviderSet::build(config_, ProviderRegistry{}, provided));
    return sets_.back()->secret_targets("api");
  }

  std::shared_ptr<CountingTarget> counted(const std::string& targets_yaml) {
    return std::make_shared<CountingTarget>(targets(targets_yaml).at(0));
  }

  SyncTarget desired(std::shared_ptr<SecretTarget> target, int count, bool prune = false,
                     int first = 0) {
    std::vector<DesiredSecret> want;
    for (int i = first; i < first + count; ++i) {
      want.push_back({name(i), std::make_shared<const Secret>(Secret::from(canary(i))), 1, "org"});
    }
    return SyncTarget::make("gh", std::move(target), prune, std::move(want));
  }

  SecretSync make(const std::string& replica) {
    SyncOptions options;
    options.replica_id = replica;
    return SecretSync{*bucket_, Secret::from(std::string(32, 'd')), options};
  }

  std::size_t writes() {
    std::size_t n = 0;
    for (const auto& call : fake_.github().calls()) {
      if (call.method == "PUT" || call.method == "DELETE" || call.method == "POST" ||
          call.method == "PATCH") {
        ++n;
      }
    }
    return n;
  }

  // The fake's updated_at has one-second resolution: a change behind orgd's back is a later
  // second on its clock.
  ManualClock github_clock_{std::chrono::system_clock::now()};
  FakeGithubServer fake_{FakeGithub::Options{[this] { return github_clock_.now(); }}};
  orgd::testing::NatsServer server_;
  orgd::testing::NatsConnectionPtr client_ = orgd::testing::connect_client(server_.url());
  jsCtx* js_ = nullptr;
  std::unique_ptr<KvBucket> bucket_;
  orgd::testing::TempDir dir_{"orgd-secret-sync"};
  Environment env_{{{"GH_TOKEN", kToken}}};
  Config config_;
  std::vector<std::shared_ptr<ProviderSet>> sets_;
  std::shared_ptr<std::atomic<long long>> offset_ = std::make_shared<std::atomic<long long>>(0);
};

TEST_F(SecretSyncGithubTest, AThousandSecretsSyncedThenANoChangeSyncIsOneListingAndNoWrites) {
  auto target = counted("      - {provider: gh, org: true}\n");
  auto sync = make("replica-a");
  const auto want = desired(target, 1000);

  auto first = sync.sync({want});
  ASSERT_EQ(first.targets.size(), 1u);
  const auto& r = first.targets[0];
  ASSERT_FALSE(r.error) << r.error->message;
  EXPECT_TRUE(first.in_sync()) << r.failures.size() << " failures";
  EXPECT_EQ(r.pushed, 1000u);
  EXPECT_EQ(fake_.github().count(kOrgPut), 1000u);
  EXPECT_EQ(fake_.github().count("GET /orgs/{org}/actions/secrets/public-key"), 1u);
  EXPECT_EQ(target->lists.load(), 2) << "one to plan, one after the pushes";
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(fake_.github().secret_value(SecretScope::org("acme"), name(i)), canary(i)) << i;
  }
  for (const auto& call : fake_.github().calls()) {
    ASSERT_EQ(call.body.find("sync-canary"), std::string::npos) << call.path;
  }
  auto keys = bucket_->keys(">");
  ASSERT_TRUE(keys);
  EXPECT_EQ(keys.value().size(), 1001u) << "a record per name and the target's claim";
  for (const auto& key : keys.value()) {
    const auto entry = bucket_->get(key).value();
    ASSERT_TRUE(entry);
    ASSERT_EQ(entry->value.find("canary"), std::string::npos) << key;
  }

  fake_.github().clear_calls();
  target->lists = 0;
  github_clock_.advance(1min);
  auto second = sync.sync({want});
  EXPECT_TRUE(second.in_sync());
  EXPECT_EQ(second.targets[0].unchanged, 1000u);
  EXPECT_EQ(second.targets[0].pushed, 0u);
  EXPECT_EQ(target->lists.load(), 1);
  EXPECT_EQ(writes(), 0u);
  EXPECT_EQ(fake_.github().count(kOrgList), fake_.github().calls().size())
      << "only listing pages (100 secrets a page)";
  EXPECT_EQ(fake_.github().count(kOrgList), 10u);
}

TEST_F(SecretSyncGithubTest, ASecretDeletedAndOneChangedBehindOrgdsBackAreBothRepaired) {
  auto target = counted("      - {provider: gh}\n");
  auto sync = make("replica-a");
  const auto want = desired(target, 50);
  ASSERT_TRUE(sync.sync({want}).in_sync());

  const auto repo = SecretScope::repository("acme", "api");
  github_clock_.advance(5s);
  ASSERT_TRUE(target->remove(name(3)));
  ASSERT_TRUE(target->put(name(7), Secret::from("someone else's value")));
  fake_.github().clear_calls();

  auto repair = sync.sync({want});
  const auto& r = repair.targets[0];
  EXPECT_TRUE(repair.in_sync());
  EXPECT_EQ(r.pushed, 2u);
  std::map<std::string, SyncReason> reasons;
  for (const auto& e : r.plan.entries) {
    if (e.action != SyncAction::none) reasons[e.name] = e.reason;
  }
  EXPECT_EQ(reasons, (std::map<std::string, SyncReason>{{name(3), SyncReason::missing},
                                                        {name(7), SyncReason::drifted}}));
  EXPECT_EQ(fake_.github().secret_value(repo, name(3)), canary(3));
  EXPECT_EQ(fake_.github().secret_value(repo, name(7)), canary(7));
  EXPECT_EQ(fake_.github().count(kRepoPut), 2u);

  // The times noted after the repair are the ones the next sync compares with.
  fake_.github().clear_calls();
  github_clock_.advance(5s);
  auto quiet = sync.sync({want});
  EXPECT_EQ(quiet.targets[0].unchanged, 50u);
  EXPECT_EQ(writes(), 0u);
}

TEST_F(SecretSyncGithubTest, UnmanagedSecretsAreKeptUnlessTheTargetSaysPrune) {
  auto target = counted("      - {provider: gh}\n");
  ASSERT_TRUE(target->put("HAND_MADE", Secret::from("set by a person")));
  auto sync = make("replica-a");
  auto kept = sync.sync({desired(target, 5)});
  EXPECT_TRUE(kept.in_sync());
  const auto repo = SecretScope::repository("acme", "api");
  EXPECT_TRUE(fake_.github().secret_value(repo, "HAND_MADE").has_value());
  bool planned_kept = false;
  for (const auto& e : kept.targets[0].plan.entries) {
    if (e.name == "HAND_MADE") {
      planned_kept = e.action == SyncAction::none && e.reason == SyncReason::unmanaged;
    }
  }
  EXPECT_TRUE(planned_kept);

  auto pruning = counted("      - {provider: gh, prune: true}\n");
  const bool prune = config_.repos.at("api").secret_targets.at(0).prune;
  ASSERT_TRUE(prune);
  auto pruned = sync.sync({desired(pruning, 5, prune)});
  EXPECT_TRUE(pruned.in_sync());
  EXPECT_EQ(pruned.targets[0].removed, 1u);
  EXPECT_FALSE(fake_.github().secret_value(repo, "HAND_MADE").has_value());
  EXPECT_EQ(fake_.github().secret_names(repo).size(), 5u);
}

TEST_F(SecretSyncGithubTest, ServerErrorsAndARateLimitOnSomePutsAreBehindAndTheNextSyncFinishes) {
  auto target = counted("      - {provider: gh}\n");
  auto sync = make("replica-a");
  const auto want = desired(target, 40);
  fake_.github().inject(FakeFault::server_errors(2, 502).on(kRepoPut));
  auto first = sync.sync({want});
  const auto& r = first.targets[0];
  EXPECT_FALSE(first.in_sync());
  EXPECT_EQ(r.pushed, 38u);
  ASSERT_EQ(r.failures.size(), 2u);
  EXPECT_EQ(r.failures[0].retry, Retry::retryable);
  EXPECT_EQ(r.behind, (std::vector<std::string>{name(0), name(1)}));

  // A 429 on the third put of the next run: that target's remaining work waits for a later run.
  fake_.github().clear_faults();
  fake_.github().clear_calls();
  auto more = desired(target, 40, false, 0);
  for (int i = 40; i < 60; ++i) {
    more.desired.push_back(
        {name(i), std::make_shared<const Secret>(Secret::from(canary(i))), 1, "org"});
  }
  fake_.github().inject(FakeFault::too_many_requests(30s).on(kRepoPut));
  auto second = sync.sync({more});
  const auto& s = second.targets[0];
  EXPECT_EQ(s.pushed, 0u);
  ASSERT_EQ(s.failures.size(), 1u);
  EXPECT_EQ(s.failures[0].retry, Retry::rate_limited);
  EXPECT_EQ(s.behind.size(), 22u) << "the two 5xx names and the 20 new ones";
  EXPECT_EQ(fake_.github().count(kRepoPut), 1u) << "nothing sent after the refusal";

  fake_.github().clear_calls();
  auto third = sync.sync({more});
  EXPECT_TRUE(third.in_sync());
  EXPECT_EQ(third.targets[0].pushed, 22u);
  EXPECT_EQ(fake_.github().count(kRepoPut), 22u) << "what was done is not pushed again";
  const auto repo = SecretScope::repository("acme", "api");
  for (int i = 0; i < 60; ++i) {
    EXPECT_EQ(fake_.github().secret_value(repo, name(i)), canary(i)) << i;
  }
}

TEST_F(SecretSyncGithubTest, TwoReplicasSyncingOneTargetAtOncePushEachSecretOnce) {
  auto target_a = targets("      - {provider: gh}\n").at(0);
  auto target_b = targets("      - {provider: gh}\n").at(0);  // replica b's own provider set
  auto a = make("replica-a");
  auto b = make("replica-b");
  const auto want_a = desired(target_a, 100);
  const auto want_b = desired(target_b, 100);
  ASSERT_EQ(want_a.id, want_b.id) << "the same target id on both replicas";
  std::atomic<int> ready{0};
  SyncResult ra, rb;
  std::thread ta([&] {
    ++ready;
    while (ready < 2) std::this_thread::yield();
    ra = a.sync({want_a});
  });
  std::thread tb([&] {
    ++ready;
    while (ready < 2) std::this_thread::yield();
    rb = b.sync({want_b});
  });
  ta.join();
  tb.join();
  EXPECT_EQ(fake_.github().count(kRepoPut), 100u);
  EXPECT_EQ(ra.targets[0].pushed + rb.targets[0].pushed, 100u);
  std::set<std::string> put_paths;
  for (const auto& call : fake_.github().calls()) {
    if (call.route == kRepoPut) {
      EXPECT_TRUE(put_paths.insert(call.path).second) << call.path;
    }
  }
  // Whoever was skipped finds nothing to do afterwards.
  fake_.github().clear_calls();
  auto again = b.sync({want_b});
  EXPECT_TRUE(again.in_sync());
  EXPECT_EQ(writes(), 0u);
}

}  // namespace
}  // namespace orgd::secrets
