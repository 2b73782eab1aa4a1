// DeployStore on memory buckets and a manual clock: records by compare-and-set (a header and a
// key per step, records stored whole read and split), locks all or none with takeover of stale
// ones, leases that expire, request claims, a lost NATS.
#include "daemon/deploy/deploy_store.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "daemon/bus/memory_kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/deploy/deploy_state.hpp"
#include "tests/support/memory_deploy_store.hpp"

namespace orgd::deploy {
namespace {

using namespace std::chrono_literals;

class DeployStoreTest : public ::testing::Test {
 protected:
  // A record of `id` locking `repos` in dev, written to the store.
  Record stored(const std::string& id, const std::vector<std::string>& repos) {
    v1::DeployRequest request;
    request.set_env("dev");
    for (const auto& repo : repos) request.add_repos(repo);
    Record record = new_record(id, {repos}, request, FailurePolicy::stop, clock_.now());
    mark_running(record, "orgd-a", clock_.now());
    EXPECT_TRUE(store_->create(record));
    return record;
  }
  void finish(const std::string& id) {
    auto loaded = store_->load(id);
    ASSERT_TRUE(loaded && loaded.value());
    mark_finished(loaded.value()->record, Record::succeeded, clock_.now());
    ASSERT_TRUE(store_->update(loaded.value()->record, loaded.value()->revision));
  }
  std::optional<std::string> holder(const std::string& repo) {
    auto held = store_->lock_holder(repo, "dev");
    EXPECT_TRUE(held) << held.error().message;
    return held ? held.value() : std::nullopt;
  }

  ManualClock clock_;
  MemoryKvStore kv_{clock_};
  std::unique_ptr<DeployStore> store_ = testing::memory_deploy_store(kv_, 10s);
};

TEST_F(DeployStoreTest, RecordsAreUpdatedByCompareAndSet) {
  Record record = stored("d1", {"api"});
  auto loaded = store_->load("d1");
  ASSERT_TRUE(loaded && loaded.value());
  EXPECT_EQ(loaded.value()->record.deploy_id(), "d1");
  const std::uint64_t revision = loaded.value()->revision;
  record.set_reason("first writer");
  ASSERT_TRUE(store_->update(record, revision));
  record.set_reason("second writer, at the old revision");
  auto stale = store_->update(record, revision);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::conflict);
  EXPECT_EQ(store_->load("d1").value()->record.reason(), "first writer");
  EXPECT_FALSE(store_->load("d9").value().has_value());
}

TEST_F(DeployStoreTest, ActiveAndStoredIdsAreListedInOrder) {
  stored("20261126-091500-b", {"api"});
  stored("20261126-091500-a", {"web"});
  ASSERT_TRUE(store_->mark_active("20261126-091500-b"));
  ASSERT_TRUE(store_->mark_active("20261126-091500-a"));
  ASSERT_TRUE(store_->clear_active("20261126-091500-b"));
  EXPECT_EQ(store_->active_ids().value(), (std::vector<std::string>{"20261126-091500-a"}));
  EXPECT_EQ(store_->deploy_ids().value(),
            (std::vector<std::string>{"20261126-091500-a", "20261126-091500-b"}));
}

TEST_F(DeployStoreTest, LocksAreTakenAllOrNone) {
  stored("d1", {"web"});
  ASSERT_TRUE(store_->acquire_locks({"web"}, "dev", "d1"));
  stored("d2", {"api", "web"});
  auto taken = store_->acquire_locks({"api", "web"}, "dev", "d2");
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, ErrorCode::conflict);
  EXPECT_EQ(taken.error().message, "web/dev is locked by deploy d1");
  EXPECT_EQ(holder("api"), std::nullopt) << "the lock taken before the conflict is given back";
  EXPECT_EQ(holder("web"), "d1");
}

TEST_F(DeployStoreTest, TheLockOfAFinishedDeployIsTakenOver) {
  stored("d1", {"api"});
  ASSERT_TRUE(store_->acquire_locks({"api"}, "dev", "d1"));
  finish("d1");
  stored("d2", {"api"});
  auto taken = store_->acquire_locks({"api"}, "dev", "d2");
  ASSERT_TRUE(taken) << taken.error().message;
  EXPECT_EQ(holder("api"), "d2");
  // d1 releasing what it no longer holds leaves d2's lock alone.
  store_->release_locks({"api"}, "dev", "d1");
  EXPECT_EQ(holder("api"), "d2");
}

