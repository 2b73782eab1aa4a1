#include "daemon/secrets/rotation.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "daemon/bus/memory_kv_bucket.hpp"

namespace orgd::secrets {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

// A vault in memory: versions with values, one active, one pending.
class FakeVault final : public RotationVault {
 public:
  struct Item {
    std::map<std::uint64_t, std::string> values;  // test values only
    std::uint64_t active = 0;
    std::uint64_t pending = 0;
    Clock::time_point since;
  };

  explicit FakeVault(const Clock& clock) : clock_(clock) {}

  void seed(const std::string& scope, const std::string& name, const std::string& value) {
    Item& item = items_[scope + "/" + name];
    const auto version = item.values.size() + 1;
    item.values[version] = value;
    item.active = version;
    item.since = clock_.now();
  }

  Result<std::optional<Active>> active(const std::string& scope,
                                       const std::string& name) override {
    if (unavailable) return unavailable_error();
    const auto it = items_.find(scope + "/" + name);
    if (it == items_.end() || it->second.active == 0) return std::optional<Active>{};
    return std::optional<Active>{Active{it->second.active, it->second.since}};
  }
  Result<std::uint64_t> put_pending(const std::string& scope, const std::string& name,
                                    Secret value) override {
    Item& item = items_[scope + "/" + name];
    const std::uint64_t version = item.values.empty() ? 1 : item.values.rbegin()->first + 1;
    item.values[version] = std::string{value.expose()};
    item.pending = version;
    ++puts;
    return version;
  }
  Result<Ok> activate(const std::string& scope, const std::string& name,
                      std::uint64_t version) override {
    Item& item = items_.at(scope + "/" + name);
    item.active = version;
    item.pending = 0;
    item.since = clock_.now();
    return Ok{};
  }
  Result<Ok> retire(const std::string& scope, const std::string& name,
                    std::uint64_t version) override {
    Item& item = items_.at(scope + "/" + name);
    item.values.erase(version);
    if (item.pending == version) item.pending = 0;
    retired.push_back(version);
    return Ok{};
  }

  // The newest value that a sync pushes: the pending one, else the active one.
  std::string pushed_value(const std::string& scope, const std::string& name) const {
    const Item& item = items_.at(scope + "/" + name);
    return item.values.at(item.pending != 0 ? item.pending : item.active);
  }
  const Item& item(const std::string& scope, const std::string& name) const {
    return items_.at(scope + "/" + name);
  }

  bool unavailable = false;
  int puts = 0;
  std::vector<std::uint64_t> retired;

 private:
  static Error unavailable_error() { return orgd::unavailable("vault bucket unreachable"); }
  const Clock& clock_;
  std::map<std::string, Item> items_;
};

// Targets that take the newest value unless told to fail.
struct FakeTargets {
  FakeVault* vault = nullptr;
  std::vector<std::string> names{"github acme/api", "github acme/web"};
  std::set<std::string> failing;
  std::map<std::string, std::string> held;  // target -> value it has
  int pushes = 0;

  RotationPush push() {
    return [this](const std::string& scope, const std::string& name) -> Result<PushOutcome> {
      ++pushes;
      PushOutcome outcome;
      outcome.targets = names;
      for (const auto& target : names) {
        if (failing.count(target) != 0) {
          outcome.behind.push_back(target);
          outcome.error = target + ": 503 Service Unavailable";
          continue;
        }
        held[target] = vault->pushed_value(scope, name);
      }
      return outcome;
    };
  }
};

class FakeIssuer final : public CredentialIssuer {
 public:
  Result<IssuedCredential> issue(const std::string& name) override {
    IssuedCredential c;
    c.id = "user-" + std::to_string(++issued);
    c.value = Secret::from("creds-of-" + c.id + "-for-" + name);
    return c;
  }
  Result<Ok> revoke(const std::string& id) override {
    revoked.push_back(id);
    return Ok{};
  }
  int issued = 0;
  std::vector<std::string> revoked;
};

class RotationTest : public ::testing::Test {
 protected:
  RotationTest() {
    state_ = kv_.open(BucketSpec{"orgd_sync"}).value();
    targets_.vault = &vault_;
    RotationPolicyConfig session;
    session.name = "SESSION_KEY";
    session.length = 40;
    session.overlap = hours{1};
    session.max_age = hours{24 * 30};
    policies_["SESSION_KEY"] = session;
    RotationPolicyConfig creds;
    creds.name = "NATS_CREDS";
    creds.issuer = "synadia";
    creds.overlap = minutes{10};
    policies_["NATS_CREDS"] = creds;
  }

