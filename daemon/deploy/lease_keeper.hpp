#pragma once

// The leases that say who runs what (DESIGN.md §4): a deploy's runner lease, renewed by its run
// every lease_ttl/3 (LeaseKeeper), and the scheduler lease, renewed by the scheduler's tick
// (SchedulerLease). A lease another orgd holds now is lost: the run stops where it is, the
// scheduler stops sweeping.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "daemon/deploy/deploy_executor.hpp"
#include "daemon/deploy/orchestrator_context.hpp"
#include "daemon/deploy/record_committer.hpp"

namespace orgd::deploy {

// One run's lease. Renewals run on a strand of their own: while NATS is unreachable these KV
// calls wait out their timeout, and the steps' polls and gate checks must not wait behind them.
class LeaseKeeper {
 public:
  LeaseKeeper(std::shared_ptr<OrchestratorContext> shared, std::string id,
              std::uint64_t lease_revision, RecordCommitter& record, const StopFlag& stop);

  // The next renewal is due lease_ttl/3 from now.
  void schedule() { next_renewal_ = shared_->timers->now() + renew_interval(); }
  DeployTimers::time_point next_renewal() const { return next_renewal_.load(); }
  bool renewing() const { return renewing_.load(); }

  // Every lease_ttl/3: the lease, and (`with_refresh`) a look at the record for a cancel
  // request written by another replica. Once done, `done` runs (decide() again: it sees a lost
  // lease); it also keeps the run alive meanwhile.
  void renew_in_background(bool with_refresh, std::function<void()> done);

  // Hands the deploy over at once instead of after the lease expires.
  void release();

 private:
  std::chrono::milliseconds renew_interval() const;
  void renew_lease_only();
  bool should_stop() const { return stop_.requested() || record_.lost(); }

  std::shared_ptr<OrchestratorContext> shared_;
  const std::string id_;
  std::uint64_t lease_revision_;  // lease strand only (after begin())
  RecordCommitter& record_;
  const StopFlag& stop_;
  std::shared_ptr<spdlog::logger> log_;
  Strand strand_;  // lease renewal and refresh
  std::atomic<DeployTimers::time_point> next_renewal_{};
  std::atomic<bool> renewing_{false};
};

// The scheduler lease: its holder sweeps for deploys to resume and starts queued ones.
class SchedulerLease {
 public:
  explicit SchedulerLease(std::shared_ptr<OrchestratorContext> shared)
      : shared_(std::move(shared)) {}

  // Takes the lease, or renews it (every scheduler tick).
  void keep(DeployStore& store);
  // At stop: the next replica takes over at once.
  void release();

  bool held() const { return held_.load(); }
  // True while another replica holds the lease.
  bool follower() const { return follower_.load(); }

 private:
  std::shared_ptr<OrchestratorContext> shared_;
  std::atomic<bool> held_{false};
  std::atomic<bool> follower_{false};
  std::uint64_t revision_ = 0;  // scheduler thread only
};

}  // namespace orgd::deploy
