#include "daemon/deploy/lease_keeper.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>

namespace orgd::deploy {

using std::chrono::milliseconds;

LeaseKeeper::LeaseKeeper(std::shared_ptr<OrchestratorContext> shared, std::string id,
                         std::uint64_t lease_revision, RecordCommitter& record,
                         const StopFlag& stop)
    : shared_(std::move(shared)),
      id_(std::move(id)),
      lease_revision_(lease_revision),
      record_(record),
      stop_(stop),
      log_(shared_->log),
      strand_(shared_->executor->make_strand()) {}

milliseconds LeaseKeeper::renew_interval() const {
  const auto ttl = shared_->current_inventory()->settings().lease_ttl;
  return std::max(milliseconds{100}, std::chrono::duration_cast<milliseconds>(ttl) / 3);
}

void LeaseKeeper::renew_lease_only() {
  auto renewed =
      shared_->kv()->renew_lease(DeployStore::deploy_lease(id_), record_.owner(), lease_revision_);
  if (renewed) {
    lease_revision_ = renewed.value();
  } else if (renewed.error().code == ErrorCode::conflict) {
    // Expired and maybe taken: it is ours only if nobody else holds it now.
    auto again = shared_->kv()->acquire_lease(DeployStore::deploy_lease(id_), record_.owner());
    if (again) {
      lease_revision_ = again.value();
    } else if (again.error().code == ErrorCode::conflict) {
      log_->warn("deploy {}: lease lost to another orgd; stopping here", id_);
      record_.mark_lost();
    }
  } else {
    shared_->kv_errors->inc();
  }
  next_renewal_ = shared_->timers->now() + renew_interval();
}

void LeaseKeeper::renew_in_background(bool with_refresh, std::function<void()> done) {
  if (shared_->timers->now() < next_renewal_.load() || renewing_.exchange(true)) {
    return;
  }
  boost::asio::post(strand_, [this, with_refresh, done = std::move(done)] {
    if (!should_stop()) {
      renew_lease_only();
      if (with_refresh && !record_.lost()) record_.refresh();
    }
    renewing_ = false;
    done();
  });
}

void LeaseKeeper::release() {
  shared_->kv()->release_lease(DeployStore::deploy_lease(id_), record_.owner());
}

void SchedulerLease::keep(DeployStore& store) {
  const std::string& instance_id = shared_->options.instance_id;
  auto& log = shared_->log;
  if (!held_.load()) {
    auto acquired = store.acquire_lease(kSchedulerLease, instance_id);
    if (acquired) {
      revision_ = acquired.value();
      held_.store(true);
      follower_.store(false);
      log->info("this orgd ({}) now runs the deploy scheduler", instance_id);
    } else {
      follower_.store(acquired.error().code == ErrorCode::conflict);
    }
  } else {
    auto renewed = store.renew_lease(kSchedulerLease, instance_id, revision_);
    if (renewed) {
      revision_ = renewed.value();
    } else if (renewed.error().code == ErrorCode::conflict) {
      auto again = store.acquire_lease(kSchedulerLease, instance_id);
      if (again) {
        revision_ = again.value();
      } else {
        held_.store(false);
        follower_.store(again.error().code == ErrorCode::conflict);
        log->info("the deploy scheduler lease moved to another orgd");
      }
    }
  }
}

void SchedulerLease::release() {
  if (DeployStore* store = shared_->kv(); store != nullptr && held_.load()) {
    store->release_lease(kSchedulerLease, shared_->options.instance_id);
  }
  held_.store(false);
}

}  // namespace orgd::deploy
