#pragma once

// The deploy API (P.api.deploy*, P.cmd.deploy; DESIGN.md §8): a request is validated, planned,
// its repo+env locks taken and its record written to KV before the reply; the run is then
// started here (or by the scheduler's sweep). A request that finds its locks held is refused,
// or queued in KV for the scheduler to start in order. These do KV round trips: call them off
// the io threads.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/core/errors.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/deploy/deploy_store.hpp"
#include "daemon/deploy/orchestrator_context.hpp"
#include "orgd/v1/deploy.pb.h"

namespace orgd::deploy {

class Scheduler;

// What a deploy request does when a repo+env it needs is locked by another deploy (or has
// deploys queued for it): `refuse` answers conflict (P.api.deploy: the caller is there to
// decide); `queue` accepts it into the queue in KV, to be started by the scheduler when the
// locks are free, in order (P.cmd.deploy: nobody waits for a reply, and a command that only
// waits must not hold an intake slot). A full queue is a conflict naming its bound.
enum class WhenLocked { refuse, queue };

class DeployService {
 public:
  // `attached`: the KV buckets are open.
  DeployService(std::shared_ptr<OrchestratorContext> shared, Scheduler& scheduler,
                const std::atomic<bool>& attached, MetricsRegistry& metrics);

  // `fallback_request_id` de-duplicates a command that carries no request id (its message id).
  Result<v1::DeployAccepted> deploy(const v1::DeployRequest& request,
                                    const std::string& fallback_request_id, WhenLocked when_locked);
  Result<v1::DeployRecord> get(const v1::DeployGetRequest& request);
  Result<v1::DeployList> list(const v1::DeployListRequest& request);
  Result<v1::DeployRecord> cancel(const v1::DeployCancelRequest& request);
  // Whether a deploy request with this id was accepted.
  Result<bool> request_known(const std::string& request_id);

 private:
  Result<v1::DeployAccepted> accepted_of(const std::string& deploy_id, bool duplicate);
  Result<v1::DeployAccepted> enqueue(v1::DeployRecord record, const std::vector<std::string>& repos,
                                     const std::string& reason);
  // `stored`: the queued deploy read whole (its header's and steps' revisions).
  Result<v1::DeployRecord> cancel_queued(StoredRecord& stored, const std::string& reason);

  std::shared_ptr<OrchestratorContext> shared_;
  Scheduler& scheduler_;
  const std::atomic<bool>& attached_;
  Counter* deploys_queued_ = nullptr;
  Counter* queue_full_ = nullptr;
};

}  // namespace orgd::deploy
