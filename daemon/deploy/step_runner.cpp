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
    self->record_.while_live(repo, [&](const Record& record, const Step* step) {
      std::string text{line};
      if (n + 1 == kMaxLogLinesPerStep) text = "(further output not streamed)";
      self->shared_->publish_event(
          record, "log", step, fmt::format("{}.log.{}.{}.{}", self->id_, repo, attempt, n), text);
    });
  };
}

// Runs `call` on the provider threads with the step's context, its deadline `limit` from now;
// `done` runs on this run's strand with its result, or with "<op> did not return within
// <limit>" once `limit` has passed (last_call_hung_ then says so). A call past its deadline is
// left to return on its own (counted in orgd_provider_calls_hung until it does); what it
// returns then is dropped.
void StepRunner::call_provider(const std::string& op, Duration limit, Call call, Outcome done) {
  auto pending = std::make_shared<PendingCall>(shared_->timers, strand_);
  std::erase_if(calls_, [](const std::weak_ptr<PendingCall>& call) { return call.expired(); });
  calls_.push_back(pending);
  auto self = shared_from_this();
  DeployContext context = context_;
  context.handle = handle();
  context.deadline = std::chrono::steady_clock::now() + limit;
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
    self->last_call_hung_ = true;
    done(unavailable(op + " did not return within " + format_duration(limit)));
  });
  auto target = target_->target;
  shared_->provider_calls->submit(
      [self, pending, target, context = std::move(context), call = std::move(call), done, op]() {
        // A provider that throws has a bug that trying again will not mend.
        Result<DeployProgress> result = permanent(internal_error("provider " + op + " threw"));
        try {
          result = call(*target, context);
        } catch (const std::exception& e) {
          result = permanent(internal_error("provider " + op + " threw: " + e.what()));
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
          self->last_call_hung_ = false;
          done(std::move(result));
        });
      });
}

void StepRunner::step_done() {
  if (!watched_handle_.empty()) {
    shared_->unwatch_handle(target_ ? target_->provider : "", watched_handle_, this);
    watched_handle_.clear();
  }
  run_->step_done(shared_from_this());
}

void StepRunner::watch(const std::string& handle) {
  if (target_ == nullptr) return;
  const std::string key = handle.empty() ? std::string{} : target_->target->watch_key(handle);
  if (key == watched_handle_) return;
  if (!watched_handle_.empty()) shared_->unwatch_handle(target_->provider, watched_handle_, this);
  watched_handle_ = key;
  if (!key.empty()) shared_->watch_handle(target_->provider, key, shared_from_this());
}

void StepRunner::poll_soon() {
  asio::post(strand_, [self = shared_from_this()] {
    if (self->polling_) self->timer_.cancel();
  });
}

const std::string& StepRunner::handle() const {
  return progress_ && !progress_->handle.empty() ? progress_->handle : committed_handle_;
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
  committed_handle_ = snapshot.handle();
  if (snapshot.phase() > snapshot.phases_passed() && is_set(snapshot.phase_done_at())) {
    // A gated phase was out and its gate not yet passed: the gate runs again.
    progress_ = DeployProgress{DeployStatus::phase_done, snapshot.handle()};
    progress_->phase = snapshot.phase();
    phase_gate_begin(snapshot.phase());
    return;
  }
  if (!snapshot.handle().empty()) {
    on_progress(DeployProgress{DeployStatus::running, snapshot.handle(), {}});
    return;
  }
  recover();
}

void StepRunner::recover() {
  if (should_stop()) return step_done();
  call_provider(
      "recover", query_limit(policy_),
      [](DeployTarget& target, const DeployContext& context) { return target.recover(context); },
      [self = shared_from_this()](Result<DeployProgress> r) { self->on_recovered(std::move(r)); });
}

