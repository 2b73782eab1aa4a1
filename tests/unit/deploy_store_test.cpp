// DeployStore on memory buckets and a manual clock: records by compare-and-set, locks all or
// none with takeover of stale ones, leases that expire, request claims, a lost NATS.
#include "daemon/deploy/deploy_store.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace orgd::deploy
