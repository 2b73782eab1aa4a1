#pragma once

// One deploy step in flight on this orgd (DESIGN.md §8): a chain of provider calls (start, poll,
// recover, rollback; each on the provider threads, under a deadline) and timers (polls, retry
// backoff, the health gate), on its run's strand. A fresh step starts an attempt; a resumed one
// asks its provider what became of the attempt in flight; a rollback step rolls back. Every
// change is written through the run's RecordCommitter; when the step ends here, it tells its run.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/deploy/deploy_executor.hpp"
#include "daemon/deploy/health_gate.hpp"
#include "daemon/deploy/orchestrator_context.hpp"
#include "daemon/deploy/record_committer.hpp"

namespace orgd::deploy {

class StepRunner;

// What a step needs of the run it belongs to.
class StepHost {
 public:
  virtual ~StepHost() = default;
  // The run stops here (stopped, lease lost, abandoned): its steps do no more.
  virtual bool should_stop() const = 0;
  // The step has ended here (done, failed, cancelled, or stopped): decide again.
  virtual void step_done(const std::shared_ptr<StepRunner>& step) = 0;
};

class StepRunner : public std::enable_shared_from_this<StepRunner> {
 public:
  enum class Mode { fresh, resume, rollback };

  // `target` is null when this orgd's config has no deploy target for the step: it fails.
  StepRunner(std::shared_ptr<StepHost> run, std::shared_ptr<OrchestratorContext> shared,
             RecordCommitter& record, Strand strand, std::string repo, const TargetEntry* target);

  void begin(Mode mode);
  const std::string& repo() const { return repo_; }

  // Ends the wait the step is in (a poll, a retry backoff, a gate check): it runs now. On the
  // run's strand.
  void cut_wait() { timer_.cancel(); }
  // The same from any thread, for a poll that should come now (news of the provider's deploy):
  // a step that is not waiting for a poll is left alone.
  void poll_soon();
  // The run is over: the step's timer and its provider calls' deadlines end.
  void cancel_timers();

 private:
  using Outcome = std::function<void(Result<DeployProgress>)>;

  // A provider call in flight: its deadline, and whether it was answered (on the strand only).
  struct PendingCall {
    PendingCall(std::shared_ptr<DeployTimers> timers, Strand& strand)
        : timer(std::move(timers), strand) {}
    Timer timer;
    bool settled = false;
    bool hung = false;
  };

  using Call = std::function<Result<DeployProgress>(DeployTarget&, const DeployContext&)>;

  // Runs `call` with the step's context (its handle and a deadline `limit` from now).
  void call_provider(const std::string& op, Duration limit, Call call, Outcome done);
  static Duration query_limit(const StepPolicy& policy);
  static Duration action_limit(const TargetEntry& target);
  LogSink log_sink(int attempt);
  const std::string& handle() const;

  void recover();
  void on_recovered(Result<DeployProgress> recovered);
  void start_attempt();
  void on_start_error(const Error& error);
  void on_progress(DeployProgress progress);
  void record_progress(const DeployProgress& progress);
  bool timed_out() const;
  void schedule_poll(Duration after);
  void poll();
  void on_poll_error(const Error& error);
  void cancel_deploy();
  void advance();
  void attempt_failed();
  void gate_begin();
  void phase_gate_begin(int phase);
  void phase_gate_failed(const std::string& why);
  void gate_check();
  void set_waiting(const std::string& what);
  void cancel_step(const std::string& why);
  void succeed(const std::string& repo, bool gated);
  void fail_step(const std::string& repo, const std::string& error);
  void rollback_failed(const std::string& repo, const std::string& why);
  void roll_back();

  bool should_stop() const { return run_->should_stop(); }
  void step_done();
  // The handle this step's wait can be cut by (OrchestratorContext::watch_handle).
  void watch(const std::string& handle);

  // Everything here is used on the run's strand only.
  std::shared_ptr<StepHost> run_;
  std::shared_ptr<OrchestratorContext> shared_;
  RecordCommitter& record_;  // the run's
  Strand strand_;
  const std::string id_;
  const std::string repo_;
  const TargetEntry* target_ = nullptr;
  std::shared_ptr<spdlog::logger> log_;
  // What the step's provider calls and timers carry from one to the next.
  StepPolicy policy_;
  DeployContext context_;
  std::optional<DeployProgress> progress_;
  std::string committed_handle_;
  DeployTimers::time_point attempt_started_;
  int poll_errors_ = 0;
  int call_retries_ = 0;       // retryable start/advance errors of this attempt, for backoff
  bool last_call_hung_ = false;  // the last provider call's answer is orgd's deadline
  bool cancel_sent_ = false;   // this attempt's deploy was asked to stop
  int gate_phase_ = 0;         // the gated phase the health gate checks now (0: the final gate)
  bool polling_ = false;       // the timer is a wait for the next poll
  std::string watched_handle_;
  Timer timer_;  // polls, retry backoff, gate checks
  HealthGate gate_;
  std::vector<std::weak_ptr<PendingCall>> calls_;  // provider calls in flight, for cancel_timers()
};

}  // namespace orgd::deploy
