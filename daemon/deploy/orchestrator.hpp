#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon/bus/publisher.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/deploy/deploy_store.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/http/metrics.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/status.pb.h"

struct __jsCtx;

namespace orgd::deploy {

// What the health gate asks of the health picture.
struct GateCheck {
  bool healthy = false;    // every service of the repo reports ok, newer than `since`
  bool no_services = false;  // the repo has no services to wait for
  std::string detail;      // what is missing, for the error when the gate times out
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
  // scheduler. Called at every connect; after the first success it only returns Ok.
  Result<Ok> attach(__jsCtx* js);
  bool attached() const { return attached_.load(); }

  // Stops scheduling; runs stop where they are (their records stay in KV, their leases are
  // released so another replica resumes them at once). Bounded by `budget`.
  void stop(std::chrono::milliseconds budget);

  // The API (P.api.deploy*, P.cmd.deploy). `fallback_request_id` de-duplicates a command that
  // carries no request id (its message id).
  Result<v1::DeployAccepted> deploy(const v1::DeployRequest& request,
                                    const std::string& fallback_request_id = {});
  Result<v1::DeployRecord> get(const v1::DeployGetRequest& request);
  Result<v1::DeployList> list(const v1::DeployListRequest& request);
  Result<v1::DeployRecord> cancel(const v1::DeployCancelRequest& request);
  // Whether a deploy request with this id was accepted (the command intake asks before it
  // believes that a command ran out of deliveries).
  Result<bool> request_known(const std::string& request_id);

  // The last deploy of each repo per env (RepoStatus.deploys), kept from deploy events of every
  // replica.
  void fill_status(v1::RepoStatus& repo) const;
  void fill_status(v1::OrgStatus& org) const;
  void observe(const v1::DeployEvent& event);

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
  Result<v1::DeployAccepted> accepted_of(const std::string& deploy_id, bool duplicate);

  OrchestratorOptions options_;
  std::shared_ptr<Shared> shared_;

  std::mutex attach_mutex_;  // guards attach
  std::atomic<bool> attached_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> scheduler_{false};
  std::atomic<bool> follower_{false};
  std::uint64_t scheduler_revision_ = 0;  // scheduler thread only

  mutable std::mutex runs_mutex_;  // guards runs_
  std::map<std::string, std::shared_ptr<DeployRun>> runs_;

  std::mutex wake_mutex_;  // guards wake_
  std::condition_variable wake_cv_;
  bool wake_ = false;
  std::thread scheduler_thread_;

  mutable std::mutex summaries_mutex_;  // guards summaries_
  std::map<std::pair<std::string, std::string>, v1::DeploySummary> summaries_;  // repo, env
};

}  // namespace orgd::deploy
