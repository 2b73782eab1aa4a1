// The sync engine without a network: the pure planner (every reason a name is put, removed or
// kept), the orgd_sync records and claims over a MemoryKvBucket, keyed digests, and SecretSync
// against an in-memory target that counts its calls and fails on demand (per-name errors, a
// rate limit stopping the target, a lost claim, two replicas over one bucket).
#include "daemon/secrets/sync_planner.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/memory_kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/secrets/secret_sync.hpp"
#include "daemon/secrets/sync_state.hpp"

namespace orgd::secrets {
namespace {

using namespace std::chrono_literals;

const Clock::time_point kT0{std::chrono::seconds{1'700'000'000}};

SyncRecord record(const std::string& digest, std::optional<Clock::time_point> target_time = kT0,
                  Clock::time_point pushed_at = kT0) {
  SyncRecord r;
  r.digest = digest;
  r.pushed_at = pushed_at;
  r.target_updated_at = target_time;
  return r;
}

const PlanEntry* find(const TargetPlan& plan, const std::string& name) {
  for (const auto& e : plan.entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

// ---- planner ------------------------------------------------------------------------------------

TEST(SyncPlanner, EveryReasonForAPutARemovalOrNothing) {
  TargetRecords records{
      {"SAME", {record("d-same"), 1}},       {"CHANGED", {record("d-old"), 2}},
      {"GONE", {record("d-gone"), 3}},       {"DRIFTED", {record("d-drift"), 4}},
      {"DROPPED", {record("d-dropped"), 5}},
  };
  const std::vector<SecretInfo> listing{
      {"SAME", kT0},    {"CHANGED", kT0}, {"DRIFTED", kT0 + 1s},
      {"DROPPED", kT0}, {"NEW", kT0},     {"SOMEONE_ELSES", kT0},
  };
  const std::vector<DesiredDigest> desired{{"SAME", "d-same"},
                                           {"CHANGED", "d-new"},
                                           {"GONE", "d-gone"},
                                           {"DRIFTED", "d-drift"},
                                           {"NEW", "d-brand-new"}};
  const auto plan = plan_target("t1", "target one", false, desired, records, listing);

  auto expect = [&](const std::string& name, SyncAction action, SyncReason reason) {
    const PlanEntry* e = find(plan, name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->action, action) << name;
    EXPECT_EQ(e->reason, reason) << name << ": " << reason_name(e->reason);
  };
  expect("SAME", SyncAction::none, SyncReason::in_sync);
  expect("CHANGED", SyncAction::put, SyncReason::changed);
  expect("GONE", SyncAction::put, SyncReason::missing);
  expect("DRIFTED", SyncAction::put, SyncReason::drifted);
  expect("NEW", SyncAction::put, SyncReason::new_secret);
  expect("DROPPED", SyncAction::remove, SyncReason::no_longer_desired);
  expect("SOMEONE_ELSES", SyncAction::none, SyncReason::unmanaged);
  EXPECT_EQ(plan.entries.size(), 7u);
  EXPECT_EQ(plan.count(SyncAction::put), 4u);
  EXPECT_EQ(plan.count(SyncAction::remove), 1u);
  EXPECT_EQ(reason_name(SyncReason::new_secret), "new");
}

TEST(SyncPlanner, UnmanagedSecretsAreRemovedOnlyWithPrune) {
  const std::vector<SecretInfo> listing{{"OURS", kT0}, {"THEIRS", kT0}};
  const TargetRecords records{{"OURS", {record("d"), 1}}};
  const std::vector<DesiredDigest> desired{{"OURS", "d"}};
  const auto kept = plan_target("t", "t", false, desired, records, listing);
  EXPECT_EQ(find(kept, "THEIRS")->action, SyncAction::none);
  const auto pruned = plan_target("t", "t", true, desired, records, listing);
  EXPECT_EQ(find(pruned, "THEIRS")->action, SyncAction::remove);
  EXPECT_EQ(find(pruned, "THEIRS")->reason, SyncReason::unmanaged);
  EXPECT_EQ(find(pruned, "OURS")->action, SyncAction::none);
}

TEST(SyncPlanner, ANoLongerDesiredNameGoneFromTheTargetOnlyDropsItsRecord) {
  const TargetRecords records{{"OLD", {record("d"), 1}}};
  const auto plan = plan_target("t", "t", false, {}, records, {});
  ASSERT_EQ(plan.entries.size(), 1u);
  EXPECT_EQ(plan.entries[0].action, SyncAction::remove);
  EXPECT_FALSE(plan.entries[0].listed_name.has_value()) << "nothing to call the target for";
}

TEST(SyncPlanner, NamesMatchIgnoringCaseAsGithubUpperCasesThem) {
  const TargetRecords records{{"database_url", {record("d"), 1}}};
  const std::vector<SecretInfo> listing{{"DATABASE_URL", kT0}};
  const auto plan = plan_target("t", "t", true, {{"database_url", "d"}}, records, listing);
  ASSERT_EQ(plan.entries.size(), 1u) << "not also unmanaged";
  EXPECT_EQ(plan.entries[0].action, SyncAction::none);
  EXPECT_EQ(plan.entries[0].listed_name, "DATABASE_URL");
}

TEST(SyncPlanner, WithoutATargetTimeDriftIsMeasuredFromThePushWithSlack) {
  const TargetRecords records{{"A", {record("d", std::nullopt, kT0), 1}},
                              {"B", {record("d", std::nullopt, kT0), 2}}};
  const std::vector<SecretInfo> listing{{"A", kT0 + 30s}, {"B", kT0 + kTargetClockSlack + 1s}};
  const auto plan = plan_target("t", "t", false, {{"A", "d"}, {"B", "d"}}, records, listing);
  EXPECT_EQ(find(plan, "A")->action, SyncAction::none);
  EXPECT_EQ(find(plan, "A")->adopt_updated_at, kT0 + 30s) << "noted for the next sync";
  EXPECT_EQ(find(plan, "B")->reason, SyncReason::drifted);
}

TEST(SyncPlanner, ATargetThatShowsNoTimesIsJudgedByPresenceAndDigestOnly) {
  const TargetRecords records{{"A", {record("d"), 1}}};
  const auto plan = plan_target("t", "t", false, {{"A", "d"}}, records, {{"A", std::nullopt}});
  EXPECT_EQ(find(plan, "A")->action, SyncAction::none);
}

// ---- records, digests, claims -------------------------------------------------------------------

TEST(SyncState, DigestsAreKeyedAndBoundToTargetAndName) {
  const Secret key = Secret::from(std::string(32, 'k'));
  const Secret other_key = Secret::from(std::string(32, 'K'));
  const Secret value = Secret::from("hunter2-canary");
  const auto d = secret_digest(key, "t1", "A", value).value();
  EXPECT_EQ(d.size(), 64u);
  EXPECT_EQ(d, secret_digest(key, "t1", "A", Secret::from("hunter2-canary")).value());
  EXPECT_NE(d, secret_digest(key, "t2", "A", value).value());
  EXPECT_NE(d, secret_digest(key, "t1", "B", value).value());
  EXPECT_NE(d, secret_digest(other_key, "t1", "A", value).value());
  EXPECT_NE(d, secret_digest(key, "t1", "A", Secret::from("hunter3-canary")).value());
  // Length prefixes: moving bytes between fields changes the digest.
  EXPECT_NE(secret_digest(key, "t1", "AB", Secret::from("C")).value(),
            secret_digest(key, "t1", "A", Secret::from("BC")).value());
  EXPECT_FALSE(secret_digest(Secret::from("short"), "t1", "A", value));
}

TEST(SyncState, TargetIdsAreStableKeyTokensOfProviderAndDescription) {
  const auto id = target_id("gh", "github acme/api");
  EXPECT_EQ(id, target_id("gh", "github acme/api"));
  EXPECT_NE(id, target_id("gh2", "github acme/api"));
  EXPECT_NE(id, target_id("gh", "github acme/web"));
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(SyncState, RecordKeysRoundTripAndEscapeNamesThatAreNotKeyTokens) {
  EXPECT_EQ(record_key("t", "DATABASE_URL"), "t.DATABASE_URL");
  EXPECT_EQ(record_name("t", "t.DATABASE_URL"), "DATABASE_URL");
  const std::string odd = "a.b c";
  const auto key = record_key("t", odd);
  EXPECT_EQ(key.find(' '), std::string::npos);
  EXPECT_EQ(key.find('.', 2), std::string::npos);
  EXPECT_EQ(record_name("t", key), odd);
  EXPECT_FALSE(record_name("t", "u.A"));
  EXPECT_FALSE(record_name("t", claim_key("t")));
}

TEST(SyncState, RecordsAreSavedRevisionCheckedAndNeverHoldTheValue) {
  ManualClock clock;
  MemoryKvStore kv{clock};
  auto bucket = kv.open({"orgd_sync", ""}).value();
  SyncState state{*bucket, clock};
  const Secret key = Secret::from(std::string(32, 'k'));
  SyncRecord r = record(secret_digest(key, "t", "A", Secret::from("value-canary")).value());
  r.version = 3;
  r.scope = "api";
  auto first = state.save("t", "A", r, 0);
  ASSERT_TRUE(first);
  EXPECT_EQ(state.save("t", "A", r, 0).error().code, ErrorCode::conflict) << "create twice";
  auto second = state.save("t", "A", r, first.value());
  ASSERT_TRUE(second);
  EXPECT_EQ(state.save("t", "A", r, first.value()).error().code, ErrorCode::conflict);
  ASSERT_TRUE(state.save("t", "B", r, 0));
  ASSERT_TRUE(state.save("u", "A", r, 0));

  auto loaded = state.load("t");
  ASSERT_TRUE(loaded);
  ASSERT_EQ(loaded.value().size(), 2u);
  EXPECT_EQ(loaded.value().at("A").revision, second.value());
  EXPECT_EQ(loaded.value().at("A").record.version, 3u);
  EXPECT_EQ(loaded.value().at("A").record.scope, "api");
  EXPECT_EQ(loaded.value().at("A").record.target_updated_at, kT0);
  const auto stored = bucket->get("t.A").value()->value;
  EXPECT_EQ(stored.find("value-canary"), std::string::npos);

  ASSERT_TRUE(state.drop("t", "A"));
  EXPECT_EQ(state.load("t").value().size(), 1u);
}

TEST(SyncState, AClaimIsExclusiveUntilItExpiresOrIsReleased) {
  ManualClock clock;
  MemoryKvStore kv{clock};
  auto bucket = kv.open({"orgd_sync", ""}).value();
  SyncState state{*bucket, clock};
  auto a = state.claim("t", "replica-a", 60s);
  ASSERT_TRUE(a);
  auto b = state.claim("t", "replica-b", 60s);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, ErrorCode::conflict);
  EXPECT_NE(b.error().message.find("replica-a"), std::string::npos);
  EXPECT_TRUE(state.claim("u", "replica-b", 60s)) << "claims are per target";

  clock.advance(50s);
  auto renewed = state.renew(a.value(), 60s);
  ASSERT_TRUE(renewed);
  clock.advance(50s);
  EXPECT_FALSE(state.claim("t", "replica-b", 60s)) << "renewed: still held";
  clock.advance(11s);
  auto taken = state.claim("t", "replica-b", 60s);
  ASSERT_TRUE(taken) << "expired: taken over";
  EXPECT_EQ(state.renew(renewed.value(), 60s).error().code, ErrorCode::conflict) << "lost";
  EXPECT_FALSE(state.release(renewed.value())) << "a lost claim is not released over the new one";
  EXPECT_FALSE(state.claim("t", "replica-a", 60s));
  ASSERT_TRUE(state.release(taken.value()));
  EXPECT_TRUE(state.claim("t", "replica-a", 60s));
}

// ---- SecretSync over an in-memory target
// ---------------------------------------------------------

// A target in memory: values kept as digests of nothing secret (the test's values are not real
// secrets), calls counted, failures scripted per name.
class MemoryTarget final : public SecretTarget {
 public:
  explicit MemoryTarget(const Clock& clock, std::string name = "memory target")
      : clock_(clock), name_(std::move(name)) {}

  std::string describe() const override { return name_; }
  Result<std::vector<SecretInfo>> list() override {
    std::lock_guard lock(mutex_);
    ++lists;
    if (fail_list) return unavailable("listing refused");
    std::vector<SecretInfo> out;
    for (const auto& [name, s] : secrets) out.push_back({name, s.updated_at});
    return out;
  }
  Result<Ok> put(const std::string& name, const Secret& value) override {
    std::lock_guard lock(mutex_);
    ++puts;
    put_names.push_back(name);
    if (auto it = fail.find(name); it != fail.end()) return it->second;
    secrets[name] = {std::string(value.expose()), clock_.now()};
    return Ok{};
  }
  Result<Ok> remove(const std::string& name) override {
    std::lock_guard lock(mutex_);
    ++removes;
    if (secrets.erase(name) == 0) return not_found("no such secret");
    return Ok{};
  }

  struct Stored {
    std::string value;
    Clock::time_point updated_at;
  };
  std::mutex mutex_;
  std::map<std::string, Stored> secrets;
  std::map<std::string, Error> fail;
  std::vector<std::string> put_names;
  bool fail_list = false;
  int lists = 0, puts = 0, removes = 0;

 private:
  const Clock& clock_;
  std::string name_;
};

class SecretSyncTest : public ::testing::Test {
 protected:
  SecretSyncTest() : bucket_(kv_.open({"orgd_sync", ""}).value()) {}

  SecretSync make(const std::string& replica) {
    SyncOptions options;
    options.replica_id = replica;
    options.claim_ttl = 60s;
    return SecretSync{*bucket_, Secret::from(std::string(32, 'k')), options, clock_};
  }

  SyncTarget sync_target(int count, bool prune = false, const std::string& suffix = "") {
    std::vector<DesiredSecret> desired;
    for (int i = 0; i < count; ++i) {
      desired.push_back(
          {"S" + std::to_string(i),
           std::make_shared<const Secret>(Secret::from("v" + std::to_string(i) + suffix)), 1,
           "api"});
    }
    return SyncTarget::make("mem", target_, prune, std::move(desired));
  }

  ManualClock clock_{kT0};
  MemoryKvStore kv_{clock_};
  std::unique_ptr<KvBucket> bucket_;
  std::shared_ptr<MemoryTarget> target_ = std::make_shared<MemoryTarget>(clock_);
};

TEST_F(SecretSyncTest, AFullSyncThenANoChangeSyncOfOneListAndNoWrites) {
  auto sync = make("a");
  auto first = sync.sync({sync_target(20)});
  ASSERT_EQ(first.targets.size(), 1u);
  EXPECT_TRUE(first.in_sync());
  EXPECT_EQ(first.targets[0].pushed, 20u);
  EXPECT_EQ(target_->secrets.at("S7").value, "v7");
  EXPECT_EQ(target_->lists, 2) << "one to plan, one to note the target's times";

  target_->lists = target_->puts = target_->removes = 0;
  clock_.advance(10min);
  auto second = sync.sync({sync_target(20)});
  EXPECT_TRUE(second.in_sync());
  EXPECT_EQ(second.targets[0].unchanged, 20u);
  EXPECT_EQ(second.targets[0].pushed, 0u);
  EXPECT_EQ(target_->lists, 1);
  EXPECT_EQ(target_->puts + target_->removes, 0);
}

TEST_F(SecretSyncTest, ADryRunPlansWithoutWritingOrClaiming) {
  auto sync = make("a");
  auto plan = sync.sync({sync_target(3)}, true);
  EXPECT_TRUE(plan.dry_run);
  EXPECT_EQ(plan.targets[0].plan.count(SyncAction::put), 3u);
  EXPECT_EQ(target_->puts, 0);
  EXPECT_TRUE(bucket_->keys(">").value().empty()) << "no record, no claim";
}

TEST_F(SecretSyncTest, TheResultAsJsonNamesActionsAndReasonsButNoValueOrDigest) {
  auto sync = make("a");
  target_->fail["S1"] = permanent(invalid_argument("S1: refused"));
  const auto t = sync_target(3);
  const auto dry = to_json(sync.sync({t}, true));
  EXPECT_TRUE(dry["dry_run"].get<bool>());
  ASSERT_EQ(dry["targets"][0]["plan"].size(), 3u);
  EXPECT_EQ(dry["targets"][0]["plan"][0],
            (nlohmann::json{{"name", "S0"}, {"action", "put"}, {"reason", "new"}}));
  const auto done = to_json(sync.sync({t}));
  EXPECT_FALSE(done["in_sync"].get<bool>());
  EXPECT_EQ(done["targets"][0]["pushed"], 2);
  EXPECT_EQ(done["targets"][0]["failures"][0]["name"], "S1");
  EXPECT_EQ(done["targets"][0]["failures"][0]["retry"], "permanent");
  EXPECT_EQ(done["targets"][0]["behind"], nlohmann::json::array({"S1"}));
  const auto digest =
      secret_digest(Secret::from(std::string(32, 'k')), t.id, "S0", Secret::from("v0")).value();
  for (const auto& text : {dry.dump(), done.dump()}) {
    EXPECT_EQ(text.find("\"v0\""), std::string::npos) << text;
    EXPECT_EQ(text.find("\"v2\""), std::string::npos) << text;
    EXPECT_EQ(text.find(digest), std::string::npos) << text;
  }
}

TEST_F(SecretSyncTest, AChangedValueIsPushedAgainAndAnUnchangedOneNot) {
  auto sync = make("a");
  ASSERT_TRUE(sync.sync({sync_target(3)}).in_sync());
  target_->put_names.clear();
  auto t = sync_target(3);
  t.desired[1].value = std::make_shared<const Secret>(Secret::from("rotated"));
  auto result = sync.sync({t});
  EXPECT_EQ(result.targets[0].pushed, 1u);
  EXPECT_EQ(target_->put_names, std::vector<std::string>{"S1"});
  EXPECT_EQ(target_->secrets.at("S1").value, "rotated");
}

TEST_F(SecretSyncTest, FailuresArePerNameAndARateLimitStopsTheTargetUntilTheNextSync) {
  auto sync = make("a");
  target_->fail["S2"] = permanent(invalid_argument("S2: refused by the target"));
  target_->fail["S5"] = rate_limited("rate limited", 30s);
  auto first = sync.sync({sync_target(10)});
  const auto& r = first.targets[0];
  EXPECT_FALSE(first.in_sync());
  EXPECT_EQ(r.pushed, 4u) << "S0 S1 S3 S4";
  ASSERT_EQ(r.failures.size(), 2u);
  EXPECT_EQ(r.failures[0].name, "S2");
  EXPECT_EQ(r.failures[0].retry, Retry::permanent);
  EXPECT_EQ(r.failures[1].name, "S5");
  EXPECT_EQ(r.failures[1].retry, Retry::rate_limited);
  EXPECT_EQ(r.behind, (std::vector<std::string>{"S2", "S5", "S6", "S7", "S8", "S9"}));
  EXPECT_EQ(target_->puts, 6) << "nothing tried after the rate limit";

  target_->fail.clear();
  target_->put_names.clear();
  auto second = sync.sync({sync_target(10)});
  EXPECT_TRUE(second.in_sync());
  EXPECT_EQ(target_->put_names, (std::vector<std::string>{"S2", "S5", "S6", "S7", "S8", "S9"}))
      << "what was done is not done again";
}

TEST_F(SecretSyncTest, AFailedListingSyncsNothingAtTheTarget) {
  auto sync = make("a");
  target_->fail_list = true;
  auto result = sync.sync({sync_target(3)});
  ASSERT_TRUE(result.targets[0].error.has_value());
  EXPECT_EQ(target_->puts, 0);
  EXPECT_TRUE(make("b").sync({sync_target(0)}).targets[0].error.has_value())
      << "still failing, but the claim was released: not claimed_elsewhere";
  EXPECT_FALSE(make("b").sync({sync_target(0)}).targets[0].claimed_elsewhere);
}

TEST_F(SecretSyncTest, NoLongerDesiredNamesAreRemovedWithTheirRecordsAndUnmanagedOnesKept) {
  auto sync = make("a");
  ASSERT_TRUE(sync.sync({sync_target(3)}).in_sync());
  target_->secrets["HAND_MADE"] = {"x", clock_.now()};
  auto result = sync.sync({sync_target(2)});
  EXPECT_EQ(result.targets[0].removed, 1u);
  EXPECT_FALSE(target_->secrets.count("S2"));
  EXPECT_TRUE(target_->secrets.count("HAND_MADE"));
  EXPECT_FALSE(bucket_->get(record_key(result.targets[0].target_id, "S2")).value().has_value());

  auto pruned = sync.sync({sync_target(2, true)});
  EXPECT_EQ(pruned.targets[0].removed, 1u);
  EXPECT_FALSE(target_->secrets.count("HAND_MADE"));
}

TEST_F(SecretSyncTest, AReplicaSkipsATargetAnotherHoldsAndTakesItOverOnceTheClaimExpires) {
  SyncState state{*bucket_, clock_};
  const auto t = sync_target(5);
  auto held = state.claim(t.id, "replica-a", 60s);
  ASSERT_TRUE(held);
  auto b = make("replica-b");
  auto skipped = b.sync({t});
  EXPECT_TRUE(skipped.targets[0].claimed_elsewhere);
  EXPECT_EQ(target_->lists + target_->puts, 0) << "not even listed";
  clock_.advance(61s);
  auto taken = b.sync({t});
  EXPECT_TRUE(taken.in_sync());
  EXPECT_EQ(taken.targets[0].pushed, 5u);
}

TEST_F(SecretSyncTest, TwoReplicasSyncingAtOnceNeverPushTheSameChangeTwice) {
  const auto t = sync_target(200);
  auto a = make("replica-a");
  auto b = make("replica-b");
  std::atomic<int> go{0};
  SyncResult ra, rb;
  std::thread ta([&] {
    ++go;
    while (go < 2) std::this_thread::yield();
    ra = a.sync({t});
  });
  std::thread tb([&] {
    ++go;
    while (go < 2) std::this_thread::yield();
    rb = b.sync({t});
  });
  ta.join();
  tb.join();
  EXPECT_EQ(target_->puts, 200);
  std::set<std::string> once(target_->put_names.begin(), target_->put_names.end());
  EXPECT_EQ(once.size(), 200u);
  EXPECT_EQ(ra.targets[0].pushed + rb.targets[0].pushed, 200u);
}

TEST_F(SecretSyncTest, AClaimLostMidSyncStopsTheRunThere) {
  SyncOptions options;
  options.replica_id = "slow";
  options.claim_ttl = 60s;
  SecretSync slow{*bucket_, Secret::from(std::string(32, 'k')), options, clock_};
  // Each put takes 40 s on the manual clock; after the second the claim is renewed, so take it
  // over in between by moving time past its expiry from the target itself.
  struct SlowTarget final : SecretTarget {
    SlowTarget(ManualClock& c, KvBucket& b, std::string id) : clock(c), bucket(b), id(id) {}
    std::string describe() const override { return "slow"; }
    Result<std::vector<SecretInfo>> list() override { return std::vector<SecretInfo>{}; }
    Result<Ok> put(const std::string&, const Secret&) override {
      ++puts;
      clock.advance(70s);  // past the ttl: another replica takes the claim now
      if (puts == 1) {
        SyncState other{bucket, clock};
        taken = other.claim(id, "fast", 60s).ok();
      }
      return Ok{};
    }
    Result<Ok> remove(const std::string&) override { return Ok{}; }
    ManualClock& clock;
    KvBucket& bucket;
    std::string id;
    int puts = 0;
    bool taken = false;
  };
  const std::string id = target_id("mem", "slow");
  auto target = std::make_shared<SlowTarget>(clock_, *bucket_, id);
  std::vector<DesiredSecret> desired;
  for (int i = 0; i < 4; ++i) {
    desired.push_back(
        {"S" + std::to_string(i), std::make_shared<const Secret>(Secret::from("v")), 1, "api"});
  }
  auto result = slow.sync({SyncTarget::make("mem", target, false, std::move(desired))});
  EXPECT_TRUE(target->taken);
  EXPECT_EQ(target->puts, 1) << "the claim's renewal failed before the second put";
  ASSERT_TRUE(result.targets[0].error.has_value());
  EXPECT_EQ(result.targets[0].behind, (std::vector<std::string>{"S1", "S2", "S3"}));
}

}  // namespace
}  // namespace orgd::secrets

namespace orgd::secrets {
namespace {

// A put slower than the claim's ttl (an API's retries, a rate-limit wait) keeps the claim: it is
// renewed in wall time while the call runs, so another replica asking for the target meanwhile
// is refused, and the sync finishes everything it planned. (With renewals only between items,
// the claim expired during the put and the other replica took the target over.)
TEST(SecretSyncClaims, ACallSlowerThanTheTtlKeepsTheClaim) {
  MemoryKvStore kv{system_clock()};
  auto bucket = kv.open({"orgd_sync", ""}).value();
  SyncOptions options;
  options.replica_id = "slow";
  options.claim_ttl = 400ms;
  SecretSync sync{*bucket, Secret::from(std::string(32, 'k')), options, system_clock()};
  const std::string id = target_id("mem", "slow");

  struct SlowTarget final : SecretTarget {
    SlowTarget(KvBucket& b, std::string i) : bucket(b), id(std::move(i)) {}
    std::string describe() const override { return "slow"; }
    Result<std::vector<SecretInfo>> list() override { return std::vector<SecretInfo>{}; }
    Result<Ok> put(const std::string&, const Secret&) override {
      // This call lasts three ttls; every 100 ms another replica asks for the claim.
      SyncState other{bucket, system_clock()};
      const auto end = std::chrono::steady_clock::now() + 1200ms;
      while (std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(100ms);
        ++asked;
        if (other.claim(id, "fast", 400ms).ok()) ++taken;
      }
      return Ok{};
    }
    Result<Ok> remove(const std::string&) override { return Ok{}; }
    KvBucket& bucket;
    std::string id;
    int asked = 0;
    int taken = 0;
  };
  auto target = std::make_shared<SlowTarget>(*bucket, id);
  std::vector<DesiredSecret> desired;
  for (int i = 0; i < 2; ++i) {
    desired.push_back(
        {"S" + std::to_string(i), std::make_shared<const Secret>(Secret::from("v")), 1, "api"});
  }
  auto result = sync.sync({SyncTarget::make("mem", target, false, std::move(desired))});
  EXPECT_GE(target->asked, 20);
  EXPECT_EQ(target->taken, 0) << "another replica took the target over during a slow put";
  EXPECT_TRUE(result.in_sync()) << (result.targets[0].error ? result.targets[0].error->message : "");
  EXPECT_EQ(result.targets[0].pushed, 2u);

  // Released at the end: the other replica gets it at once.
  SyncState other{*bucket, system_clock()};
  EXPECT_TRUE(other.claim(id, "fast", 400ms).ok());
}

}  // namespace
}  // namespace orgd::secrets
