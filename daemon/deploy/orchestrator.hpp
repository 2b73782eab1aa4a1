#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon/bus/publisher.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/deploy/deploy_store.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/core/metrics.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/status.pb.h"

struct __jsCtx;

namespace orgd::deploy {

// What the health gate asks of the health picture.
struct GateCheck {
  bool healthy = false;    // every service of the repo reports ok, newer than `since`
  bool no_services = false;  // the repo has no services to wait for
  std::string detail;      // what is missing, for the error when the gate times out
  std::vector<std::string> unhealthy;  // the services not yet healthy ("http"), for operators
};

class HealthGateSource {
 public:
  virtual ~HealthGateSource() = default;
  virtual GateCheck check(const std::string& repo, Clock::time_point since) const = 0;
};

struct OrchestratorOptions {
  std::string instance_id;  // this orgd's $SRV id: lease holder and record owner
  std::string prefix;       // P
  int replicas = 1;         // of the KV buckets
  // How often a step's provider is polled, and the health gate checked.
  std::chrono::milliseconds poll_interval{250};
  // Threads running every deploy and step (waits are timers, not threads).
  int executor_threads = 4;
  // At most this many provider calls at once, each on its own thread (exec's start() blocks
  // for the whole command); hung calls keep theirs, so this also bounds what they can take.
  int provider_threads = 64;
};

class DeployRun;

// Runs deploys (DESIGN.md §4, §8): accepts requests (validated, planned, locked and written to
// KV before the reply), runs each deploy's waves on worker threads through the providers, gates
// every step on the repo's health, applies the failure policy, and keeps the record in KV with
// revision-checked updates, so a replica that finds a deploy whose runner's lease expired
// resumes it where it stopped. Sweeps and resumes run on the holder of the scheduler lease.
class Orchestrator {
 public:
  Orchestrator(OrchestratorOptions options, std::shared_ptr<const Inventory> inventory,
               Publisher& publisher, const HealthGateSource& health, MetricsRegistry& metrics,
               const Clock& clock);
  ~Orchestrator();
  Orchestrator(const Orchestrator&) = delete;
  Orchestrator& operator=(const Orchestrator&) = delete;

  // A new config's inventory; running deploys keep theirs.
  void set_inventory(std::shared_ptr<const Inventory> inventory);

  // Opens the KV buckets (created or updated) on a connected JetStream context and starts the
  // scheduler. Called at every connect: buckets a server lost are made again, and a new
  // context (a new connection) gets a new store.
  Result<Ok> attach(__jsCtx* js);
  bool attached() const { return attached_.load(); }

  // Stops scheduling; runs stop where they are (their records stay in KV, their leases are
  // released so another replica resumes them at once). Bounded by `budget`.
  void stop(std::chrono::milliseconds budget);

  // What a deploy request does when a repo+env it needs is locked by another deploy (or has
  // deploys queued for it): `refuse` answers conflict (P.api.deploy: the caller is there to
  // decide); `queue` accepts it into the queue in KV, to be started by the scheduler when the
  // locks are free, in order (P.cmd.deploy: nobody waits for a reply, and a command that only
  // waits must not hold an intake slot). A full queue is a conflict naming its bound.
  enum class WhenLocked { refuse, queue };

  // The API (P.api.deploy*, P.cmd.deploy). `fallback_request_id` de-duplicates a command that
  // carries no request id (its message id). These do KV round trips: call them off the io
  // threads.
  Result<v1::DeployAccepted> deploy(const v1::DeployRequest& request,
                                    const std::string& fallback_request_id = {},
                                    WhenLocked when_locked = WhenLocked::refuse);
  Result<v1::DeployRecord> get(const v1::DeployGetRequest& request);
  Result<v1::DeployList> list(const v1::DeployListRequest& request);
  Result<v1::DeployRecord> cancel(const v1::DeployCancelRequest& request);
  // Whether a deploy request with this id was accepted (the command intake asks before it
  // believes that a command ran out of deliveries).
  Result<bool> request_known(const std::string& request_id);

  // The last deploy of each configured repo+env (RepoStatus.deploys), read from the deploy
  // records in KV: at start (the recent index), on every scheduler tick (deploys indexed since),
  // and when a deploy event names a configured repo+env (only a prompt to re-read that record:
  // an event's own fields are never believed, so anyone on the bus can at most cause a read).
  // In memory: at most one summary per configured target, with bounded fields.
  void fill_status(v1::RepoStatus& repo) const;
  void fill_status(v1::OrgStatus& org) const;
  void observe(const v1::DeployEvent& event);
  std::size_t summary_count() const;
  std::size_t summary_bytes() const;

  // Deploys this orgd is running now.
  std::size_t running() const;
  bool is_scheduler() const { return scheduler_.load(); }
  // True while another replica holds the scheduler lease: then that replica alone publishes
  // what every replica would otherwise publish once each (health state changes).
  bool is_follower() const { return follower_.load(); }

  struct Shared;

 private:
  void scheduler_loop();
  void sweep();
  void reap();
  void start_run(const std::string& deploy_id, std::uint64_t lease_revision, bool resumed);
  void load_recent_summaries();
  void catch_up_summaries();
  void refresh_requested_summaries();
  void apply_to_summaries(const v1::DeployRecord& record);
  void run_queue();
  void wake_scheduler();
  Result<v1::DeployAccepted> accepted_of(const std::string& deploy_id, bool duplicate);
  Result<v1::DeployAccepted> enqueue(v1::DeployRecord record, const std::vector<std::string>& repos,
                                     const std::string& reason);
  Result<v1::DeployRecord> cancel_queued(v1::DeployRecord record, std::uint64_t revision,
                                         const std::string& reason);

  OrchestratorOptions options_;
  std::shared_ptr<Shared> shared_;

  std::mutex attach_mutex_;  // guards attach
  std::atomic<bool> attached_{false};
  __jsCtx* attached_js_ = nullptr;  // guarded by attach_mutex_
  std::atomic<bool> stopping_{false};
  std::atomic<bool> scheduler_{false};
  std::atomic<bool> follower_{false};
  std::uint64_t scheduler_revision_ = 0;  // scheduler thread only

  mutable std::mutex runs_mutex_;  // guards runs_, accepting_
  std::map<std::string, std::shared_ptr<DeployRun>> runs_;
  // Deploys being accepted by this orgd (active in KV, no run yet): not the sweep's to resume.
  std::set<std::string> accepting_;

  std::mutex wake_mutex_;  // guards wake_, refresh_ids_
  std::condition_variable wake_cv_;
  bool wake_ = false;
  // Deploys whose records deploy events asked to re-read (bounded; the scheduler tick's catch-up
  // covers what does not fit).
  std::set<std::string> refresh_ids_;
  std::string index_seen_;  // scheduler thread only: the newest index entry applied
  std::thread scheduler_thread_;

  mutable std::mutex summaries_mutex_;  // guards summaries_
  struct LastDeploy {
    v1::DeploySummary summary;
    // The record's created_at: which of two deploys is newer (ids only sort to the second).
    std::pair<std::int64_t, std::int32_t> created{0, 0};
  };
  std::map<std::pair<std::string, std::string>, LastDeploy> summaries_;  // repo, env

  Counter* events_ignored_ = nullptr;
  Counter* refreshes_dropped_ = nullptr;
  Counter* deploys_queued_ = nullptr;
  Counter* queue_full_ = nullptr;
  Counter* queue_started_ = nullptr;
};

}  // namespace orgd::deploy
