#include "daemon/deploy/step_runner.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/post.hpp>

#include "daemon/core/duration.hpp"
#include "daemon/core/timestamps.hpp"

namespace orgd::deploy {

namespace {

namespace asio = boost::asio;

constexpr std::size_t kMaxLogLinesPerStep = 1000;
// Consecutive poll errors after which a step's attempt fails.
constexpr int kMaxPollErrors = 5;

}  // namespace

StepRunner::StepRunner(std::shared_ptr<StepHost> run, std::shared_ptr<OrchestratorContext> shared,
                       RecordCommitter& record, Strand strand, std::string repo,
                       const TargetEntry* target)
    : run_(std::move(run)),
      shared_(std::move(shared)),
      record_(record),
      strand_(std::move(strand)),
      id_(record.id()),
      repo_(std::move(repo)),
      target_(target),
      log_(shared_->log),
      timer_(shared_->timers, strand_) {}

void StepRunner::cancel_timers() {
  timer_.cancel();
  for (auto& call : calls_) {
    if (auto pending = call.lock()) pending->timer.cancel();
  }
}

LogSink StepRunner::log_sink(int attempt) {
  auto count = std::make_shared<std::atomic<std::size_t>>(0);
  return [self = shared_from_this(), attempt, count](std::string_view line) {
    const std::size_t n = (*count)++;
    if (n >= kMaxLogLinesPerStep) return;
    const std::string& repo = self->repo_;
    self->record_.while_live([&](const Record& record) {
      const Step* step = find_step(record, repo);
      std::string text{line};
      if (n + 1 == kMaxLogLinesPerStep) text = "(further output not streamed)";
      self->shared_->publish_event(
          record, "log", step, fmt::format("{}.log.{}.{}.{}", self->id_, repo, attempt, n), text);
    });
  };
}

// Runs `call` on the provider threads; `done` runs on this run's strand with its result, or
// with "<op> did not return within <limit>" once `limit` has passed. A call past its deadline
// is left to return on its own (counted in orgd_provider_calls_hung until it does); what it
// returns then is dropped.
void StepRunner::call_provider(const std::string& op, Duration limit,
                               std::function<Result<DeployProgress>()> call, Outcome done) {
  auto pending = std::make_shared<PendingCall>(shared_->timers, strand_);
  std::erase_if(calls_, [](const std::weak_ptr<PendingCall>& call) { return call.expired(); });
  calls_.push_back(pending);
  auto self = shared_from_this();
  pending->timer.wait_for(limit, [self, pending, op, limit, done](bool cancelled) {
    if (cancelled || pending->settled) return;
    pending->settled = true;
    pending->hung = true;
    self->shared_->provider_hung->inc();
    if (auto it = self->shared_->provider_timeouts.find(op);
        it != self->shared_->provider_timeouts.end()) {
      it->second->inc();
    }
    self->log_->warn("deploy {}: provider {} did not return within {}; its thread is left to it",
                     self->id_, op, format_duration(limit));
    done(unavailable(op + " did not return within " + format_duration(limit)));
  });
  shared_->provider_calls->submit([self, pending, call = std::move(call), done, op]() {
    Result<DeployProgress> result = internal_error("provider " + op + " threw");
    try {
      result = call();
    } catch (const std::exception& e) {
      result = internal_error("provider " + op + " threw: " + e.what());
    }
    // After stop() nothing runs the answer: posting it would only keep the run alive.
    if (self->shared_->executor->stopped()) return;
    asio::post(self->strand_, [self, pending, result = std::move(result), done]() mutable {
      if (pending->settled) {
        if (pending->hung) self->shared_->provider_hung->dec();
        return;
      }
      pending->settled = true;
      pending->timer.cancel();
      done(std::move(result));
    });
  });
}

// Poll and recover ask a question; they get a shorter deadline than start and rollback.
Duration StepRunner::query_limit(const StepPolicy& policy) {
  return std::min<Duration>(policy.step_timeout, std::chrono::minutes{1});
}

// Start and rollback: the step timeout, or longer when the provider ends its calls itself.
Duration StepRunner::action_limit(const TargetEntry& target) {
  const auto own = target.target->max_call_duration();
  return own ? std::max<Duration>(target.policy.step_timeout, *own) : target.policy.step_timeout;
}

void StepRunner::begin(Mode mode) {
  const std::string& repo = repo_;
  if (target_ == nullptr) {
    fail_step(repo, "no deploy target for " + repo + " in env " + record_.env() +
                        " in this orgd's config");
    step_done();
    return;
  }
  policy_ = target_->policy;
  if (mode == Mode::rollback) {
    roll_back();
    return;
  }
  const Step snapshot = record_.step(repo);
  context_ = record_.context_for(repo, snapshot.attempts());
  if (mode == Mode::fresh) {
    start_attempt();
    return;
  }
  if (is_set(snapshot.healthy_at())) {
    succeed(repo, false);
    step_done();
    return;
  }
  if (is_set(snapshot.deployed_at())) {
    gate_begin();
    return;
  }
  attempt_started_ = shared_->timers->now();
  if (!snapshot.handle().empty()) {
    committed_handle_ = snapshot.handle();
    on_progress(DeployProgress{DeployStatus::running, snapshot.handle(), {}});
    return;
  }
  recover();
}

void StepRunner::recover() {
  if (should_stop()) return step_done();
  auto target = target_->target;
  const DeployContext context = context_;
  call_provider(
      "recover", query_limit(policy_), [target, context] { return target->recover(context); },
      [self = shared_from_this()](Result<DeployProgress> r) { self->on_recovered(std::move(r)); });
}

void StepRunner::on_recovered(Result<DeployProgress> recovered) {
  if (should_stop()) return step_done();
  const std::string& repo = repo_;
  if (recovered && recovered.value().status == DeployStatus::interrupted) {
    // Ended with orgd, not by the deploy: a new attempt, not one of the step's retries.
    const std::string why =
        recovered.value().error.empty() ? "interrupted" : recovered.value().error;
    if (!record_.commit([&](Record& r) { return mark_interrupted(r, repo, why); },
                        {{"step_interrupted", repo}})) {
      return step_done();
    }
    shared_->steps_interrupted->inc();
    context_.attempt = record_.step(repo).attempts();
    log_->info(
        "deploy {}: {} was in flight when its orgd stopped ({}); running it again as "
        "attempt {}",
        id_, repo, why, context_.attempt);
    start_attempt();
    return;
  }
  if (recovered) {
    const DeployProgress progress = recovered.value();
    log_->info("deploy {}: {} was in flight; provider says {}", id_, repo,
               progress.status == DeployStatus::running     ? "still running"
               : progress.status == DeployStatus::succeeded ? "succeeded"
                                                            : "failed");
    on_progress(progress);
    return;
  }
  if (recovered.error().code == ErrorCode::not_found) {
    log_->info("deploy {}: {} was in flight; provider has no record of it, starting it", id_, repo);
    start_attempt();
    return;
  }
  // The provider could not answer (its API unreachable right after the crash, a call past
  // its deadline): that says nothing about the deploy, so ask again, as a poll would.
  if (++poll_errors_ < kMaxPollErrors) {
    log_->warn("deploy {}: cannot ask the provider about {} yet ({}); asking again", id_, repo,
               recovered.error().message);
    timer_.wait_for(shared_->options.poll_interval,
                    [self = shared_from_this()](bool) { self->recover(); });
    return;
  }
  on_progress(
      DeployProgress{DeployStatus::failed, {}, "recover failed: " + recovered.error().message});
}

void StepRunner::start_attempt() {
  if (should_stop()) return step_done();
  if (record_.cancel_requested()) {
    // Cancelled before this attempt began (backing off before a retry, or a resumed step's
    // new attempt): it does not start.
    cancel_step("cancelled before attempt " + std::to_string(context_.attempt));
    return;
  }
  attempt_started_ = shared_->timers->now();
  poll_errors_ = 0;
  progress_.reset();
  auto target = target_->target;
  const DeployContext context = context_;
  LogSink sink = log_sink(context.attempt);
  call_provider(
      "start", action_limit(*target_),
      [target, context, sink] { return target->start(context, sink); },
      [self = shared_from_this()](Result<DeployProgress> r) {
        self->on_progress(r ? r.value()
                            : DeployProgress{DeployStatus::failed, {}, r.error().message});
      });
}

void StepRunner::on_progress(DeployProgress progress) {
  if (should_stop()) return step_done();
  const std::string& repo = repo_;
  if (progress.status == DeployStatus::running && !progress.handle.empty() &&
      progress.handle != committed_handle_) {
    const std::string handle = progress.handle;
    record_.commit([&](Record& r) { return mark_handle(r, repo, handle); }, {});
    committed_handle_ = handle;
  }
  progress_ = progress;
  if (progress.status == DeployStatus::running) {
    if (shared_->timers->now() - attempt_started_ > policy_.step_timeout) {
      progress_ = DeployProgress{DeployStatus::failed, progress.handle,
                                 "timed out after " + format_duration(policy_.step_timeout)};
      attempt_failed();
      return;
    }
    timer_.wait_for(shared_->options.poll_interval,
                    [self = shared_from_this()](bool) { self->poll(); });
    return;
  }
  if (progress.status == DeployStatus::succeeded) {
    if (!policy_.health_gate.enabled) {
      succeed(repo, false);
      return step_done();
    }
    const auto now = shared_->clock.now();
    record_.commit([&](Record& r) { return mark_deployed(r, repo, now); }, {});
    gate_begin();
    return;
  }
  attempt_failed();
}

void StepRunner::poll() {
  if (should_stop()) return step_done();
  auto target = target_->target;
  const DeployContext context = context_;
  const std::string handle = progress_ ? progress_->handle : std::string{};
  call_provider(
      "poll", query_limit(policy_),
      [target, context, handle] { return target->poll(context, handle); },
      [self = shared_from_this(), handle](Result<DeployProgress> polled) {
        if (polled) {
          self->poll_errors_ = 0;
          self->on_progress(polled.value());
        } else if (++self->poll_errors_ >= kMaxPollErrors) {
          self->on_progress(DeployProgress{DeployStatus::failed, handle,
                                           "poll failed: " + polled.error().message});
        } else {
          self->on_progress(DeployProgress{DeployStatus::running, handle, {}});
        }
      });
}

void StepRunner::attempt_failed() {
  const std::string& repo = repo_;
  const std::string error =
      !progress_ || progress_->error.empty() ? "deploy failed" : progress_->error;
  const Step current = record_.step(repo);
  const int used = retries_used(current);
  if (used < policy_.retries && !record_.cancel_requested()) {
    shared_->step_retries->inc();
    if (!record_.commit([&](Record& r) { return mark_retrying(r, repo, error); },
                        {{"step_retrying", repo}})) {
      return step_done();
    }
    const auto backoff = policy_.retry_backoff * (1 << std::min(used, 10));
    context_.attempt = current.attempts() + 1;
    timer_.wait_for(backoff, [self = shared_from_this()](bool) { self->start_attempt(); });
    return;
  }
  fail_step(repo, error);
  step_done();
}

// The health gate: the repo's services report ok, newer than the step's end, held for
// `soak`; otherwise the step fails at `timeout`. Checked every poll interval on a timer; what
// it waits for is written to the step (waiting_for) and published when it changes.
void StepRunner::gate_begin() {
  const HealthGateConfig& config = policy_.health_gate;
  if (!config.enabled) {
    succeed(repo_, false);
    return step_done();
  }
  const Step snapshot = record_.step(repo_);
  gate_ = HealthGate(config, from_timestamp(snapshot.deployed_at()), snapshot.waiting_for(),
                     shared_->timers->now());
  gate_check();
}

void StepRunner::gate_check() {
  if (should_stop()) return step_done();
  const std::string& repo = repo_;
  if (record_.cancel_requested()) {
    cancel_step("cancelled while waiting for " +
                (gate_.waiting_for().empty() ? std::string{"health"} : gate_.waiting_for()));
    return;
  }
  GateCheck check;
  if (!record_.while_live(
          [&](const Record&) { check = shared_->health.check(repo, gate_.since()); })) {
    return;
  }
  const HealthGate::Verdict verdict = gate_.judge(repo, check, shared_->timers->now());
  if (verdict.passed) {
    succeed(repo, true);
    return step_done();
  }
  set_waiting(verdict.waiting_for);
  if (verdict.failed) {
    fail_step(repo, *verdict.failed);
    return step_done();
  }
  timer_.wait_for(shared_->options.poll_interval,
                  [self = shared_from_this()](bool) { self->gate_check(); });
}

void StepRunner::set_waiting(const std::string& what) {
  if (what == gate_.waiting_for()) return;
  const std::string& repo = repo_;
  if (record_.commit([&](Record& r) { return mark_waiting(r, repo, what); },
                     {{"health_gate_waiting", repo}})) {
    gate_.set_waiting_for(what);
  }
}

void StepRunner::cancel_step(const std::string& why) {
  const auto now = shared_->clock.now();
  const std::string& repo = repo_;
  log_->info("deploy {}: {} {}", id_, repo, why);
  record_.commit([&](Record& r) { return mark_cancelled(r, repo, why, now); },
                 {{"step_cancelled", repo}});
  step_done();
}

void StepRunner::succeed(const std::string& repo, bool gated) {
  const auto now = shared_->clock.now();
  std::vector<std::pair<std::string, std::string>> events;
  if (gated) events.emplace_back("health_gate_passed", repo);
  events.emplace_back("step_succeeded", repo);
  record_.commit(
      [&](Record& r) {
        mark_deployed(r, repo, now);  // no-op when the gate already recorded it
        if (gated) mark_healthy(r, repo, now);
        return mark_succeeded(r, repo, now);
      },
      events);
}

void StepRunner::fail_step(const std::string& repo, const std::string& error) {
  const auto now = shared_->clock.now();
  log_->warn("deploy {}: {} failed: {}", id_, repo, error);
  record_.commit([&](Record& r) { return mark_failed(r, repo, error, now); },
                 {{"step_failed", repo}});
}

void StepRunner::rollback_failed(const std::string& repo, const std::string& why) {
  log_->warn("deploy {}: {} is not rolled back: {}", id_, repo, why);
  record_.commit([&](Record& r) { return mark_rollback_failed(r, repo, why); },
                 {{"rollback_failed", repo}});
}

void StepRunner::roll_back() {
  const TargetEntry& target = *target_;
  if (!target.target->can_rollback()) {
    rollback_failed(repo_, "provider " + target.provider + " cannot roll this target back");
    return step_done();
  }
  const Step snapshot = record_.step(repo_);
  const DeployContext context = record_.context_for(repo_, snapshot.attempts());
  auto provider = target.target;
  LogSink sink = log_sink(context.attempt);
  call_provider(
      "rollback", action_limit(target),
      [provider, context, sink] { return provider->rollback(context, sink); },
      [self = shared_from_this()](Result<DeployProgress> result) {
        if (self->should_stop()) return self->step_done();
        const std::string& repo = self->repo_;
        if (result && result.value().status == DeployStatus::succeeded) {
          const auto now = self->shared_->clock.now();
          self->record_.commit([&](Record& r) { return mark_rolled_back(r, repo, now); },
                               {{"rolled_back", repo}});
          return self->step_done();
        }
        const std::string error = !result
                                      ? result.error().message
                                      : (result.value().error.empty() ? "rollback did not succeed"
                                                                      : result.value().error);
        self->rollback_failed(repo, "rollback: " + error);
        self->step_done();
      });
}
}  // namespace orgd::deploy
