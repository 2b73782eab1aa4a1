#pragma once

// The orchestrator's parts wired as Orchestrator wires them, on memory KV buckets, a scripted
// deploy target, manual time and an executor the test thread drives: a deploy moves only while
// the test runs it (run_until_idle, advance), so what a run does at each moment is testable
// without a nats-server or the wall clock. The scheduler's thread is not started: the test makes
// its passes (scheduler_tick()) or resumes a deploy as the sweep would (resume()).

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/bus/memory_kv_bucket.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/deploy/deploy_store.hpp"
#include "daemon/deploy/health_gate.hpp"
#include "daemon/deploy/orchestrator_context.hpp"
#include "orgd/v1/deploy.pb.h"
#include "tests/support/manual_timers.hpp"
#include "tests/support/scripted_target.hpp"

namespace orgd::deploy {
class DeployService;
class LastDeploys;
class Scheduler;
}  // namespace orgd::deploy

namespace orgd::testing {

// Events as the orchestrator publishes them, decoded.
class RecordingPublisher final : public Publisher {
 public:
  Result<Ok> publish(const BusMessage& message) override;
  std::vector<v1::DeployEvent> events() const;
  // "kind repo" (or "kind") of every event but log lines, in order.
  std::vector<std::string> kinds() const;
  bool has(const std::string& kind_and_repo) const;

 private:
  mutable std::mutex mutex_;  // guards events_
  std::vector<v1::DeployEvent> events_;
};

// The health picture the test sets: what every gate check says (healthy until set otherwise).
class FakeHealth final : public deploy::HealthGateSource {
 public:
  deploy::GateCheck check(const std::string& repo, Clock::time_point since) const override;
  void set(deploy::GateCheck check);
  int checks() const;

  static deploy::GateCheck healthy() { return {true, false, {}, {}}; }
  static deploy::GateCheck unhealthy(std::vector<std::string> services, std::string detail);

 private:
  mutable std::mutex mutex_;  // guards check_, checks_
  deploy::GateCheck check_ = healthy();
  mutable int checks_ = 0;
};

struct DeployRigSettings {
  std::string repos;   // the repos: block; see DeployRig::repo()
  std::string deploy;  // more lines of the deploy: block ("  lease_ttl: 3s\n")
  std::string instance_id = "orgd-a";
  std::chrono::milliseconds poll_interval{250};
  int provider_threads = 8;
};

class DeployRig {
 public:
  explicit DeployRig(DeployRigSettings settings);
  ~DeployRig();
  DeployRig(const DeployRig&) = delete;
  DeployRig& operator=(const DeployRig&) = delete;

  // A repo of the repos: block, deployed to env dev through the scripted target; `target_extra`
  // adds keys to the target (", retries: 2").
  static std::string repo(const std::string& name, const std::string& target_extra = "",
                          const std::string& depends_on = "");

  // The deploy API. deploy() expects the request to be accepted and gives the deploy id.
  std::string deploy(const std::vector<std::string>& repos, const std::string& on_failure = "");
  Result<v1::DeployAccepted> deploy(const v1::DeployRequest& request);
  Result<v1::DeployRecord> cancel(const std::string& id, const std::string& reason = "operator");
  // The record as KV holds it.
  v1::DeployRecord record(const std::string& id);
  v1::DeployStep step(const std::string& id, const std::string& repo);

  // What an orgd that crashed leaves behind: a running deploy (owner "crashed-orgd") whose step
  // `repo` was started (attempt 1 persisted), its locks held, its runner's lease gone. `also`
  // changes the record further before it is written (a handle, a deployed_at).
  std::string left_by_a_crash(const std::string& repo,
                              const std::function<void(v1::DeployRecord&)>& also = {});
  // Resumes a deploy as the scheduler's sweep does: takes its runner lease, starts its run.
  void resume(const std::string& id);
  // One pass of the scheduler (its lease, the sweep, the queue), as its thread makes every
  // lease_ttl/3.
  void scheduler_tick();

  // Runs what is ready (handlers, due waits, answers of provider calls) until nothing is, but
  // the calls hung in the scripted target.
  void run_until_idle();
  // Moves time (the clock and the timers together) by `d`, running what comes due on the way,
  // in order.
  void advance(std::chrono::steady_clock::duration d);

  double counter(const std::string& name, const Labels& labels = {});
  double gauge(const std::string& name);
  std::size_t running() const;

  ManualClock clock;
  std::shared_ptr<ManualTimers> timers = std::make_shared<ManualTimers>();
  MemoryKvStore kv{clock};
  // The same buckets as another orgd sees them (its own handles): to write as another replica.
  std::unique_ptr<deploy::DeployStore> other;
  std::shared_ptr<ScriptedTarget> target = std::make_shared<ScriptedTarget>();
  RecordingPublisher publisher;
  FakeHealth health;
  MetricsRegistry metrics;
  std::shared_ptr<deploy::OrchestratorContext> shared;

 private:
  void move_time_to(deploy::DeployTimers::time_point t);

  DeployRigSettings settings_;
  std::shared_ptr<deploy::DeployExecutor> executor_;
  std::atomic<bool> attached_{true};
  std::shared_ptr<deploy::LastDeploys> last_deploys_;
  std::unique_ptr<deploy::Scheduler> scheduler_;
  std::unique_ptr<deploy::DeployService> service_;
};

}  // namespace orgd::testing