  std::unique_ptr<RotationEngine> engine() {
    RotationEngine::Parts parts;
    parts.policies = policies_;
    parts.repos_of_name = {{"SESSION_KEY", {"api"}}};
    parts.vault = &vault_;
    parts.state = state_.get();
    parts.push = targets_.push();
    parts.issuers = {{"synadia", &issuer_}};
    parts.clock = &clock_;
    parts.events = [this](const RotationEvent& e) { events_.push_back(e.kind); };
    RotationEngine::Options options;
    options.first_backoff = seconds{5};
    options.max_backoff = minutes{1};
    options.give_up_after = hours{2};
    return std::make_unique<RotationEngine>(std::move(parts), options);
  }

  RotationRequest asked(const std::string& name) {
    RotationRequest r;
    r.name = name;
    r.actor = "test";
    r.request_id = "req-" + name;
    return r;
  }

  ManualClock clock_;
  MemoryKvStore kv_{clock_};
  std::unique_ptr<KvBucket> state_;
  FakeVault vault_{clock_};
  FakeTargets targets_;
  FakeIssuer issuer_;
  std::map<std::string, RotationPolicyConfig> policies_;
  std::vector<std::string> events_;
};

TEST_F(RotationTest, GeneratedValueReachesEveryTargetBeforeItIsActiveAndTheOldIsRetiredAfterOverlap) {
  vault_.seed("org", "SESSION_KEY", "old-session-key-value");
  auto rotations = engine();
  auto record = rotations->request(asked("SESSION_KEY"));
  ASSERT_TRUE(record.ok()) << record.error().message;
  EXPECT_EQ(record.value().scope, "org");
  EXPECT_EQ(record.value().old_version, 1u);

  auto after = rotations->advance("org", "SESSION_KEY");
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(after.value().phase, RotationRecord::Phase::active);
  EXPECT_EQ(after.value().new_version, 2u);
  // Pushed once, then listed again to verify, before activation.
  EXPECT_EQ(targets_.pushes, 2);
  const std::string fresh = vault_.pushed_value("org", "SESSION_KEY");
  EXPECT_EQ(fresh.size(), 40u);
  EXPECT_NE(fresh, "old-session-key-value");
  EXPECT_EQ(targets_.held["github acme/api"], fresh);
  EXPECT_EQ(targets_.held["github acme/web"], fresh);
  EXPECT_EQ(vault_.item("org", "SESSION_KEY").active, 2u);
  // Overlap: the old version is still there.
  EXPECT_THAT(vault_.retired, IsEmpty());
  clock_.advance(minutes{59});
  ASSERT_TRUE(rotations->advance("org", "SESSION_KEY").ok());
  EXPECT_THAT(vault_.retired, IsEmpty());
  clock_.advance(minutes{2});
  auto done = rotations->advance("org", "SESSION_KEY");
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done.value().phase, RotationRecord::Phase::retired);
  EXPECT_THAT(vault_.retired, ElementsAre(1u));
  EXPECT_THAT(events_, ElementsAre("requested", "generated", "pushed", "active", "retired"));
}