TEST_F(DeployStoreTest, ALockWithoutARecordIsTakenOverOnlyOnceItIsOld) {
  // An orgd that died while accepting d1: its lock, no record.
  ASSERT_TRUE(store_->acquire_locks({"api"}, "dev", "d1"));
  stored("d2", {"api"});
  EXPECT_FALSE(store_->acquire_locks({"api"}, "dev", "d2")) << "d1 may be being accepted now";
  clock_.advance(31s);
  auto taken = store_->acquire_locks({"api"}, "dev", "d2");
  ASSERT_TRUE(taken) << taken.error().message;
  EXPECT_EQ(holder("api"), "d2");
}

TEST_F(DeployStoreTest, CheckLocksRetakesMissingOnesAndNamesLostOnes) {
  stored("d1", {"api", "web"});
  ASSERT_TRUE(store_->acquire_locks({"api", "web"}, "dev", "d1"));
  store_->drop_locks({"api", "web"}, "dev");
  stored("d2", {"web"});
  ASSERT_TRUE(store_->acquire_locks({"web"}, "dev", "d2"));
  auto lost = store_->check_locks({"api", "web"}, "dev", "d1");
  ASSERT_TRUE(lost) << lost.error().message;
  EXPECT_EQ(lost.value(), (std::vector<std::string>{"web"}));
  EXPECT_EQ(holder("api"), "d1");
}

TEST_F(DeployStoreTest, ALeaseIsHeldRenewedAndLostWhenItExpires) {
  auto held = store_->acquire_lease("scheduler", "orgd-a");
  ASSERT_TRUE(held) << held.error().message;
  auto other = store_->acquire_lease("scheduler", "orgd-b");
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, ErrorCode::conflict);
  // Its holder, restarted within the ttl, takes it on.
  auto again = store_->acquire_lease("scheduler", "orgd-a");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_FALSE(store_->renew_lease("scheduler", "orgd-a", held.value()))
      << "a renewal at an old revision";

  clock_.advance(9s);
  auto renewed = store_->renew_lease("scheduler", "orgd-a", again.value());
  ASSERT_TRUE(renewed) << renewed.error().message;
  clock_.advance(9s);
  EXPECT_EQ(store_->lease_holder("scheduler").value(), "orgd-a") << "renewed 9 s ago";

  clock_.advance(1s);
  EXPECT_EQ(store_->lease_holder("scheduler").value(), std::nullopt);
  auto taken = store_->acquire_lease("scheduler", "orgd-b");
  ASSERT_TRUE(taken) << taken.error().message;
  auto lost = store_->renew_lease("scheduler", "orgd-a", renewed.value());
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, ErrorCode::conflict);
  // Releasing a lease it lost leaves the new holder's alone.
  store_->release_lease("scheduler", "orgd-a");
  EXPECT_EQ(store_->lease_holder("scheduler").value(), "orgd-b");
  store_->release_lease("scheduler", "orgd-b");
  EXPECT_EQ(store_->lease_holder("scheduler").value(), std::nullopt);
}

TEST_F(DeployStoreTest, ARequestIdIsClaimedOnce) {
  EXPECT_EQ(store_->deploy_of_request("req 1").value(), std::nullopt);
  ASSERT_TRUE(store_->claim_request("req 1", "d1"));
  auto second = store_->claim_request("req 1", "d2");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::conflict);
  EXPECT_EQ(store_->deploy_of_request("req 1").value(), "d1");
  auto claim = store_->request_claim("req 1");
  ASSERT_TRUE(claim && claim.value());
  EXPECT_EQ(claim.value()->value, "d1");
  EXPECT_EQ(claim.value()->created, clock_.now());
  ASSERT_TRUE(store_->release_request("req 1"));
  EXPECT_TRUE(store_->claim_request("req 1", "d2"));
  EXPECT_EQ(store_->deploy_of_request("req 1").value(), "d2");
}

TEST_F(DeployStoreTest, WithoutNatsEveryCallIsUnavailable) {
  stored("d1", {"api"});
  kv_.set_unavailable(true);
  auto loaded = store_->load("d1");
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().code, ErrorCode::unavailable);
  auto locked = store_->acquire_locks({"api"}, "dev", "d1");
  ASSERT_FALSE(locked);
  EXPECT_EQ(locked.error().code, ErrorCode::unavailable);
  auto lease = store_->acquire_lease("scheduler", "orgd-a");
  ASSERT_FALSE(lease);
  EXPECT_EQ(lease.error().code, ErrorCode::unavailable);
  kv_.set_unavailable(false);
  EXPECT_TRUE(store_->load("d1").value().has_value());
}

