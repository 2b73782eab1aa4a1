#pragma once

// What the parts of the orchestrator share (the deploy service, the scheduler, the runs and
// their steps): options, the daemon's publisher, health picture, metrics and clock, the current
// inventory, the KV store of the current connection, the executors and timers, and the
// deploy.max_active slots. The KV store is reached through kv() only.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/bus/publisher.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/deploy/deploy_executor.hpp"
#include "daemon/deploy/deploy_state.hpp"
#include "daemon/deploy/deploy_store.hpp"
#include "daemon/deploy/health_gate.hpp"
#include "daemon/deploy/inventory.hpp"
#include "orgd/v1/deploy.pb.h"

namespace orgd::deploy {

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

// How long accepting a deploy may take between claiming its request id (or queue entry) and
// writing its record (a lock per repo in between); a claim older than this without a record
// was left by an orgd that died.
constexpr std::chrono::seconds kAcceptGrace{30};

// A deploy's waves, as the record's steps give them and as events and replies carry them.
std::vector<std::vector<std::string>> waves_of(const Record& record);
void set_waves(google::protobuf::RepeatedPtrField<google::protobuf::ListValue>* out,
               const std::vector<std::vector<std::string>>& waves);

class DeployRun;
class StepRunner;

// What the orchestrator and its runs share. Runs hold it by shared_ptr, so a run whose provider
// call outlives stop() still has a valid store; `Publisher` and `HealthGateSource` belong to the
// daemon and are only touched by runs that are not abandoned.
struct OrchestratorContext {
  OrchestratorContext(OrchestratorOptions opts, std::shared_ptr<const Inventory> inv,
                      Publisher& pub, const HealthGateSource& gate, MetricsRegistry& registry,
                      const Clock& clk, DeployRuntime runtime = {});

  std::shared_ptr<const Inventory> current_inventory() {
    std::lock_guard lock(inventory_mutex);
    return inventory;
  }

  DeployStore* kv() { return store.load(); }

  // P.events.deploy.<id>.<kind>, de-duplicated by the stream on `msg_id`.
  void publish_event(const Record& record, const std::string& kind, const Step* step,
                     const std::string& msg_id, const std::string& line = {});

  // At most deploy.max_active runs at once; the others wait in line without a thread.
  bool take_slot(const std::shared_ptr<DeployRun>& run);
  void release_slot();

  void stop_threads(std::chrono::steady_clock::time_point deadline) {
    executor->stop(deadline, *threads_abandoned);
    provider_calls->stop(deadline, *threads_abandoned);
  }

  OrchestratorOptions options;
  Publisher& publisher;
  const HealthGateSource& health;
  MetricsRegistry& metrics;
  const Clock& clock;
  std::atomic<bool> stopping{false};  // the orchestrator is stopping: no new deploys or runs
  std::mutex inventory_mutex;         // guards inventory
  std::shared_ptr<const Inventory> inventory;
  std::atomic<DeployStore*> store{nullptr};
  std::unique_ptr<DeployStore> store_owner;
  std::vector<std::unique_ptr<DeployStore>> retired_stores;  // of earlier connections
  std::shared_ptr<spdlog::logger> log;
  std::shared_ptr<DeployExecutor> executor;
  std::shared_ptr<DeployTimers> timers;  // what every deploy part waits by, and its monotonic now()
  std::shared_ptr<ProviderCalls> provider_calls;

  std::mutex slots_mutex;  // guards active, waiting_for_slot
  int active = 0;
  std::deque<std::weak_ptr<DeployRun>> waiting_for_slot;

  // Steps waiting on a provider's deploy, by (provider, handle): news of that deploy (a webhook)
  // ends the step's wait, so it polls at once instead of at its next poll. Bounded by the steps
  // running on this orgd.
  void watch_handle(const std::string& provider, const std::string& handle,
                    const std::shared_ptr<StepRunner>& step);
  void unwatch_handle(const std::string& provider, const std::string& handle,
                      const StepRunner* step);
  // The steps watching it poll now (each on its own strand); how many there were.
  int poll_now(const std::string& provider, const std::string& handle);

  // The last successful deploy of a repo+env other than the asking one (LastDeploys'), for a
  // step's rollback; null or nullopt when unknown.
  std::function<std::optional<v1::PreviousDeploy>(const std::string& repo, const std::string& env,
                                                  const std::string& deploy_id)>
      previous_success;

  std::mutex watched_mutex;  // guards watched
  std::multimap<std::pair<std::string, std::string>, std::weak_ptr<StepRunner>> watched;

  Counter* deploys_accepted = nullptr;
  Counter* deploys_duplicate = nullptr;
  Counter* deploys_conflict = nullptr;
  Counter* deploys_resumed = nullptr;
  std::map<std::string, Counter*> deploys_finished;
  Counter* steps_started = nullptr;
  Counter* step_retries = nullptr;
  Counter* steps_interrupted = nullptr;
  Counter* commit_conflicts = nullptr;
  Counter* kv_errors = nullptr;
  Gauge* active_gauge = nullptr;
  std::map<std::string, Counter*> provider_timeouts;
  Gauge* provider_hung = nullptr;
  Counter* threads_abandoned = nullptr;
};

// A run's stop request, and the one wait that is not a timer: sleeps between KV retries while
// NATS is unreachable, which end early when the run stops.
class StopFlag {
 public:
  void request() {
    {
      std::lock_guard lock(mutex_);
      stopping_.store(true);
    }
    cv_.notify_all();
  }

  bool requested() const { return stopping_.load(); }

  // Sleeps up to `d`, returning early when the run stops. Only while NATS is unreachable (KV
  // retries); everything else waits on timers.
  void pause(std::chrono::milliseconds d) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, d, [&] { return stopping_.load(); });
  }

 private:
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;  // pairs with cv_ for pause()
  std::condition_variable cv_;
};

}  // namespace orgd::deploy