TEST_F(RotationTest, AFailingTargetKeepsTheOldValueActiveAndIsRetriedUntilItRecovers) {
  vault_.seed("org", "SESSION_KEY", "old-session-key-value");
  targets_.failing = {"github acme/web"};
  auto rotations = engine();
  ASSERT_TRUE(rotations->request(asked("SESSION_KEY")).ok());
  auto behind = rotations->advance("org", "SESSION_KEY");
  ASSERT_TRUE(behind.ok());
  EXPECT_EQ(behind.value().phase, RotationRecord::Phase::pushing);
  EXPECT_THAT(behind.value().behind, ElementsAre("github acme/web"));
  EXPECT_EQ(vault_.item("org", "SESSION_KEY").active, 1u);  // the old value is still the one
  // Backoff: nothing is tried before it ends.
  const int pushes = targets_.pushes;
  clock_.advance(seconds{4});
  ASSERT_TRUE(rotations->advance("org", "SESSION_KEY").ok());
  EXPECT_EQ(targets_.pushes, pushes);
  clock_.advance(seconds{2});
  ASSERT_TRUE(rotations->advance("org", "SESSION_KEY").ok());
  EXPECT_EQ(targets_.pushes, pushes + 1);
  // The second failure waits twice as long.
  auto again = rotations->get("org", "SESSION_KEY");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value()->attempts, 2);
  EXPECT_EQ(again.value()->next_attempt_at, clock_.now() + seconds{10});

  targets_.failing.clear();
  clock_.advance(seconds{10});
  auto recovered = rotations->advance("org", "SESSION_KEY");
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(recovered.value().phase, RotationRecord::Phase::active);
  EXPECT_THAT(recovered.value().behind, IsEmpty());
  EXPECT_EQ(targets_.held["github acme/web"], vault_.pushed_value("org", "SESSION_KEY"));
  EXPECT_THAT(events_, ::testing::Contains("behind"));
}

TEST_F(RotationTest, GivingUpDropsTheNewValueAndKeepsTheOld) {
  vault_.seed("org", "SESSION_KEY", "old-session-key-value");
  targets_.failing = {"github acme/web"};
  auto rotations = engine();
  ASSERT_TRUE(rotations->request(asked("SESSION_KEY")).ok());
  for (int i = 0; i < 200; ++i) {
    (void)rotations->advance("org", "SESSION_KEY");
    clock_.advance(minutes{1});
  }
  auto record = rotations->get("org", "SESSION_KEY");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record.value()->phase, RotationRecord::Phase::failed);
  EXPECT_THAT(record.value()->error, ::testing::HasSubstr("503"));
  EXPECT_EQ(vault_.item("org", "SESSION_KEY").active, 1u);
  EXPECT_THAT(vault_.retired, ElementsAre(2u));  // the new version, never the old
  EXPECT_EQ(vault_.pushed_value("org", "SESSION_KEY"), "old-session-key-value");
}

TEST_F(RotationTest, ARestartedEngineFinishesWhatTheLastOneStarted) {
  vault_.seed("org", "SESSION_KEY", "old-session-key-value");
  targets_.failing = {"github acme/web"};
  {
    auto first = engine();
    ASSERT_TRUE(first->request(asked("SESSION_KEY")).ok());
    ASSERT_TRUE(first->advance("org", "SESSION_KEY").ok());
  }  // orgd dies: only the KV record is left
  targets_.failing.clear();
  clock_.advance(minutes{1});
  auto second = engine();
  EXPECT_EQ(second->tick(), 1u);
  auto record = second->get("org", "SESSION_KEY");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record.value()->phase, RotationRecord::Phase::active);
  EXPECT_EQ(vault_.puts, 1);  // the value generated before the crash, not a second one
}

TEST_F(RotationTest, ARepeatedRequestReturnsTheRotationInProgress) {
  vault_.seed("org", "SESSION_KEY", "old-session-key-value");
  targets_.failing = {"github acme/web"};
  auto rotations = engine();
  auto first = rotations->request(asked("SESSION_KEY"));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(rotations->advance("org", "SESSION_KEY").ok());
  auto other = asked("SESSION_KEY");
  other.request_id = "another";
  auto second = rotations->request(other);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second.value().id, first.value().id);
  EXPECT_EQ(vault_.puts, 1);
}

