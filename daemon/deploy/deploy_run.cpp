#include "daemon/deploy/deploy_run.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>

namespace orgd::deploy {

namespace asio = boost::asio;
using std::chrono::milliseconds;

DeployRun::DeployRun(std::shared_ptr<OrchestratorContext> shared, std::string id,
                     std::uint64_t lease_revision, bool resumed)
    : shared_(std::move(shared)),
      id_(std::move(id)),
      resumed_(resumed),
      log_(shared_->log),
      record_(shared_, id_, stop_, [this] { wake(); }),
      lease_(shared_, id_, lease_revision, record_, stop_),
      strand_(shared_->executor->make_strand()),
      tick_(shared_->timers, strand_) {}

void DeployRun::start() {
  post([self = shared_from_this()] { self->begin(); });
}

void DeployRun::request_stop() {
  stop_.request();
  post([self = shared_from_this()] { self->end_stopped(); });
}

void DeployRun::wake() {
  if (wake_posted_.exchange(true)) return;
  post([self = shared_from_this()] {
    self->wake_posted_ = false;
    self->decide();
  });
}

void DeployRun::slot_granted() {
  post([self = shared_from_this()] {
    if (self->ended_) {
      self->shared_->release_slot();
      return;
    }
    self->has_slot_ = true;
    self->waiting_for_slot_ = false;
    if (self->should_stop()) {
      self->end_stopped();
      return;
    }
    self->after_slot();
  });
}

void DeployRun::join(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(done_mutex_);
  if (done_cv_.wait_until(lock, deadline, [&] { return finished_.load(); })) return;
  record_.abandon();
}

void DeployRun::begin() {
  if (should_stop()) {
    end_stopped();
    return;
  }
  lease_.schedule();
  if (!shared_->take_slot(shared_from_this())) {
    // In line behind deploy.max_active others: the lease is renewed by the tick meanwhile.
    waiting_for_slot_ = true;
    arm_tick();
    return;
  }
  has_slot_ = true;
  after_slot();
}

void DeployRun::after_slot() {
  DeployStore* store = shared_->kv();
  if (!record_.load()) {
    store->release_lease(DeployStore::deploy_lease(id_), record_.owner());
    end();
    return;
  }
  const Record loaded = record_.record();
  repos_.clear();
  for (const Step& step : loaded.steps()) repos_.push_back(step.repo());
  if (is_terminal(loaded.state())) {
    finalize(/*checked=*/true);
    end();
    return;
  }
  inventory_ = shared_->current_inventory();
  parallel_ = std::max(1, inventory_->settings().parallel);
  if (resumed_) {
    shared_->deploys_resumed->inc();
    log_->info("deploy {}: resuming (was run by {})", id_,
               loaded.owner().empty() ? "nobody yet" : loaded.owner());
    check_locks();
  }
  const bool was_pending = loaded.state() == Record::pending;
  const auto now = shared_->clock.now();
  if (!record_.commit(
          {},
          [&](Record& r) {
            mark_running(r, record_.owner(), now);
            return true;
          },
          {{resumed_ && !was_pending ? "resumed" : "", ""}})) {
    record_.mark_lost();
    end_stopped();
    return;
  }
  running_ = true;
  lease_.schedule();
  decide();
}

// One pass of what the old main loop did per wake-up: renew, decide, start what is due.
void DeployRun::decide() {
  if (ended_) return;
  if (should_stop()) {
    end_stopped();
    return;
  }
  if (waiting_for_slot_) {
    lease_.renew_in_background(/*with_refresh=*/false,
                               [self = shared_from_this()] { self->wake(); });
    arm_tick();
    return;
  }
  if (!running_) return;
  lease_.renew_in_background(/*with_refresh=*/true, [self = shared_from_this()] { self->wake(); });
  if (lost()) {
    end();
    return;
  }
  // A cancel ends waits at once: gate checks and retry backoffs run now and see it.
  if (record_.cancel_requested()) {
    for (auto& [repo, step] : steps_) step->cut_wait();
  }
  const NextActions next =
      record_.read([&](const Record& r) { return next_actions(r, parallel_); });
  const auto now = shared_->clock.now();
  if (!next.skip.empty()) {
    std::vector<std::pair<std::string, std::string>> events;
    for (const auto& repo : next.skip) events.emplace_back("step_skipped", repo);
    record_.commit(
        next.skip,
        [&](Record& r) {
          bool changed = false;
          for (const auto& repo : next.skip) changed |= mark_skipped(r, repo, next.skip_as, now);
          return changed;
        },
        events);
  }
  if (next.finish) {
    finish(*next.finish, now);
    return;
  }
  if (next.rollback && steps_.count(*next.rollback) == 0) {
    begin_step(*next.rollback, StepRunner::Mode::rollback);
  }
  // A step whose lock another deploy holds now (this deploy gave its locks up and crashed
  // before it was marked finished, or the lock's entry was removed by hand) fails instead
  // of running next to that deploy.
  std::vector<std::string> unlocked;
  for (const auto& repo : next.start) {
    if (lost_locks_.count(repo) != 0) unlocked.push_back(repo);
  }
  if (!unlocked.empty()) {
    std::vector<std::pair<std::string, std::string>> events;
    for (const auto& repo : unlocked) events.emplace_back("step_failed", repo);
    record_.commit(
        unlocked,
        [&](Record& r) {
          for (const auto& repo : unlocked) {
            mark_started(r, repo, "", now);
            mark_failed(r, repo, "the lock of " + repo + "/" + env() + " is held by another deploy",
                        now);
          }
          return true;
        },
        events);
    arm_tick();
    return;  // the commit woke us: decide again with the record as it is now
  }
  if (!next.start.empty()) {
    // One write for the steps starting together; each is persisted before its provider
    // is called, so a resume knows it may be in flight.
    std::vector<std::pair<std::string, std::string>> events;
    for (const auto& repo : next.start) events.emplace_back("step_started", repo);
    const bool started = record_.commit(
        next.start,
        [&](Record& r) {
          bool changed = false;
          for (const auto& repo : next.start) {
            const TargetEntry* target = inventory_->target(repo, env());
            if (!mark_started(r, repo, target ? target->provider : "", now)) continue;
            changed = true;
            // What a rollback of this step returns to, kept with the step so that another
            // replica resuming it rolls back to the same deploy.
            if (shared_->previous_success) {
              if (auto previous = shared_->previous_success(repo, env(), r.deploy_id())) {
                mark_previous(r, repo, *previous);
              }
            }
          }
          return changed;
        },
        events);
    if (started) {
      for (const auto& repo : next.start) {
        shared_->steps_started->inc();
        begin_step(repo, StepRunner::Mode::fresh);
      }
    }
  }
  // Steps in flight without a runner here: a resumed deploy's, re-checked with the provider.
  const auto orphans = record_.read([](const Record& r) {
    std::vector<std::string> running;
    for (const Step& step : r.steps()) {
      if (step.state() == Step::running) running.push_back(step.repo());
    }
    return running;
  });
  for (const auto& repo : orphans) {
    if (steps_.count(repo) == 0) begin_step(repo, StepRunner::Mode::resume);
  }
  arm_tick();
}

void DeployRun::finish(Record::State state, Clock::time_point now) {
  // Before the record says finished: until then no other deploy may take these locks
  // over, so they are still ours to delete unread. A crash in between leaves a deploy
  // that is resumed, finds nothing to do, and finishes.
  std::vector<std::string> held;
  for (const auto& repo : repos_) {
    if (lost_locks_.count(repo) == 0) held.push_back(repo);
  }
  shared_->kv()->drop_locks(held, env());
  std::vector<std::pair<std::string, std::string>> events;
  if (state == Record::cancelled) events.emplace_back("cancelled", "");
  events.emplace_back("finished", "");
  if (record_.commit(
          {},
          [&](Record& r) {
            mark_finished(r, state, now);
            return true;
          },
          events)) {
    shared_->deploys_finished[Record::State_Name(state)]->inc();
    const std::string error = record_.read([](const Record& r) { return r.error(); });
    log_->info("deploy {} to {} finished: {}{}", id_, env(), Record::State_Name(state),
               error.empty() ? "" : " (" + error + ")");
    finalize();
    end();
    return;
  }
  end_stopped();
}

// Wakes decide() at the next lease renewal, and at least every second.
void DeployRun::arm_tick() {
  if (ended_) return;
  // A renewal in progress wakes decide() itself when it is done.
  const auto now = shared_->timers->now();
  const auto until = lease_.renewing() ? now + milliseconds{1000}
                                       : std::clamp(lease_.next_renewal(), now + milliseconds{10},
                                                    now + milliseconds{1000});
  tick_.wait_until(until, [self = shared_from_this()](bool cancelled) {
    if (cancelled) return;
    self->decide();
  });
}

// Stopped, not finished: hand the deploy over at once instead of after the lease expires.
void DeployRun::end_stopped() {
  if (ended_) return;
  if (!lost()) lease_.release();
  end();
}

// The run is over here (finished, stopped or lost): timers end, the slot goes to the next.
void DeployRun::end() {
  if (ended_) return;
  ended_ = true;
  tick_.cancel();
  for (auto& [repo, step] : steps_) step->cancel_timers();
  // The steps hold the run: what is still in flight holds them, not the run.
  steps_.clear();
  if (has_slot_) {
    has_slot_ = false;
    shared_->release_slot();
  }
  {
    std::lock_guard lock(done_mutex_);
    finished_.store(true);
  }
  done_cv_.notify_all();
}

// `checked`: the locks may have been taken over already (the record was finished before).
void DeployRun::finalize(bool checked) {
  DeployStore* store = shared_->kv();
  if (checked) store->release_locks(repos_, env(), id_);
  (void)store->clear_active(id_);
  store->release_lease(DeployStore::deploy_lease(id_), record_.owner());
}

void DeployRun::check_locks() {
  auto lost = shared_->kv()->check_locks(repos_, env(), id_);
  if (!lost) {
    shared_->kv_errors->inc();
    return;
  }
  for (const auto& repo : lost.value()) {
    if (lost_locks_.insert(repo).second) {
      log_->warn("deploy {}: the lock of {}/{} is held by another deploy; its step will not run",
                 id_, repo, env());
    }
  }
}

void DeployRun::begin_step(const std::string& repo, StepRunner::Mode mode) {
  auto step = std::make_shared<StepRunner>(shared_from_this(), shared_, record_, strand_, repo,
                                           inventory_->target(repo, env()));
  steps_[repo] = step;
  step->begin(mode);
}

void DeployRun::step_done(const std::shared_ptr<StepRunner>& step) {
  auto it = steps_.find(step->repo());
  if (it != steps_.end() && it->second == step) steps_.erase(it);
  wake();
}

}  // namespace orgd::deploy
