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
#include "daemon/core/metrics.hpp"
#include "daemon/deploy/deploy_service.hpp"
#include "daemon/deploy/deploy_store.hpp"
#include "daemon/deploy/health_gate.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/deploy/orchestrator_context.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/status.pb.h"

namespace orgd::deploy {

class LastDeploys;
class Scheduler;

// Runs deploys (DESIGN.md §4, §8): accepts requests (validated, planned, locked and written to
// KV before the reply), runs each deploy's waves on worker threads through the providers, gates
// every step on the repo's health, applies the failure policy, and keeps the record in KV with
// revision-checked updates, so a replica that finds a deploy whose runner's lease expired
// resumes it where it stopped. Sweeps and resumes run on the holder of the scheduler lease.
//
// The facade the daemon uses over its parts: the deploy service (the API), the scheduler (its
// runs, the sweep and the queue), the last deploys (status), all sharing an
// OrchestratorContext. Each run (DeployRun) has a RecordCommitter, a LeaseKeeper and a
// StepRunner per step in flight, each step's health gate a HealthGate.
class Orchestrator {
 public:
  using Shared = OrchestratorContext;
  using WhenLocked = deploy::WhenLocked;

  // `runtime`: where deploys run and wait (deploy_executor.hpp); orgd leaves it empty.
  Orchestrator(OrchestratorOptions options, std::shared_ptr<const Inventory> inventory,
               Publisher& publisher, const HealthGateSource& health, MetricsRegistry& metrics,
               const Clock& clock, DeployRuntime runtime = {});
  ~Orchestrator();
  Orchestrator(const Orchestrator&) = delete;
  Orchestrator& operator=(const Orchestrator&) = delete;

  // A new config's inventory; running deploys keep theirs.
  void set_inventory(std::shared_ptr<const Inventory> inventory);

  // Opens the KV buckets (created or updated) through `open` and starts the scheduler. Called
  // at every connect: buckets a server lost are made again, and a new `connection` (orgd: its
  // JetStream context) gets a new store. orgd opens JetStream buckets
  // (`[js](const BucketSpec& spec) { return KvBucket::open(js, spec); }`), tests memory ones.
  Result<Ok> attach(const BucketOpener& open, const void* connection);
  bool attached() const { return attached_.load(); }

  // Stops scheduling; runs stop where they are (their records stay in KV, their leases are
  // released so another replica resumes them at once). Bounded by `budget`.
  void stop(std::chrono::milliseconds budget);

  // The API (P.api.deploy*, P.cmd.deploy). `fallback_request_id` de-duplicates a command that
  // carries no request id (its message id). These do KV round trips: call them off the io
  // threads. What a request does when its locks are held: WhenLocked (deploy_service.hpp).
  Result<v1::DeployAccepted> deploy(const v1::DeployRequest& request,
                                    const std::string& fallback_request_id = {},
                                    WhenLocked when_locked = WhenLocked::refuse);
  Result<v1::DeployRecord> get(const v1::DeployGetRequest& request);
  Result<v1::DeployList> list(const v1::DeployListRequest& request);
  Result<v1::DeployRecord> cancel(const v1::DeployCancelRequest& request);
  // Whether a deploy request with this id was accepted (the command intake asks before it
  // believes that a command ran out of deliveries).
  Result<bool> request_known(const std::string& request_id);

  // The last deploy of each configured repo+env (RepoStatus.deploys): last_deploys.hpp.
  void fill_status(v1::RepoStatus& repo) const;
  void fill_status(v1::OrgStatus& org) const;
  void observe(const v1::DeployEvent& event);
  // News of a provider's deploy (a webhook: the Actions run completed): the steps waiting on
  // it poll now instead of at their next poll. How many were told. Only a prompt: what the
  // provider's poll answers decides.
  int poll_now(const std::string& provider, const std::string& handle);
  std::size_t summary_count() const;
  std::size_t summary_bytes() const;

  // Deploys this orgd is running now.
  std::size_t running() const;
  bool is_scheduler() const;
  // True while another replica holds the scheduler lease: then that replica alone publishes
  // what every replica would otherwise publish once each (health state changes).
  bool is_follower() const;

 private:
  OrchestratorOptions options_;
  std::shared_ptr<Shared> shared_;

  std::mutex attach_mutex_;  // guards attach
  std::atomic<bool> attached_{false};
  const void* attached_connection_ = nullptr;  // guarded by attach_mutex_

  std::shared_ptr<LastDeploys> last_deploys_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<DeployService> service_;
};

}  // namespace orgd::deploy
