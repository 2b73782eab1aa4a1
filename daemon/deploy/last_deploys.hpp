#pragma once

// The last deploy of each configured repo+env (RepoStatus.deploys), read from the deploy
// records in KV: at start (the recent index), on every scheduler tick (deploys indexed since),
// and when a deploy event names a configured repo+env (only a prompt to re-read that record:
// an event's own fields are never believed, so anyone on the bus can at most cause a read).
// In memory: at most one summary per configured target, with bounded fields. The reads run on
// the scheduler's thread; the status readers take the summaries under their mutex.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "daemon/core/metrics.hpp"
#include "daemon/deploy/orchestrator_context.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/status.pb.h"

namespace orgd::deploy {

class LastDeploys {
 public:
  // Asks the scheduler to re-read a deploy's record (`finished`: and to look at its queue);
  // false when too many re-reads are waiting already.
  using RequestRefresh = std::function<bool(const std::string& deploy_id, bool finished)>;

  LastDeploys(std::shared_ptr<OrchestratorContext> shared, MetricsRegistry& metrics,
              RequestRefresh request_refresh);

  void observe(const v1::DeployEvent& event);

  // The scheduler's thread only.
  void load_recent();
  void catch_up();
  void refresh(const std::set<std::string>& ids);

  // The last successful deploy of repo+env orgd has read, other than `except` (the deploy
  // asking): what a rollback returns to.
  std::optional<v1::PreviousDeploy> last_success(const std::string& repo, const std::string& env,
                                                 const std::string& except) const;

  void fill_status(v1::RepoStatus& repo) const;
  void fill_status(v1::OrgStatus& org) const;
  std::size_t summary_count() const;
  std::size_t summary_bytes() const;

 private:
  void apply(const v1::DeployRecord& record);

  std::shared_ptr<OrchestratorContext> shared_;
  RequestRefresh request_refresh_;
  std::string index_seen_;  // scheduler thread only: the newest index entry applied

  mutable std::mutex summaries_mutex_;  // guards summaries_
  struct LastDeploy {
    v1::DeploySummary summary;
    // The record's created_at: which of two deploys is newer (ids only sort to the second).
    std::pair<std::int64_t, std::int32_t> created{0, 0};
  };
  std::map<std::pair<std::string, std::string>, LastDeploy> summaries_;  // repo, env
  struct LastSuccess {
    v1::PreviousDeploy deploy;  // ref and handle bounded like the summaries' fields
    std::pair<std::int64_t, std::int32_t> created{0, 0};
  };
  std::map<std::pair<std::string, std::string>, LastSuccess> successes_;  // repo, env

  Counter* events_ignored_ = nullptr;
  Counter* refreshes_dropped_ = nullptr;
  Counter* prompts_ = nullptr;
  Counter* reads_ = nullptr;
};

// OrchestratorContext::previous_success answered by `deploys` while it lives (runs may outlive
// the orchestrator that made them).
std::function<std::optional<v1::PreviousDeploy>(const std::string&, const std::string&,
                                                const std::string&)>
previous_success_from(std::weak_ptr<LastDeploys> deploys);

}  // namespace orgd::deploy
