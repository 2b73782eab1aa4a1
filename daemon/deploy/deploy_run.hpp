#pragma once

// One deploy run by this orgd (DESIGN.md §8), on its own strand of the deploy executor: it takes
// a deploy.max_active slot, loads the record and marks it running, then decide() applies
// deploy_state's next_actions (skip, start, roll back, finish) until the deploy is finished,
// stopped here or lost to another orgd. Each step in flight is a StepRunner; every change is
// written through the RecordCommitter, revision-checked against KV; the LeaseKeeper renews the
// runner lease meanwhile.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "daemon/deploy/deploy_executor.hpp"
#include "daemon/deploy/lease_keeper.hpp"
#include "daemon/deploy/orchestrator_context.hpp"
#include "daemon/deploy/record_committer.hpp"
#include "daemon/deploy/step_runner.hpp"

namespace orgd::deploy {

class DeployRun : public StepHost, public std::enable_shared_from_this<DeployRun> {
 public:
  DeployRun(std::shared_ptr<OrchestratorContext> shared, std::string id,
            std::uint64_t lease_revision, bool resumed);

  void start();
  void request_stop();
  // Something changed (a commit, a cancel request): decide again, soon.
  void wake();
  // Called by OrchestratorContext::release_slot when this run's turn has come.
  void slot_granted();
  bool finished() const { return finished_.load(); }
  // Waits until the run has ended, at most until `deadline`; a run still busy then (its strand
  // inside a KV call that NATS does not answer) is abandoned: it never touches the daemon again.
  void join(std::chrono::steady_clock::time_point deadline);

  // StepHost
  bool should_stop() const override { return stop_.requested() || record_.lost(); }
  void step_done(const std::shared_ptr<StepRunner>& step) override;

 private:
  template <class F>
  void post(F&& f) {
    boost::asio::post(strand_, std::forward<F>(f));
  }

  void begin();
  void after_slot();
  void decide();
  void finish(Record::State state, Clock::time_point now);
  void arm_tick();
  void end_stopped();
  void end();
  void finalize(bool checked = false);
  void check_locks();
  void begin_step(const std::string& repo, StepRunner::Mode mode);
  bool lost() const { return record_.lost(); }
  const std::string& env() const { return record_.env(); }  // set by load(), then constant

  std::shared_ptr<OrchestratorContext> shared_;
  const std::string id_;
  const bool resumed_;
  std::shared_ptr<spdlog::logger> log_;
  StopFlag stop_;
  RecordCommitter record_;
  LeaseKeeper lease_;
  // Everything not guarded below is used on strand_ only.
  Strand strand_;
  Timer tick_;
  std::shared_ptr<const Inventory> inventory_;  // set before any step starts
  int parallel_ = 1;
  std::vector<std::string> repos_;
  std::set<std::string> lost_locks_;
  std::map<std::string, std::shared_ptr<StepRunner>> steps_;  // steps in flight here, by repo
  bool waiting_for_slot_ = false;
  bool has_slot_ = false;
  bool running_ = false;  // loaded and marked running: decide() may act
  bool ended_ = false;

  std::atomic<bool> wake_posted_{false};

  std::mutex done_mutex_;  // pairs with done_cv_ for join()
  std::condition_variable done_cv_;
  std::atomic<bool> finished_{false};
};

}  // namespace orgd::deploy