TEST_F(RotationTest, IssuedCredentialsAreRevokedOneRotationLater) {
  vault_.seed("org", "NATS_CREDS", "first-creds");
  auto rotations = engine();
  ASSERT_TRUE(rotations->request(asked("NATS_CREDS")).ok());
  ASSERT_TRUE(rotations->advance("org", "NATS_CREDS").ok());
  clock_.advance(minutes{11});
  auto first = rotations->advance("org", "NATS_CREDS");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first.value().phase, RotationRecord::Phase::retired);
  EXPECT_EQ(first.value().issued_id, "user-1");
  EXPECT_THAT(issuer_.revoked, IsEmpty());  // the seeded creds were not issued by orgd
  EXPECT_EQ(vault_.pushed_value("org", "NATS_CREDS"), "creds-of-user-1-for-NATS_CREDS");

  auto next = asked("NATS_CREDS");
  next.request_id = "second";
  ASSERT_TRUE(rotations->request(next).ok());
  ASSERT_TRUE(rotations->advance("org", "NATS_CREDS").ok());
  EXPECT_THAT(issuer_.revoked, IsEmpty());  // the overlap: user-1 still valid
  clock_.advance(minutes{11});
  ASSERT_TRUE(rotations->advance("org", "NATS_CREDS").ok());
  EXPECT_THAT(issuer_.revoked, ElementsAre("user-1"));
}

TEST_F(RotationTest, MaxAgeRequestsARotationOnTheTick) {
  vault_.seed("org", "SESSION_KEY", "old-session-key-value");
  auto rotations = engine();
  clock_.advance(hours{24 * 29});
  EXPECT_EQ(rotations->tick(), 0u);
  auto none = rotations->get("org", "SESSION_KEY");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none.value().has_value());
  clock_.advance(hours{24});
  (void)rotations->tick();
  auto due = rotations->get("org", "SESSION_KEY");
  ASSERT_TRUE(due.ok());
  ASSERT_TRUE(due.value().has_value());
  EXPECT_EQ(due.value()->actor, "orgd:schedule");
  EXPECT_EQ(due.value()->phase, RotationRecord::Phase::active);
}

TEST_F(RotationTest, ASecretWithoutPolicyOrWithABadScopeIsRefused) {
  auto rotations = engine();
  auto unknown = rotations->request(asked("NOPE"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::not_found);
  auto bad = asked("SESSION_KEY");
  bad.scope = "../etc";
  auto refused = rotations->request(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::invalid_argument);
}

TEST_F(RotationTest, ARepoSecretIsRotatedInTheRepoScope) {
  vault_.seed("api", "SESSION_KEY", "api-own-value");
  auto rotations = engine();
  auto record = rotations->request(asked("SESSION_KEY"));
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record.value().scope, "api");
}

TEST_F(RotationTest, RecordsRoundTripAndGarbageIsAnError) {
  RotationRecord r;
  r.id = "r-1";
  r.name = "A";
  r.scope = "org";
  r.phase = RotationRecord::Phase::active;
  r.behind = {"x"};
  r.retire_at = clock_.now();
  auto back = decode_rotation(encode_rotation(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back.value().phase, RotationRecord::Phase::active);
  EXPECT_EQ(back.value().retire_at, r.retire_at);
  EXPECT_THAT(back.value().behind, ElementsAre("x"));
  EXPECT_FALSE(decode_rotation("{").ok());
  EXPECT_FALSE(decode_rotation(R"({"id":"r","name":"A","scope":"org","phase":"bogus"})").ok());
  EXPECT_FALSE(decode_rotation(R"({"id":1})").ok());
}

}  // namespace
}  // namespace orgd::secrets