// ---- Steps under their own keys -----------------------------------------------------------------

std::vector<std::string> repo_names(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(fmt::format("repo-{:05}", i));
  return out;
}

TEST_F(DeployStoreTest, ARecordIsStoredAsAHeaderAndAKeyPerStep) {
  stored("d1", {"api", "web", "worker"});
  auto bucket = kv_.open(deploy_bucket_specs(Duration{0}, 10s, 1).deploys);
  ASSERT_TRUE(bucket);
  auto keys = bucket.value()->keys("deploy.d1.>");
  ASSERT_TRUE(keys);
  std::sort(keys.value().begin(), keys.value().end());
  EXPECT_EQ(keys.value(), (std::vector<std::string>{"deploy.d1.step.0", "deploy.d1.step.1",
                                                    "deploy.d1.step.2"}));
  auto header = bucket.value()->get("deploy.d1");
  ASSERT_TRUE(header && header.value());
  Record stored_header;
  ASSERT_TRUE(stored_header.ParseFromString(header.value()->value));
  EXPECT_EQ(stored_header.steps_size(), 0) << "the header carries no steps";
  EXPECT_EQ(stored_header.total_steps(), 3);
  EXPECT_EQ(stored_header.state(), Record::running);

  auto loaded = store_->load("d1");
  ASSERT_TRUE(loaded && loaded.value());
  const Record& record = loaded.value()->record;
  ASSERT_EQ(record.steps_size(), 3);
  EXPECT_EQ(record.steps(0).repo(), "api");
  EXPECT_EQ(record.steps(2).repo(), "worker");
  ASSERT_EQ(loaded.value()->step_revisions.size(), 3u);
  for (const auto revision : loaded.value()->step_revisions) EXPECT_GT(revision, 0u);
  EXPECT_EQ(store_->deploy_ids().value(), (std::vector<std::string>{"d1"}))
      << "step keys are not deploys";

  auto head = store_->load_head("d1", 2);
  ASSERT_TRUE(head && head.value());
  EXPECT_EQ(head.value()->record.steps_size(), 2);
  EXPECT_EQ(head.value()->record.total_steps(), 3);
  EXPECT_EQ(head.value()->revision, loaded.value()->revision);
}

