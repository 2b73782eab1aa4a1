#pragma once

// The deploy scheduler (DESIGN.md §4): one thread that wakes every lease_ttl/3 (or when woken),
// renews the scheduler lease and, while this orgd holds it, sweeps for deploys whose runner's
// lease expired (resumed here) and starts queued deploys whose locks are free, in order. It
// keeps the runs this orgd has (started by the deploy service, the sweep or the queue) and
// reaps the finished ones; every tick it also has the last deploys catch up, and it re-reads
// the records deploy events ask for (and looks at the queue after a `finished` one) without
// waiting for the tick, at most four times a second.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "daemon/core/metrics.hpp"
#include "daemon/deploy/last_deploys.hpp"
#include "daemon/deploy/lease_keeper.hpp"
#include "daemon/deploy/orchestrator_context.hpp"

namespace orgd::deploy {

class DeployRun;

class Scheduler {
 public:
  Scheduler(std::shared_ptr<OrchestratorContext> shared, LastDeploys& last_deploys,
            MetricsRegistry& metrics);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts the scheduler thread (once the KV buckets are open).
  void start();
  // Ends the thread, stops the runs (bounded by `deadline`) and gives the scheduler lease up.
  void stop(std::chrono::steady_clock::time_point deadline);

  void wake();
  // A deploy event asks for its record to be re-read (`finished`: and the queue looked at).
  // False when too many are waiting already.
  bool request_refresh(const std::string& deploy_id, bool finished);

  void start_run(const std::string& deploy_id, std::uint64_t lease_revision, bool resumed);
  // Deploys being accepted by this orgd (active in KV, no run yet) are not the sweep's to resume.
  void begin_accepting(const std::string& deploy_id);
  void end_accepting(const std::string& deploy_id);
  // A cancel request was written: the deploy's run here, if any, decides again.
  void wake_run(const std::string& deploy_id);

  // One pass of what the thread does every lease_ttl/3: finished runs reaped, the scheduler
  // lease kept, and while it is held, deploys whose runner's lease expired resumed and queued
  // deploys whose locks are free started; then the last deploys catch up. Tests without the
  // thread (a driven executor, manual time) call it themselves.
  void tick();

  std::size_t running() const;
  bool is_scheduler() const { return lease_.held(); }
  bool is_follower() const { return lease_.follower(); }

 private:
  void loop();
  void sweep();
  void reap();
  void run_queue();

  std::shared_ptr<OrchestratorContext> shared_;
  LastDeploys& last_deploys_;
  SchedulerLease lease_;

  mutable std::mutex runs_mutex_;  // guards runs_, accepting_
  std::map<std::string, std::shared_ptr<DeployRun>> runs_;
  std::set<std::string> accepting_;

  std::mutex wake_mutex_;  // guards wake_, refresh_ids_, queue_prompted_
  std::condition_variable wake_cv_;
  bool wake_ = false;
  // Deploys whose records deploy events asked to re-read (bounded; the scheduler tick's catch-up
  // covers what does not fit).
  std::set<std::string> refresh_ids_;
  bool queue_prompted_ = false;  // a finished event came: the queue may move
  std::thread thread_;

  Counter* queue_started_ = nullptr;
};

}  // namespace orgd::deploy