void StepRunner::on_recovered(Result<DeployProgress> recovered) {
  if (should_stop()) return step_done();
  const std::string& repo = repo_;
  if (recovered && recovered.value().status == DeployStatus::interrupted) {
    // Ended with orgd, not by the deploy: a new attempt, not one of the step's retries.
    const std::string why =
        recovered.value().error.empty() ? "interrupted" : recovered.value().error;
    if (!record_.commit({repo}, [&](Record& r) { return mark_interrupted(r, repo, why); },
                        {{"step_interrupted", repo}})) {
      return step_done();
    }
    shared_->steps_interrupted->inc();
    context_.attempt = record_.step(repo).attempts();
    call_retries_ = 0;
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
  if (recovered.error().code == ErrorCode::not_found &&
      recovered.error().retry != Retry::rate_limited) {
    log_->info("deploy {}: {} was in flight; provider has no record of it, starting it", id_, repo);
    start_attempt();
    return;
  }
  // The provider could not answer (its API unreachable right after the crash, a call past
  // its deadline): that says nothing about the deploy, so ask again, as a poll would.
  const bool limited = recovered.error().retry == Retry::rate_limited;
  if (recovered.error().retry != Retry::permanent && (limited || ++poll_errors_ < kMaxPollErrors) &&
      !timed_out()) {
    log_->warn("deploy {}: cannot ask the provider about {} yet ({}); asking again", id_, repo,
               recovered.error().message);
    const Duration wait =
        std::max<Duration>(shared_->options.poll_interval,
                           limited ? recovered.error().retry_after : Duration{0});
    timer_.wait_for(wait, [self = shared_from_this()](bool) { self->recover(); });
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
  if (call_retries_ == 0) attempt_started_ = shared_->timers->now();
  poll_errors_ = 0;
  cancel_sent_ = false;
  progress_.reset();
  committed_handle_.clear();
  LogSink sink = log_sink(context_.attempt);
  call_provider(
      "start", action_limit(*target_),
      [sink](DeployTarget& target, const DeployContext& context) {
        return target.start(context, sink);
      },
      [self = shared_from_this()](Result<DeployProgress> r) {
        if (r) {
          self->call_retries_ = 0;
          return self->on_progress(r.value());
        }
        self->on_start_error(r.error());
      });
}

// A start that returned an error did not deploy (or cannot say whether it did). A permanent
// error fails the step at once; orgd's own deadline fails the attempt, as a failed deploy does
// (its call is still running: a second start beside it is what retries decide); a retryable
// or rate-limited one is asked again (after retry_after) through recover(), so a start that
// did reach the cloud before its answer was lost is found instead of made twice, until the
// step's timeout.
void StepRunner::on_start_error(const Error& error) {
  if (should_stop()) return step_done();
  const std::string& repo = repo_;
  if (error.retry == Retry::permanent) {
    call_retries_ = 0;
    fail_step(repo, error.message);
    return step_done();
  }
  const Duration backoff = std::min<Duration>(
      policy_.retry_backoff * (1 << std::min(call_retries_, 10)), std::chrono::minutes{5});
  const Duration wait = error.retry == Retry::rate_limited
                            ? std::max<Duration>(error.retry_after, shared_->options.poll_interval)
                            : backoff;
  // A wait that would end past the step's timeout is not waited.
  if (last_call_hung_ || timed_out() ||
      shared_->timers->now() + wait - attempt_started_ > policy_.step_timeout) {
    call_retries_ = 0;
    progress_ = DeployProgress{DeployStatus::failed, {}, error.message};
    return attempt_failed();
  }
  ++call_retries_;
  log_->warn("deploy {}: {} did not start ({}: {}); asking the provider again in {}", id_, repo,
             retry_name(error.retry), error.message, format_duration(wait));
  timer_.wait_for(wait, [self = shared_from_this()](bool) { self->recover(); });
}

bool StepRunner::timed_out() const {
  return shared_->timers->now() - attempt_started_ > policy_.step_timeout;
}

// The provider's handle, link and detail line into the record, when they changed.
void StepRunner::record_progress(const DeployProgress& progress) {
  const std::string& repo = repo_;
  if (!progress.handle.empty() && progress.handle != committed_handle_) {
    const std::string handle = progress.handle;
    record_.commit({repo}, [&](Record& r) { return mark_handle(r, repo, handle); }, {});
    committed_handle_ = handle;
  }
  const Step current = record_.step(repo);
  if (bounded_text(progress.url, kMaxStepUrl) != current.url() ||
      bounded_text(progress.detail, kMaxStepDetail) != current.detail()) {
    record_.commit({repo}, [&](Record& r) { return mark_progress(r, repo, progress.url, progress.detail); },
                   {{"step_progress", repo}});
  }
}

void StepRunner::schedule_poll(Duration after) {
  watch(handle());
  polling_ = true;
  timer_.wait_for(std::max<Duration>(after, shared_->options.poll_interval),
                  [self = shared_from_this()](bool) {
                    self->polling_ = false;
                    self->poll();
                  });
}

void StepRunner::on_progress(DeployProgress progress) {
  if (should_stop()) return step_done();
  const std::string& repo = repo_;
  if (progress.status != DeployStatus::running || !progress.url.empty() ||
      !progress.detail.empty() || !progress.handle.empty()) {
    record_progress(progress);
  }
  progress_ = progress;
  switch (progress.status) {
    case DeployStatus::running: {
      if (timed_out()) {
        progress_ = DeployProgress{DeployStatus::failed, progress.handle,
                                   "timed out after " + format_duration(policy_.step_timeout)};
        return attempt_failed();
      }
      if (record_.cancel_requested() && !cancel_sent_ && target_->target->can_cancel()) {
        return cancel_deploy();
      }
      return schedule_poll(progress.next_poll_after.value_or(shared_->options.poll_interval));
    }
    case DeployStatus::phase_done: {
      const Step current = record_.step(repo);
      if (progress.phase > 0 && progress.phase <= current.phases_passed()) {
        // Its gate passed before (the provider had not gone on when orgd stopped): go on.
        return advance();
      }
      if (record_.cancel_requested()) {
        return cancel_step("cancelled after phase " + std::to_string(progress.phase) +
                           " (the rollout stays where it is)");
      }
      const int phase = std::max(progress.phase, current.phase() + 1);
      const auto now = shared_->clock.now();
      record_.commit({repo}, [&](Record& r) { return mark_phase_done(r, repo, phase, now); },
                     {{"phase_done", repo}});
      if (should_stop()) return step_done();
      return phase_gate_begin(phase);
    }
    case DeployStatus::succeeded: {
      if (!policy_.health_gate.enabled) {
        succeed(repo, false);
        return step_done();
      }
      const auto now = shared_->clock.now();
      record_.commit({repo}, [&](Record& r) { return mark_deployed(r, repo, now); }, {});
      return gate_begin();
    }
    case DeployStatus::failed:
    case DeployStatus::interrupted:
      if (cancel_sent_) {
        return cancel_step("cancelled while running" +
                           (progress.error.empty() ? std::string{} : ": " + progress.error));
      }
      return attempt_failed();
  }
}

void StepRunner::poll() {
  if (should_stop()) return step_done();
  call_provider(
      "poll", query_limit(policy_),
      [](DeployTarget& target, const DeployContext& context) { return target.poll(context); },
      [self = shared_from_this()](Result<DeployProgress> polled) {
        if (polled) {
          self->poll_errors_ = 0;
          return self->on_progress(polled.value());
        }
        self->on_poll_error(polled.error());
      });
}

// A poll that got no answer says nothing about the deploy: asked again (after retry_after when
// rate-limited), up to kMaxPollErrors retryable errors in a row; a permanent one (the provider
// knows the handle is no good) fails the attempt at once.
void StepRunner::on_poll_error(const Error& error) {
  if (should_stop()) return step_done();
  const std::string handle = this->handle();
  if (error.retry == Retry::permanent || ++poll_errors_ >= kMaxPollErrors || timed_out()) {
    progress_ = DeployProgress{DeployStatus::failed, handle, "poll failed: " + error.message};
    if (cancel_sent_) return cancel_step("cancelled while running: " + progress_->error);
    return attempt_failed();
  }
  if (error.retry == Retry::rate_limited) --poll_errors_;  // waiting as told is not an error
  log_->debug("deploy {}: poll of {} failed ({}); asking again", id_, repo_, error.message);
  schedule_poll(error.retry == Retry::rate_limited ? error.retry_after
                                                   : shared_->options.poll_interval *
                                                         (1 << std::min(poll_errors_, 6)));
}

// A cancel of the deploy while its deploy runs: the provider is asked to stop it, and polled
// until it has ended; the step is then cancelled. A target that cannot cancel runs to its end.
void StepRunner::cancel_deploy() {
  cancel_sent_ = true;
  log_->info("deploy {}: asking the provider to stop {}", id_, repo_);
  call_provider(
      "cancel", query_limit(policy_),
      [](DeployTarget& target, const DeployContext& context) { return target.cancel(context); },
      [self = shared_from_this()](Result<DeployProgress> answer) {
        if (self->should_stop()) return self->step_done();
        if (!answer) {
          self->log_->warn("deploy {}: the provider could not stop {}: {}", self->id_,
                           self->repo_, answer.error().message);
          return self->schedule_poll(self->shared_->options.poll_interval);
        }
        self->on_progress(answer.value());
      });
}

// A gated phase passed: the provider goes on to the next. Retryable errors are asked again
// with backoff until the step's timeout; a permanent one fails the attempt.
void StepRunner::advance() {
  if (should_stop()) return step_done();
  context_.phases_passed = record_.step(repo_).phases_passed();
  call_provider(
      "advance", action_limit(*target_),
      [](DeployTarget& target, const DeployContext& context) { return target.advance(context); },
      [self = shared_from_this()](Result<DeployProgress> answer) {
        if (self->should_stop()) return self->step_done();
        if (answer) {
          self->call_retries_ = 0;
          return self->on_progress(answer.value());
        }
        const Error& error = answer.error();
        if (error.retry == Retry::permanent || self->timed_out()) {
          self->progress_ =
              DeployProgress{DeployStatus::failed, self->handle(), "advance: " + error.message};
          return self->attempt_failed();
        }
        const Duration wait =
            error.retry == Retry::rate_limited
                ? std::max<Duration>(error.retry_after, self->shared_->options.poll_interval)
                : std::min<Duration>(
                      self->policy_.retry_backoff * (1 << std::min(self->call_retries_, 10)),
                      std::chrono::minutes{5});
        ++self->call_retries_;
        self->log_->warn("deploy {}: {} could not go on to its next phase ({}); again in {}",
                         self->id_, self->repo_, error.message, format_duration(wait));
        self->timer_.wait_for(wait, [self](bool) { self->advance(); });
      });
}

void StepRunner::attempt_failed() {
  const std::string& repo = repo_;
  call_retries_ = 0;
  const std::string error =
      !progress_ || progress_->error.empty() ? "deploy failed" : progress_->error;
  const Step current = record_.step(repo);
  const int used = retries_used(current);
  if (used < policy_.retries && !record_.cancel_requested()) {
    shared_->step_retries->inc();
    if (!record_.commit({repo}, [&](Record& r) { return mark_retrying(r, repo, error); },
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
  gate_phase_ = 0;
  const Step snapshot = record_.step(repo_);
  gate_ = HealthGate(config, from_timestamp(snapshot.deployed_at()), snapshot.waiting_for(),
                     shared_->timers->now());
  gate_check();
}

// The gate after a gated phase: the same checks, on reports newer than the phase; when it
// passes the provider goes on, when it fails the partial rollout is rolled back and the step
// fails.
void StepRunner::phase_gate_begin(int phase) {
  gate_phase_ = phase;
  const std::string& repo = repo_;
  if (!policy_.health_gate.enabled) {
    record_.commit({repo}, [&](Record& r) { return mark_phase_passed(r, repo, phase); },
                   {{"phase_passed", repo}});
    gate_phase_ = 0;
    return advance();
  }
  const Step snapshot = record_.step(repo);
  gate_ = HealthGate(policy_.health_gate, from_timestamp(snapshot.phase_done_at()),
                     snapshot.waiting_for(), shared_->timers->now());
  gate_check();
}

void StepRunner::phase_gate_failed(const std::string& why) {
  const std::string& repo = repo_;
  const std::string failure = "phase " + std::to_string(gate_phase_) + ": " + why;
  gate_phase_ = 0;
  if (!target_->target->can_rollback()) {
    fail_step(repo, failure + "; the target cannot roll back, the rollout stays where it is");
    return step_done();
  }
  LogSink sink = log_sink(context_.attempt);
  call_provider(
      "rollback", action_limit(*target_),
      [sink](DeployTarget& target, const DeployContext& context) {
        return target.rollback(context, sink);
      },
      [self = shared_from_this(), failure](Result<DeployProgress> result) {
        if (self->should_stop()) return self->step_done();
        const bool back = result && result.value().status == DeployStatus::succeeded;
        const std::string error =
            !result ? result.error().message
                    : (result.value().error.empty() ? "rollback did not succeed"
                                                    : result.value().error);
        self->fail_step(self->repo_,
                        failure + (back ? "; rolled back" : "; rolling back failed: " + error));
        self->step_done();
      });
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
  if (verdict.passed && gate_phase_ > 0) {
    const int phase = gate_phase_;
    gate_phase_ = 0;
    record_.commit({repo}, [&](Record& r) { return mark_phase_passed(r, repo, phase); },
                   {{"phase_passed", repo}});
    gate_.set_waiting_for({});
    return advance();
  }
  if (verdict.passed) {
    succeed(repo, true);
    return step_done();
  }
  set_waiting(verdict.waiting_for);
  if (verdict.failed && gate_phase_ > 0) return phase_gate_failed(*verdict.failed);
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
  if (record_.commit({repo}, [&](Record& r) { return mark_waiting(r, repo, what); },
                     {{"health_gate_waiting", repo}})) {
    gate_.set_waiting_for(what);
  }
}

void StepRunner::cancel_step(const std::string& why) {
  const auto now = shared_->clock.now();
  const std::string& repo = repo_;
  log_->info("deploy {}: {} {}", id_, repo, why);
  record_.commit({repo}, [&](Record& r) { return mark_cancelled(r, repo, why, now); },
                 {{"step_cancelled", repo}});
  step_done();
}

void StepRunner::succeed(const std::string& repo, bool gated) {
  const auto now = shared_->clock.now();
  std::vector<std::pair<std::string, std::string>> events;
  if (gated) events.emplace_back("health_gate_passed", repo);
  events.emplace_back("step_succeeded", repo);
  record_.commit(
      {repo},
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
  record_.commit({repo}, [&](Record& r) { return mark_failed(r, repo, error, now); },
                 {{"step_failed", repo}});
}

void StepRunner::rollback_failed(const std::string& repo, const std::string& why) {
  log_->warn("deploy {}: {} is not rolled back: {}", id_, repo, why);
  record_.commit({repo}, [&](Record& r) { return mark_rollback_failed(r, repo, why); },
                 {{"rollback_failed", repo}});
}

void StepRunner::roll_back() {
  const TargetEntry& target = *target_;
  if (!target.target->can_rollback()) {
    rollback_failed(repo_, "provider " + target.provider + " cannot roll this target back");
    return step_done();
  }
  const Step snapshot = record_.step(repo_);
  context_ = record_.context_for(repo_, snapshot.attempts());
  committed_handle_ = snapshot.handle();
  LogSink sink = log_sink(context_.attempt);
  call_provider(
      "rollback", action_limit(target),
      [sink](DeployTarget& target, const DeployContext& context) {
        return target.rollback(context, sink);
      },
      [self = shared_from_this()](Result<DeployProgress> result) {
        if (self->should_stop()) return self->step_done();
        const std::string& repo = self->repo_;
        if (result && result.value().status == DeployStatus::succeeded) {
          const auto now = self->shared_->clock.now();
          self->record_.commit({repo}, [&](Record& r) { return mark_rolled_back(r, repo, now); },
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