TEST_F(DeployStoreTest, OneStepsChangeWritesThatStepAndTheHeaderWhateverTheDeploysSize) {
  // The bytes one step's change writes, in a deploy of `n` repos.
  auto change_cost = [&](const std::string& id, int n) {
    stored(id, repo_names(n));
    auto loaded = store_->load(id);
    EXPECT_TRUE(loaded && loaded.value());
    StoredRecord stored_record = std::move(*loaded.value());
    mark_started(stored_record.record, "repo-00001", "local", clock_.now());
    const auto before = kv_.written(kDeploysBucket);
    EXPECT_TRUE(store_->update(stored_record.record, {1}, stored_record));
    const auto after = kv_.written(kDeploysBucket);
    EXPECT_EQ(after.writes - before.writes, 2u) << "the step and the header";
    return after.bytes - before.bytes;
  };
  const auto small = change_cost("small", 10);
  const auto large = change_cost("large", 10'000);
  EXPECT_GT(small, 0u);
  EXPECT_LE(large, small + 16) << "a step's change costs what it costs in a deploy of 10 repos";
  // No value stored for a deploy of 10,000 repos comes near a message's 1 MiB.
  EXPECT_LT(kv_.written(kDeploysBucket).largest, 4096u);
  auto loaded = store_->load("large");
  ASSERT_TRUE(loaded && loaded.value());
  ASSERT_EQ(loaded.value()->record.steps_size(), 10'000);
  EXPECT_EQ(loaded.value()->record.steps(1).state(), v1::DeployStep::running);
  EXPECT_EQ(loaded.value()->record.steps(9'999).repo(), "repo-09999");
}

TEST_F(DeployStoreTest, AStepWrittenBySomeoneElseSinceConflicts) {
  stored("d1", {"api", "web"});
  auto mine = store_->load("d1");
  auto theirs = store_->load("d1");
  ASSERT_TRUE(mine && mine.value() && theirs && theirs.value());
  mark_started(theirs.value()->record, "web", "local", clock_.now());
  ASSERT_TRUE(store_->update(theirs.value()->record, {1}, *theirs.value()));
  mark_started(mine.value()->record, "web", "github", clock_.now());
  auto stale = store_->update(mine.value()->record, {1}, *mine.value());
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::conflict);
  EXPECT_EQ(store_->load("d1").value()->record.steps(1).provider(), "local");
}

TEST_F(DeployStoreTest, ARecordStoredWholeIsReadAsItIsAndSplitAtItsNextWrite) {
  // As orgd stored records before steps had keys: the record whole under deploy.<id>.
  v1::DeployRequest request;
  request.set_env("dev");
  Record whole = new_record("old", {{"api", "web"}}, request, FailurePolicy::stop, clock_.now());
  auto bucket = kv_.open(deploy_bucket_specs(Duration{0}, 10s, 1).deploys);
  ASSERT_TRUE(bucket);
  ASSERT_TRUE(bucket.value()->create("deploy.old", whole.SerializeAsString()));

  auto loaded = store_->load("old");
  ASSERT_TRUE(loaded && loaded.value());
  ASSERT_EQ(loaded.value()->record.steps_size(), 2);
  EXPECT_EQ(loaded.value()->record.total_steps(), 0) << "stored whole";
  EXPECT_EQ(loaded.value()->step_revisions, (std::vector<std::uint64_t>{0, 0}));
  auto head = store_->load_head("old", 0);
  ASSERT_TRUE(head && head.value());
  EXPECT_EQ(head.value()->record.steps_size(), 2) << "a record stored whole is read whole";

  StoredRecord record = std::move(*loaded.value());
  mark_started(record.record, "api", "local", clock_.now());
  ASSERT_TRUE(store_->update(record.record, {0}, record));
  auto header = bucket.value()->get("deploy.old");
  ASSERT_TRUE(header && header.value());
  Record stored_header;
  ASSERT_TRUE(stored_header.ParseFromString(header.value()->value));
  EXPECT_EQ(stored_header.steps_size(), 0);
  EXPECT_EQ(stored_header.total_steps(), 2);
  auto again = store_->load("old");
  ASSERT_TRUE(again && again.value());
  ASSERT_EQ(again.value()->record.steps_size(), 2);
  EXPECT_EQ(again.value()->record.steps(0).state(), v1::DeployStep::running);
  EXPECT_EQ(again.value()->record.steps(1).repo(), "web");
}

TEST_F(DeployStoreTest, AHeaderWhoseStepIsMissingIsAnErrorNotAShorterDeploy) {
  stored("d1", {"api", "web"});
  auto bucket = kv_.open(deploy_bucket_specs(Duration{0}, 10s, 1).deploys);
  ASSERT_TRUE(bucket);
  ASSERT_TRUE(bucket.value()->remove("deploy.d1.step.1"));
  auto loaded = store_->load("d1");
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().code, ErrorCode::internal);
  EXPECT_NE(loaded.error().message.find("step 1"), std::string::npos) << loaded.error().message;
  auto head = store_->load_head("d1", 10);
  ASSERT_FALSE(head);
  EXPECT_EQ(head.error().code, ErrorCode::internal);
}

TEST_F(DeployStoreTest, AFinishedDeployWhoseFirstStepsExpiredFromTheHistoryIsGone) {
  // Each key ages out counted from its own last write: a step written at the start expires
  // before the header written at the finish.
  ManualClock clock;
  MemoryKvStore kv{clock};
  auto store = testing::memory_deploy_store(kv, 10s, std::chrono::hours{24});
  v1::DeployRequest request;
  request.set_env("dev");
  Record record = new_record("d1", {{"api", "web"}}, request, FailurePolicy::stop, clock.now());
  ASSERT_TRUE(store->create(record));
  clock.advance(std::chrono::hours{1});
  auto loaded = store->load("d1");
  ASSERT_TRUE(loaded && loaded.value());
  StoredRecord stored_record = std::move(*loaded.value());
  mark_started(stored_record.record, "web", "local", clock.now());
  mark_finished(stored_record.record, Record::failed, clock.now());
  ASSERT_TRUE(store->update(stored_record.record, {1}, stored_record));
  clock.advance(std::chrono::hours{23} + std::chrono::minutes{30});  // api's step has expired
  auto gone = store->load("d1");
  ASSERT_TRUE(gone) << gone.error().message;
  EXPECT_FALSE(gone.value().has_value());
  auto head = store->load_head("d1", 10);
  ASSERT_TRUE(head) << head.error().message;
  EXPECT_FALSE(head.value().has_value());
}

}  // namespace
}  // namespace orgd::deploy
