#include "daemon/deploy/orchestrator.hpp"

#include <fmt/format.h>
#include <google/protobuf/struct.pb.h>

#include <algorithm>
#include <functional>
#include <set>

#include "daemon/core/duration.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/timestamps.hpp"
#include "daemon/deploy/deploy_state.hpp"
#include "daemon/events/codec.hpp"

namespace orgd::deploy {

namespace {

using std::chrono::milliseconds;

constexpr std::size_t kMaxLogLinesPerStep = 1000;
constexpr int kDefaultListLimit = 20;
constexpr int kMaxListLimit = 500;
// Records a filtered list reads at most, newest first.
constexpr int kMaxListScan = 2000;
// Consecutive poll errors after which a step's attempt fails.
constexpr int kMaxPollErrors = 5;

v1::DeployRecord::State summary_state(Step::State state) {
  switch (state) {
    case Step::pending: return Record::pending;
    case Step::running: return Record::running;
    case Step::succeeded: return Record::succeeded;
    case Step::failed: return Record::failed;
    case Step::rolled_back: return Record::rolled_back;
    case Step::cancelled:
    case Step::skipped: return Record::cancelled;
    default: return Record::pending;
  }
}

std::vector<std::vector<std::string>> waves_of(const Record& record) {
  std::vector<std::vector<std::string>> waves;
  for (const Step& step : record.steps()) {
    const auto wave = static_cast<std::size_t>(std::max(0, step.wave()));
    if (waves.size() <= wave) waves.resize(wave + 1);
    waves[wave].push_back(step.repo());
  }
  return waves;
}

void set_waves(google::protobuf::RepeatedPtrField<google::protobuf::ListValue>* out,
               const std::vector<std::vector<std::string>>& waves) {
  for (const auto& wave : waves) {
    auto* list = out->Add();
    for (const auto& repo : wave) list->add_values()->set_string_value(repo);
  }
}

}  // namespace

// What the orchestrator and its runs share. Runs hold it by shared_ptr, so a run whose provider
// call outlives stop() (detached) still has a valid store; `Publisher` and `HealthGateSource`
// belong to the daemon and are only touched by runs that are not abandoned.
struct Orchestrator::Shared {
  Shared(OrchestratorOptions opts, std::shared_ptr<const Inventory> inv, Publisher& pub,
         const HealthGateSource& gate, MetricsRegistry& registry, const Clock& clk)
      : options(std::move(opts)),
        publisher(pub),
        health(gate),
        metrics(registry),
        clock(clk),
        inventory(std::move(inv)),
        log(logging::get("deploy")) {
    deploys_accepted = &metrics.counter("orgd_deploys_accepted_total", "Deploys accepted");
    deploys_duplicate = &metrics.counter("orgd_deploys_duplicate_total",
                                         "Deploy requests answered with an existing deploy");
    deploys_conflict = &metrics.counter("orgd_deploys_conflicts_total",
                                        "Deploy requests refused: repo+env locked");
    deploys_resumed = &metrics.counter("orgd_deploys_resumed_total",
                                       "Deploys resumed after their runner's lease expired");
    for (const char* state : {"succeeded", "failed", "cancelled", "rolled_back"}) {
      deploys_finished[state] = &metrics.counter("orgd_deploys_finished_total",
                                                 "Deploys finished, by final state",
                                                 {{"state", state}});
    }
    steps_started = &metrics.counter("orgd_deploy_steps_started_total", "Deploy steps started");
    step_retries = &metrics.counter("orgd_deploy_step_retries_total", "Deploy step retries");
    commit_conflicts = &metrics.counter(
        "orgd_deploy_commit_conflicts_total",
        "Deploy record writes that lost a compare-and-set and were merged and retried");
    kv_errors = &metrics.counter("orgd_deploy_kv_errors_total",
                                 "Deploy KV operations that failed (NATS unavailable)");
    active_gauge = &metrics.gauge("orgd_deploys_running", "Deploys this orgd is running");
  }

  std::shared_ptr<const Inventory> current_inventory() {
    std::lock_guard lock(inventory_mutex);
    return inventory;
  }

  DeployStore* kv() { return store.load(); }

  // P.events.deploy.<id>.<kind>, de-duplicated by the stream on `msg_id`.
  void publish_event(const Record& record, const std::string& kind, const Step* step,
                     const std::string& msg_id, const std::string& line = {}) {
    v1::DeployEvent event;
    event.set_deploy_id(record.deploy_id());
    event.set_kind(kind);
    if (step != nullptr) *event.mutable_step() = *step;
    event.set_state(record.state());
    *event.mutable_at() = to_timestamp(clock.now());
    event.set_env(record.env());
    event.set_ref(record.ref());
    if (!line.empty()) event.set_line(line);
    if (kind == "accepted") set_waves(event.mutable_waves(), waves_of(record));
    BusMessage message;
    message.subject = options.prefix + ".events.deploy." + record.deploy_id() + "." + kind;
    message.data = encode(event, Encoding::json);
    message.set_header("Nats-Msg-Id", msg_id);
    if (auto sent = publisher.publish(message); !sent) {
      log->warn("deploy {}: event {} not published: {}", record.deploy_id(), kind,
                sent.error().message);
    }
  }

  OrchestratorOptions options;
  Publisher& publisher;
  const HealthGateSource& health;
  MetricsRegistry& metrics;
  const Clock& clock;
  std::mutex inventory_mutex;  // guards inventory
  std::shared_ptr<const Inventory> inventory;
  std::atomic<DeployStore*> store{nullptr};
  std::unique_ptr<DeployStore> store_owner;
  std::shared_ptr<spdlog::logger> log;

  std::mutex slots_mutex;  // guards active
  std::condition_variable slots_cv;
  int active = 0;

  Counter* deploys_accepted = nullptr;
  Counter* deploys_duplicate = nullptr;
  Counter* deploys_conflict = nullptr;
  Counter* deploys_resumed = nullptr;
  std::map<std::string, Counter*> deploys_finished;
  Counter* steps_started = nullptr;
  Counter* step_retries = nullptr;
  Counter* commit_conflicts = nullptr;
  Counter* kv_errors = nullptr;
  Gauge* active_gauge = nullptr;
};

// One deploy run by this orgd: a main thread that decides (deploy_state's next_actions), one
// thread per step in flight (provider calls and the health gate), all writing the record
// through commit(), which is revision-checked against KV.
class DeployRun : public std::enable_shared_from_this<DeployRun> {
 public:
  using Shared = Orchestrator::Shared;
  enum class Mode { fresh, resume, rollback };

  DeployRun(std::shared_ptr<Shared> shared, std::string id, std::uint64_t lease_revision,
            bool resumed)
      : shared_(std::move(shared)),
        id_(std::move(id)),
        lease_revision_(lease_revision),
        resumed_(resumed),
        log_(shared_->log) {}

  void start() {
    main_ = std::thread([self = shared_from_this()] { self->main(); });
  }

  void request_stop() {
    {
      std::lock_guard lock(wake_mutex_);
      stopping_.store(true);
    }
    stop_cv_.notify_all();
    wake();
  }

  void wake() {
    {
      std::lock_guard lock(wake_mutex_);
      woken_ = true;
    }
    wake_cv_.notify_all();
  }

  bool finished() const { return finished_.load(); }

  // Joins the run's threads; those still busy at the deadline (a provider call that does not
  // return) are detached and the run is abandoned: it never touches the daemon again.
  void join(std::chrono::steady_clock::time_point deadline) {
    std::vector<std::thread> threads;
    {
      std::unique_lock lock(threads_mutex_);
      threads_cv_.wait_until(lock, deadline, [&] { return live_threads_ == 0 && finished_; });
      if (live_threads_ != 0 || !finished_) {
        std::lock_guard use(mutex_);
        abandoned_ = true;
      }
    }
    std::lock_guard lock(threads_mutex_);
    const bool abandoned = [&] {
      std::lock_guard use(mutex_);
      return abandoned_;
    }();
    for (auto& [repo, thread] : steps_) {
      if (!thread.joinable()) continue;
      if (abandoned) {
        thread.detach();
      } else {
        thread.join();
      }
    }
    steps_.clear();
    if (main_.joinable()) {
      if (abandoned) {
        main_.detach();
      } else {
        main_.join();
      }
    }
  }

 private:
  // ---- main thread -------------------------------------------------------------------------

  void main() {
    run();
    {
      std::lock_guard lock(threads_mutex_);
      finished_ = true;
    }
    threads_cv_.notify_all();
  }

  void run() {
    DeployStore* store = shared_->kv();
    if (!take_slot()) {
      store->release_lease(DeployStore::deploy_lease(id_), owner());
      return;
    }
    struct SlotRelease {
      Shared& shared;
      ~SlotRelease() {
        {
          std::lock_guard lock(shared.slots_mutex);
          --shared.active;
          shared.active_gauge->set(shared.active);
        }
        shared.slots_cv.notify_one();
      }
    } slot{*shared_};

    if (!load()) {
      store->release_lease(DeployStore::deploy_lease(id_), owner());
      return;
    }
    repos_.clear();
    for (const Step& step : record_.steps()) repos_.push_back(step.repo());
    if (is_terminal(record_.state())) {
      finalize(/*checked=*/true);
      return;
    }
    inventory_ = shared_->current_inventory();
    parallel_ = std::max(1, inventory_->settings().parallel);
    if (resumed_) {
      shared_->deploys_resumed->inc();
      log_->info("deploy {}: resuming (was run by {})", id_,
                 record_.owner().empty() ? "nobody yet" : record_.owner());
      check_locks();
    }
    const bool was_pending = record_.state() == Record::pending;
    const auto now = shared_->clock.now();
    if (!commit(
            [&](Record& r) {
              mark_running(r, owner(), now);
              return true;
            },
            {{resumed_ && !was_pending ? "resumed" : "", ""}})) {
      abandon_quietly();
      return;
    }
    next_renewal_ = std::chrono::steady_clock::now() + renew_interval();
    loop();
  }

  void loop() {
    while (!stopping_.load() && !lost()) {
      reap_steps();
      maybe_renew();
      if (lost()) break;
      NextActions next;
      {
        std::lock_guard lock(mutex_);
        next = next_actions(record_, parallel_);
      }
      const auto now = shared_->clock.now();
      if (!next.skip.empty()) {
        std::vector<std::pair<std::string, std::string>> events;
        for (const auto& repo : next.skip) events.emplace_back("step_skipped", repo);
        commit(
            [&](Record& r) {
              bool changed = false;
              for (const auto& repo : next.skip) changed |= mark_skipped(r, repo, next.skip_as, now);
              return changed;
            },
            events);
      }
      if (next.finish) {
        const Record::State state = *next.finish;
        // Before the record says finished: until then no other deploy may take these locks
        // over, so they are still ours to delete unread. A crash in between leaves a deploy
        // that is resumed, finds nothing to do, and finishes.
        std::vector<std::string> held;
        for (const auto& repo : repos_) {
          if (lost_locks_.count(repo) == 0) held.push_back(repo);
        }
        shared_->kv()->drop_locks(held, env_);
        std::vector<std::pair<std::string, std::string>> events;
        if (state == Record::cancelled) events.emplace_back("cancelled", "");
        events.emplace_back("finished", "");
        if (commit(
                [&](Record& r) {
                  mark_finished(r, state, now);
                  return true;
                },
                events)) {
          shared_->deploys_finished[Record::State_Name(state)]->inc();
          const std::string error = [&] {
            std::lock_guard lock(mutex_);
            return record_.error();
          }();
          log_->info("deploy {} to {} finished: {}{}", id_, env_, Record::State_Name(state),
                     error.empty() ? "" : " (" + error + ")");
          finalize();
        }
        return;
      }
      if (next.rollback && !has_thread(*next.rollback)) spawn(*next.rollback, Mode::rollback);
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
        commit(
            [&](Record& r) {
              for (const auto& repo : unlocked) {
                mark_started(r, repo, "", now);
                mark_failed(r, repo, "the lock of " + repo + "/" + env_ + " is held by another deploy",
                            now);
              }
              return true;
            },
            events);
        continue;
      }
      if (!next.start.empty()) {
        // One write for the steps starting together; each is persisted before its provider
        // is called, so a resume knows it may be in flight.
        std::vector<std::pair<std::string, std::string>> events;
        for (const auto& repo : next.start) events.emplace_back("step_started", repo);
        const bool started = commit(
            [&](Record& r) {
              bool changed = false;
              for (const auto& repo : next.start) {
                const TargetEntry* target = inventory_->target(repo, env_);
                changed |= mark_started(r, repo, target ? target->provider : "", now);
              }
              return changed;
            },
            events);
        if (started) {
          for (const auto& repo : next.start) {
            shared_->steps_started->inc();
            spawn(repo, Mode::fresh);
          }
        }
      }
      // Steps in flight without a thread here: a resumed deploy's, re-checked with the provider.
      std::vector<std::string> orphans;
      {
        std::lock_guard lock(mutex_);
        for (const Step& step : record_.steps()) {
          if (step.state() == Step::running) orphans.push_back(step.repo());
        }
      }
      for (const auto& repo : orphans) {
        if (!has_thread(repo)) spawn(repo, Mode::resume);
      }
      wait_for_change();
    }
    if (stopping_.load() && !lost()) {
      // Stopped, not finished: hand the deploy over at once instead of after the lease expires.
      shared_->kv()->release_lease(DeployStore::deploy_lease(id_), owner());
    }
  }

  // `checked`: the locks may have been taken over already (the record was finished before).
  void finalize(bool checked = false) {
    DeployStore* store = shared_->kv();
    if (checked) store->release_locks(repos_, env_, id_);
    (void)store->clear_active(id_);
    store->release_lease(DeployStore::deploy_lease(id_), owner());
  }

  bool take_slot() {
    std::unique_lock lock(shared_->slots_mutex);
    const int max_active = std::max(1, shared_->current_inventory()->settings().max_active);
    next_renewal_ = std::chrono::steady_clock::now() + renew_interval();
    while (shared_->active >= max_active) {
      if (stopping_.load()) return false;
      shared_->slots_cv.wait_for(lock, milliseconds{200});
      if (std::chrono::steady_clock::now() >= next_renewal_) {
        lock.unlock();
        renew_lease_only();
        lock.lock();
        if (lost()) return false;
      }
    }
    ++shared_->active;
    shared_->active_gauge->set(shared_->active);
    return true;
  }

  bool load() {
    for (int attempt = 0; !stopping_.load(); ++attempt) {
      auto loaded = shared_->kv()->load(id_);
      if (loaded) {
        if (!loaded.value()) {
          log_->warn("deploy {}: listed as active but has no record; dropping it", id_);
          (void)shared_->kv()->clear_active(id_);
          return false;
        }
        std::lock_guard lock(mutex_);
        record_ = std::move(loaded.value()->record);
        revision_ = loaded.value()->revision;
        env_ = record_.env();
        return true;
      }
      shared_->kv_errors->inc();
      if (loaded.error().code != ErrorCode::unavailable) {
        log_->error("deploy {}: cannot load: {}", id_, loaded.error().message);
        return false;
      }
      pause(milliseconds{std::min(2000, 100 << std::min(attempt, 4))});
    }
    return false;
  }

  std::chrono::milliseconds renew_interval() const {
    const auto ttl = shared_->current_inventory()->settings().lease_ttl;
    return std::max(milliseconds{100}, ttl / 3);
  }

  void renew_lease_only() {
    auto renewed =
        shared_->kv()->renew_lease(DeployStore::deploy_lease(id_), owner(), lease_revision_);
    if (renewed) {
      lease_revision_ = renewed.value();
    } else if (renewed.error().code == ErrorCode::conflict) {
      // Expired and maybe taken: it is ours only if nobody else holds it now.
      auto again = shared_->kv()->acquire_lease(DeployStore::deploy_lease(id_), owner());
      if (again) {
        lease_revision_ = again.value();
      } else if (again.error().code == ErrorCode::conflict) {
        log_->warn("deploy {}: lease lost to another orgd; stopping here", id_);
        std::lock_guard lock(mutex_);
        lost_ = true;
      }
    } else {
      shared_->kv_errors->inc();
    }
    next_renewal_ = std::chrono::steady_clock::now() + renew_interval();
  }

  void check_locks() {
    auto lost = shared_->kv()->check_locks(repos_, env_, id_);
    if (!lost) {
      shared_->kv_errors->inc();
      return;
    }
    for (const auto& repo : lost.value()) {
      if (lost_locks_.insert(repo).second) {
        log_->warn("deploy {}: the lock of {}/{} is held by another deploy; its step will not run",
                   id_, repo, env_);
      }
    }
  }

  // Every lease_ttl/3: the lease, and a look at the record for a cancel request written by
  // another replica.
  void maybe_renew() {
    if (std::chrono::steady_clock::now() < next_renewal_) return;
    renew_lease_only();
    if (lost()) return;
    refresh();
  }

  void refresh() {
    auto loaded = shared_->kv()->load(id_);
    if (!loaded || !loaded.value()) return;
    std::lock_guard lock(mutex_);
    if (loaded.value()->revision == revision_) return;
    if (loaded.value()->record.owner() != owner()) {
      log_->warn("deploy {}: now run by {}; stopping here", id_, loaded.value()->record.owner());
      lost_ = true;
      return;
    }
    merge_external(record_, loaded.value()->record);
    revision_ = loaded.value()->revision;
  }

  void wait_for_change() {
    std::unique_lock lock(wake_mutex_);
    const auto until = std::min(next_renewal_, std::chrono::steady_clock::now() + milliseconds{1000});
    wake_cv_.wait_until(lock, until, [&] { return woken_; });
    woken_ = false;
  }

  // Sleeps up to `d`, returning early when the run stops.
  void pause(std::chrono::milliseconds d) {
    std::unique_lock lock(wake_mutex_);
    stop_cv_.wait_for(lock, d, [&] { return stopping_.load(); });
  }

  // ---- commits -----------------------------------------------------------------------------

  // Applies `change` to the record and writes it, compare-and-set on the revision; on a
  // conflict, merges what another replica wrote (a cancel request) and tries again. Publishes
  // `events` (kind, repo) once written. False when nothing changed, or the run was lost,
  // abandoned or stopped while NATS was unreachable.
  bool commit(const std::function<bool(Record&)>& change,
              const std::vector<std::pair<std::string, std::string>>& events) {
    std::unique_lock lock(mutex_);
    for (int attempt = 0;; ++attempt) {
      if (abandoned_ || lost_) return false;
      Record next = record_;
      if (!change(next)) return false;
      *next.mutable_updated_at() = to_timestamp(shared_->clock.now());
      auto written = shared_->kv()->update(next, revision_);
      if (written) {
        record_ = std::move(next);
        revision_ = written.value();
        claimed_ = true;
        for (const auto& [kind, repo] : events) {
          if (kind.empty()) continue;
          const Step* step = repo.empty() ? nullptr : find_step(record_, repo);
          shared_->publish_event(record_, kind, step,
                                 fmt::format("{}.{}.{}.{}", id_, revision_, kind, repo));
        }
        lock.unlock();
        wake();
        return true;
      }
      if (written.error().code == ErrorCode::conflict) {
        shared_->commit_conflicts->inc();
        auto loaded = shared_->kv()->load(id_);
        if (loaded && loaded.value()) {
          // Before our first write the record still names the runner we took over from.
          if (claimed_ && loaded.value()->record.owner() != owner()) {
            log_->warn("deploy {}: now run by {}; stopping here", id_,
                       loaded.value()->record.owner());
            lost_ = true;
            return false;
          }
          merge_external(record_, loaded.value()->record);
          revision_ = loaded.value()->revision;
          continue;
        }
      }
      // NATS unreachable (a server restart, a partition): keep the change and try again.
      shared_->kv_errors->inc();
      if (attempt == 0 || attempt % 20 == 0) {
        log_->warn("deploy {}: cannot write the record ({}); retrying", id_,
                   written.error().message);
      }
      lock.unlock();
      if (stopping_.load()) return false;
      pause(milliseconds{std::min(2000, 100 << std::min(attempt, 4))});
      lock.lock();
    }
  }

  void abandon_quietly() {
    std::lock_guard lock(mutex_);
    lost_ = true;
  }

  bool lost() const {
    std::lock_guard lock(mutex_);
    return lost_ || abandoned_;
  }

  std::string owner() const { return shared_->options.instance_id; }

  // ---- steps -------------------------------------------------------------------------------

  bool has_thread(const std::string& repo) {
    std::lock_guard lock(threads_mutex_);
    return steps_.count(repo) != 0;
  }

  void spawn(const std::string& repo, Mode mode) {
    std::lock_guard lock(threads_mutex_);
    ++live_threads_;
    steps_[repo] = std::thread([self = shared_from_this(), repo, mode] {
      self->step_main(repo, mode);
      {
        std::lock_guard done(self->threads_mutex_);
        --self->live_threads_;
        self->done_steps_.insert(repo);
      }
      self->threads_cv_.notify_all();
      self->wake();
    });
  }

  void reap_steps() {
    std::vector<std::thread> done;
    {
      std::lock_guard lock(threads_mutex_);
      for (const auto& repo : done_steps_) {
        auto it = steps_.find(repo);
        if (it == steps_.end()) continue;
        done.push_back(std::move(it->second));
        steps_.erase(it);
      }
      done_steps_.clear();
    }
    for (auto& thread : done) thread.join();
  }

  Step step_snapshot(const std::string& repo) const {
    std::lock_guard lock(mutex_);
    const Step* step = find_step(record_, repo);
    return step == nullptr ? Step{} : *step;
  }

  bool cancel_requested() const {
    std::lock_guard lock(mutex_);
    return record_.cancel_requested();
  }

  bool should_stop() const { return stopping_.load() || lost(); }

  LogSink log_sink(const std::string& repo, int attempt) {
    auto count = std::make_shared<std::atomic<std::size_t>>(0);
    return [self = shared_from_this(), repo, attempt, count](std::string_view line) {
      const std::size_t n = (*count)++;
      if (n >= kMaxLogLinesPerStep) return;
      std::lock_guard lock(self->mutex_);
      if (self->abandoned_) return;
      const Step* step = find_step(self->record_, repo);
      std::string text{line};
      if (n + 1 == kMaxLogLinesPerStep) text = "(further output not streamed)";
      self->shared_->publish_event(self->record_, "log", step,
                                   fmt::format("{}.log.{}.{}.{}", self->id_, repo, attempt, n),
                                   text);
    };
  }

  DeployContext context_for(const std::string& repo, int attempt) const {
    std::lock_guard lock(mutex_);
    DeployContext context;
    context.repo = repo;
    context.env = record_.env();
    context.ref = record_.ref();
    context.deploy_id = id_;
    context.attempt = std::max(1, attempt);
    return context;
  }

  void step_main(const std::string& repo, Mode mode) {
    const Step snapshot = step_snapshot(repo);
    const std::string env = env_;
    const TargetEntry* target = inventory_->target(repo, env);
    if (target == nullptr) {
      fail_step(repo, "no deploy target for " + repo + " in env " + env + " in this orgd's config");
      return;
    }
    if (mode == Mode::rollback) {
      roll_back(repo, *target);
      return;
    }
    const StepPolicy& policy = target->policy;
    DeployContext context = context_for(repo, snapshot.attempts());
    std::optional<DeployProgress> progress;
    if (mode == Mode::resume) {
      if (is_set(snapshot.healthy_at())) {
        succeed(repo, false);
        return;
      }
      if (is_set(snapshot.deployed_at())) {
        gate(repo, policy);
        return;
      }
      if (!snapshot.handle().empty()) {
        progress = DeployProgress{DeployStatus::running, snapshot.handle(), {}};
      } else {
        auto recovered = target->target->recover(context);
        if (recovered) {
          progress = recovered.value();
          log_->info("deploy {}: {} was in flight; provider says {}", id_, repo,
                     progress->status == DeployStatus::running     ? "still running"
                     : progress->status == DeployStatus::succeeded ? "succeeded"
                                                                   : "failed");
        } else if (recovered.error().code == ErrorCode::not_found) {
          log_->info("deploy {}: {} was in flight; provider has no record of it, starting it",
                     id_, repo);
        } else {
          progress = DeployProgress{DeployStatus::failed, {}, recovered.error().message};
        }
      }
    }
    for (;;) {
      if (should_stop()) return;
      const auto attempt_started = std::chrono::steady_clock::now();
      if (!progress) {
        auto started = target->target->start(context, log_sink(repo, context.attempt));
        progress = started ? started.value()
                           : DeployProgress{DeployStatus::failed, {}, started.error().message};
      }
      if (progress->status == DeployStatus::running && !progress->handle.empty()) {
        const std::string handle = progress->handle;
        commit([&](Record& r) { return mark_handle(r, repo, handle); }, {});
      }
      int poll_errors = 0;
      while (progress->status == DeployStatus::running) {
        if (should_stop()) return;
        if (std::chrono::steady_clock::now() - attempt_started > policy.step_timeout) {
          progress = DeployProgress{DeployStatus::failed, progress->handle,
                                    "timed out after " + format_duration(policy.step_timeout)};
          break;
        }
        pause(shared_->options.poll_interval);
        if (should_stop()) return;
        auto polled = target->target->poll(context, progress->handle);
        if (polled) {
          poll_errors = 0;
          progress = polled.value();
        } else if (++poll_errors >= kMaxPollErrors) {
          progress = DeployProgress{DeployStatus::failed, progress->handle,
                                    "poll failed: " + polled.error().message};
        }
      }
      if (should_stop()) return;
      if (progress->status == DeployStatus::succeeded) {
        if (!policy.health_gate.enabled) {
          succeed(repo, false);
          return;
        }
        const auto now = shared_->clock.now();
        commit([&](Record& r) { return mark_deployed(r, repo, now); }, {});
        gate(repo, policy);
        return;
      }
      const std::string error = progress->error.empty() ? "deploy failed" : progress->error;
      const int attempts = step_snapshot(repo).attempts();
      if (attempts <= policy.retries && !cancel_requested()) {
        shared_->step_retries->inc();
        if (!commit([&](Record& r) { return mark_retrying(r, repo, error); },
                    {{"step_retrying", repo}})) {
          return;
        }
        const auto backoff = policy.retry_backoff * (1 << std::min(attempts - 1, 10));
        pause(std::chrono::duration_cast<milliseconds>(backoff));
        context.attempt = attempts + 1;
        progress.reset();
        continue;
      }
      fail_step(repo, error);
      return;
    }
  }

  // The health gate: the repo's services report ok, newer than the step's end, held for
  // `soak`; otherwise the step fails at `timeout`.
  void gate(const std::string& repo, const StepPolicy& policy) {
    const HealthGateConfig& config = policy.health_gate;
    if (!config.enabled) {
      succeed(repo, false);
      return;
    }
    const Step snapshot = step_snapshot(repo);
    const Clock::time_point since = from_timestamp(snapshot.deployed_at());
    const auto deadline = std::chrono::steady_clock::now() + config.timeout;
    std::optional<std::chrono::steady_clock::time_point> healthy_since;
    std::string detail = "no report yet";
    for (;;) {
      if (should_stop()) return;
      GateCheck check;
      {
        std::lock_guard lock(mutex_);
        if (abandoned_) return;
        check = shared_->health.check(repo, since);
      }
      const auto now = std::chrono::steady_clock::now();
      if (check.no_services) break;
      if (check.healthy) {
        if (!healthy_since) healthy_since = now;
        if (now - *healthy_since >= config.soak) break;
      } else {
        healthy_since.reset();
        detail = check.detail;
      }
      if (now >= deadline) {
        fail_step(repo, fmt::format("health gate: not healthy within {}: {}",
                                    format_duration(config.timeout), detail));
        return;
      }
      pause(shared_->options.poll_interval);
    }
    succeed(repo, true);
  }

  void succeed(const std::string& repo, bool gated) {
    const auto now = shared_->clock.now();
    std::vector<std::pair<std::string, std::string>> events;
    if (gated) events.emplace_back("health_gate_passed", repo);
    events.emplace_back("step_succeeded", repo);
    commit(
        [&](Record& r) {
          mark_deployed(r, repo, now);  // no-op when the gate already recorded it
          if (gated) mark_healthy(r, repo, now);
          return mark_succeeded(r, repo, now);
        },
        events);
  }

  void fail_step(const std::string& repo, const std::string& error) {
    const auto now = shared_->clock.now();
    log_->warn("deploy {}: {} failed: {}", id_, repo, error);
    commit([&](Record& r) { return mark_failed(r, repo, error, now); }, {{"step_failed", repo}});
  }

  void roll_back(const std::string& repo, const TargetEntry& target) {
    if (!target.target->can_rollback()) {
      commit(
          [&](Record& r) {
            return mark_rollback_failed(
                r, repo, "provider " + target.provider + " cannot roll this target back");
          },
          {{"step_failed", repo}});
      return;
    }
    const Step snapshot = step_snapshot(repo);
    DeployContext context = context_for(repo, snapshot.attempts());
    auto result = target.target->rollback(context, log_sink(repo, context.attempt));
    if (should_stop()) return;
    if (result && result.value().status == DeployStatus::succeeded) {
      const auto now = shared_->clock.now();
      commit([&](Record& r) { return mark_rolled_back(r, repo, now); }, {{"rolled_back", repo}});
      return;
    }
    const std::string error =
        !result ? result.error().message
                : (result.value().error.empty() ? "rollback did not succeed" : result.value().error);
    log_->warn("deploy {}: rolling {} back failed: {}", id_, repo, error);
    commit([&](Record& r) { return mark_rollback_failed(r, repo, "rollback: " + error); },
           {{"step_failed", repo}});
  }

  std::shared_ptr<Shared> shared_;
  const std::string id_;
  std::uint64_t lease_revision_;  // main thread only
  const bool resumed_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<const Inventory> inventory_;  // set before any step starts
  int parallel_ = 1;
  std::vector<std::string> repos_;                      // main thread only
  std::set<std::string> lost_locks_;                    // main thread only
  std::chrono::steady_clock::time_point next_renewal_;  // main thread only

  mutable std::mutex mutex_;  // guards record_, revision_, lost_, abandoned_; held while publishing
  Record record_;
  std::uint64_t revision_ = 0;
  bool lost_ = false;
  bool abandoned_ = false;
  bool claimed_ = false;  // the record names us as owner
  std::string env_;       // set by load(), then constant

  std::atomic<bool> stopping_{false};
  std::mutex wake_mutex_;  // guards woken_
  std::condition_variable wake_cv_;
  std::condition_variable stop_cv_;
  bool woken_ = false;

  std::mutex threads_mutex_;  // guards steps_, done_steps_, live_threads_, finished_
  std::condition_variable threads_cv_;
  std::map<std::string, std::thread> steps_;
  std::set<std::string> done_steps_;
  int live_threads_ = 0;
  std::atomic<bool> finished_{false};
  std::thread main_;
};

// ---- Orchestrator ------------------------------------------------------------------------------

Orchestrator::Orchestrator(OrchestratorOptions options, std::shared_ptr<const Inventory> inventory,
                           Publisher& publisher, const HealthGateSource& health,
                           MetricsRegistry& metrics, const Clock& clock)
    : options_(options),
      shared_(std::make_shared<Shared>(std::move(options), std::move(inventory), publisher,
                                       health, metrics, clock)) {}

Orchestrator::~Orchestrator() { stop(milliseconds{2000}); }

void Orchestrator::set_inventory(std::shared_ptr<const Inventory> inventory) {
  std::lock_guard lock(shared_->inventory_mutex);
  shared_->inventory = std::move(inventory);
}

Result<Ok> Orchestrator::attach(__jsCtx* js) {
  std::lock_guard lock(attach_mutex_);
  if (attached_.load()) return Ok{};
  if (stopping_.load()) return unavailable("stopping");
  const auto settings = shared_->current_inventory()->settings();
  const int replicas = options_.replicas;
  auto deploys = KvBucket::open(js, {kDeploysBucket, "orgd deploy records",
                                     std::chrono::duration_cast<Duration>(settings.history), 1,
                                     replicas});
  if (!deploys) return deploys.error();
  // A lock belongs to a deploy, not to the process running it: when the runner dies its lease
  // expires and the deploy is resumed with its locks held, so no other deploy slips in. A lock
  // expires with its deploy: one whose deploy has finished or is gone is taken over.
  auto locks = KvBucket::open(js, {kLocksBucket, "orgd deploy locks: one deploy per repo+env",
                                   Duration{0}, 1, replicas});
  if (!locks) return locks.error();
  auto leases = KvBucket::open(js, {kLeasesBucket, "orgd leases: scheduler and deploy runners",
                                    settings.lease_ttl, 1, replicas});
  if (!leases) return leases.error();
  shared_->store_owner = std::make_unique<DeployStore>(
      std::move(deploys.value()), std::move(locks.value()), std::move(leases.value()));
  shared_->store.store(shared_->store_owner.get());
  attached_.store(true);
  load_recent_summaries();
  scheduler_thread_ = std::thread([this] { scheduler_loop(); });
  return Ok{};
}

void Orchestrator::stop(std::chrono::milliseconds budget) {
  if (stopping_.exchange(true)) return;
  const auto deadline = std::chrono::steady_clock::now() + budget;
  {
    std::lock_guard lock(wake_mutex_);
    wake_ = true;
  }
  wake_cv_.notify_all();
  if (scheduler_thread_.joinable()) scheduler_thread_.join();
  std::map<std::string, std::shared_ptr<DeployRun>> runs;
  {
    std::lock_guard lock(runs_mutex_);
    runs.swap(runs_);
  }
  for (auto& [id, run] : runs) run->request_stop();
  for (auto& [id, run] : runs) run->join(deadline);
  if (DeployStore* store = shared_->kv(); store != nullptr && scheduler_.load()) {
    store->release_lease(kSchedulerLease, options_.instance_id);
  }
  scheduler_.store(false);
}

void Orchestrator::scheduler_loop() {
  auto& log = shared_->log;
  while (!stopping_.load()) {
    const auto ttl = shared_->current_inventory()->settings().lease_ttl;
    const auto interval = std::max(milliseconds{100}, ttl / 3);
    {
      std::unique_lock lock(wake_mutex_);
      wake_cv_.wait_for(lock, interval, [&] { return wake_; });
      wake_ = false;
    }
    if (stopping_.load()) break;
    reap();
    DeployStore* store = shared_->kv();
    if (!scheduler_.load()) {
      auto acquired = store->acquire_lease(kSchedulerLease, options_.instance_id);
      if (acquired) {
        scheduler_revision_ = acquired.value();
        scheduler_.store(true);
        follower_.store(false);
        log->info("this orgd ({}) now runs the deploy scheduler", options_.instance_id);
      } else {
        follower_.store(acquired.error().code == ErrorCode::conflict);
      }
    } else {
      auto renewed =
          store->renew_lease(kSchedulerLease, options_.instance_id, scheduler_revision_);
      if (renewed) {
        scheduler_revision_ = renewed.value();
      } else if (renewed.error().code == ErrorCode::conflict) {
        auto again = store->acquire_lease(kSchedulerLease, options_.instance_id);
        if (again) {
          scheduler_revision_ = again.value();
        } else {
          scheduler_.store(false);
          follower_.store(again.error().code == ErrorCode::conflict);
          log->info("the deploy scheduler lease moved to another orgd");
        }
      }
    }
    if (scheduler_.load()) sweep();
  }
}

void Orchestrator::sweep() {
  DeployStore* store = shared_->kv();
  auto active = store->active_ids();
  if (!active) {
    shared_->kv_errors->inc();
    return;
  }
  for (const auto& id : active.value()) {
    if (stopping_.load()) return;
    {
      std::lock_guard lock(runs_mutex_);
      if (runs_.count(id) != 0) continue;
    }
    auto holder = store->lease_holder(DeployStore::deploy_lease(id));
    if (!holder || holder.value()) continue;
    auto lease = store->acquire_lease(DeployStore::deploy_lease(id), options_.instance_id);
    if (!lease) continue;
    start_run(id, lease.value(), true);
  }
}

void Orchestrator::reap() {
  std::vector<std::shared_ptr<DeployRun>> done;
  {
    std::lock_guard lock(runs_mutex_);
    for (auto it = runs_.begin(); it != runs_.end();) {
      if (it->second->finished()) {
        done.push_back(it->second);
        it = runs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + milliseconds{1000};
  for (auto& run : done) run->join(deadline);
}

void Orchestrator::start_run(const std::string& deploy_id, std::uint64_t lease_revision,
                             bool resumed) {
  auto run = std::make_shared<DeployRun>(shared_, deploy_id, lease_revision, resumed);
  {
    std::lock_guard lock(runs_mutex_);
    if (stopping_.load()) return;
    runs_[deploy_id] = run;
  }
  run->start();
}

std::size_t Orchestrator::running() const {
  std::lock_guard lock(runs_mutex_);
  std::size_t n = 0;
  for (const auto& [id, run] : runs_) n += run->finished() ? 0 : 1;
  return n;
}

Result<v1::DeployAccepted> Orchestrator::accepted_of(const std::string& deploy_id,
                                                     bool duplicate) {
  // A concurrent request with the same id may still be writing its record: wait a little.
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto loaded = shared_->kv()->load(deploy_id);
    if (!loaded) return loaded.error();
    if (loaded.value()) {
      v1::DeployAccepted accepted;
      accepted.set_deploy_id(deploy_id);
      accepted.set_duplicate(duplicate);
      accepted.set_env(loaded.value()->record.env());
      set_waves(accepted.mutable_waves(), waves_of(loaded.value()->record));
      return accepted;
    }
    std::this_thread::sleep_for(milliseconds{100});
  }
  return not_found("deploy " + deploy_id + " has no record");
}

Result<v1::DeployAccepted> Orchestrator::deploy(const v1::DeployRequest& request,
                                                const std::string& fallback_request_id) {
  if (!attached_.load() || stopping_.load()) {
    return unavailable("deploys are not available yet: the KV buckets are not open");
  }
  const auto inventory = shared_->current_inventory();
  if (request.env().empty()) return invalid_argument("env is required");
  if (!valid_name(request.env())) {
    return invalid_argument("invalid env '" + request.env() + "' (expected [A-Za-z0-9_-]+)");
  }
  // The ref reaches providers (ORGD_REF of exec commands) and logs: printable text only.
  auto printable = [](const std::string& text) {
    return std::none_of(text.begin(), text.end(),
                        [](unsigned char c) { return c < 0x20 || c == 0x7f; });
  };
  if (request.ref().size() > 256 || !printable(request.ref())) {
    return invalid_argument("invalid ref (at most 256 printable characters)");
  }
  if (request.request_id().size() > 256) {
    return invalid_argument("requestId is longer than 256 bytes");
  }
  if (request.reason().size() > 1024 || !printable(request.reason())) {
    return invalid_argument("invalid reason (at most 1,024 printable characters, one line)");
  }
  if (request.all() == (request.repos_size() > 0)) {
    return invalid_argument("name the repos to deploy, or set all: true (not both)");
  }
  auto policy = request.on_failure().empty() ? parse_failure_policy(inventory->settings().on_failure)
                                             : parse_failure_policy(request.on_failure());
  if (!policy) {
    return invalid_argument("invalid onFailure '" + request.on_failure() +
                            "' (expected stop or rollback)");
  }
  std::vector<std::string> repos;
  if (request.all()) {
    repos = inventory->repos_in(request.env());
    if (repos.empty()) {
      return invalid_argument("no repo has a deploy target in env '" + request.env() + "'");
    }
  } else {
    for (const auto& repo : request.repos()) {
      if (!inventory->has_repo(repo)) return not_found("unknown repo '" + repo + "'");
      if (inventory->target(repo, request.env()) == nullptr) {
        return invalid_argument("repo '" + repo + "' has no deploy target in env '" +
                                request.env() + "'");
      }
      repos.push_back(repo);
    }
  }
  auto waves = inventory->planner().plan(repos);
  if (!waves) return waves.error();
  if (request.dry_run()) {
    v1::DeployAccepted accepted;
    accepted.set_dry_run(true);
    accepted.set_env(request.env());
    set_waves(accepted.mutable_waves(), waves.value());
    return accepted;
  }

  DeployStore* store = shared_->kv();
  const std::string request_id =
      request.request_id().empty() ? fallback_request_id : request.request_id();
  if (!request_id.empty()) {
    auto existing = store->deploy_of_request(request_id);
    if (!existing) return existing.error();
    if (existing.value()) {
      auto accepted = accepted_of(*existing.value(), true);
      if (accepted) {
        shared_->deploys_duplicate->inc();
        return accepted;
      }
      if (accepted.error().code != ErrorCode::not_found) return accepted.error();
      // Claimed by a deploy whose orgd died before writing it: the request is free again.
      (void)store->release_request(request_id);
    }
  }
  const std::string id = new_deploy_id(shared_->clock.now());
  if (!request_id.empty()) {
    if (auto claimed = store->claim_request(request_id, id); !claimed) {
      if (claimed.error().code != ErrorCode::conflict) return claimed.error();
      auto other = store->deploy_of_request(request_id);
      if (other && other.value()) {
        shared_->deploys_duplicate->inc();
        return accepted_of(*other.value(), true);
      }
      return conflict("request " + request_id + " is being accepted by another orgd");
    }
  }
  auto give_back_request = [&] {
    if (!request_id.empty()) (void)store->release_request(request_id);
  };
  std::vector<std::string> all_repos;
  for (const auto& wave : waves.value()) all_repos.insert(all_repos.end(), wave.begin(), wave.end());
  if (auto locked = store->acquire_locks(all_repos, request.env(), id); !locked) {
    give_back_request();
    if (locked.error().code == ErrorCode::conflict) shared_->deploys_conflict->inc();
    return locked.error();
  }
  // Active before the record exists: a crash in between leaves an id the sweep drops, never a
  // record nobody resumes.
  if (auto active = store->mark_active(id); !active) {
    store->release_locks(all_repos, request.env(), id);
    give_back_request();
    return active.error();
  }
  Record record = new_record(id, waves.value(), request, *policy, shared_->clock.now());
  auto created = store->create(record);
  if (!created) {
    store->release_locks(all_repos, request.env(), id);
    (void)store->clear_active(id);
    give_back_request();
    return created.error();
  }
  shared_->deploys_accepted->inc();
  shared_->publish_event(record, "accepted", nullptr, id + ".accepted");
  shared_->log->info("deploy {} to {} accepted: {} repos in {} waves{}", id, request.env(),
                     all_repos.size(), waves.value().size(),
                     request.reason().empty() ? "" : " (" + request.reason() + ")");
  auto lease = store->acquire_lease(DeployStore::deploy_lease(id), options_.instance_id);
  if (lease) {
    start_run(id, lease.value(), false);
  } else {
    // The scheduler's sweep picks it up.
    shared_->log->warn("deploy {}: no runner lease yet ({})", id, lease.error().message);
  }
  v1::DeployAccepted accepted;
  accepted.set_deploy_id(id);
  accepted.set_env(request.env());
  set_waves(accepted.mutable_waves(), waves.value());
  return accepted;
}

Result<v1::DeployRecord> Orchestrator::get(const v1::DeployGetRequest& request) {
  if (!attached_.load()) return unavailable("deploys are not available yet");
  if (!valid_name(request.deploy_id())) return invalid_argument("invalid deployId");
  auto loaded = shared_->kv()->load(request.deploy_id());
  if (!loaded) return loaded.error();
  if (!loaded.value()) return not_found("no deploy " + request.deploy_id());
  return std::move(loaded.value()->record);
}

Result<v1::DeployList> Orchestrator::list(const v1::DeployListRequest& request) {
  if (!attached_.load()) return unavailable("deploys are not available yet");
  if (request.limit() < 0) return invalid_argument("limit must not be negative");
  const int limit = request.limit() == 0 ? kDefaultListLimit
                                         : std::min(request.limit(), kMaxListLimit);
  auto ids = shared_->kv()->deploy_ids();
  if (!ids) return ids.error();
  v1::DeployList list;
  int examined = 0;
  for (auto it = ids.value().rbegin(); it != ids.value().rend(); ++it) {
    // Filters could otherwise read the whole history, one KV get per deploy.
    if (list.deploys_size() >= limit || ++examined > kMaxListScan) break;
    auto loaded = shared_->kv()->load(*it);
    if (!loaded) return loaded.error();
    if (!loaded.value()) continue;
    const Record& record = loaded.value()->record;
    if (!request.env().empty() && record.env() != request.env()) continue;
    if (!request.repo().empty() && find_step(record, request.repo()) == nullptr) continue;
    *list.add_deploys() = record;
  }
  return list;
}

Result<v1::DeployRecord> Orchestrator::cancel(const v1::DeployCancelRequest& request) {
  if (!attached_.load()) return unavailable("deploys are not available yet");
  if (!valid_name(request.deploy_id())) return invalid_argument("invalid deployId");
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto loaded = shared_->kv()->load(request.deploy_id());
    if (!loaded) return loaded.error();
    if (!loaded.value()) return not_found("no deploy " + request.deploy_id());
    Record record = loaded.value()->record;
    if (is_terminal(record.state())) {
      return conflict("deploy " + request.deploy_id() + " already finished (" +
                      Record::State_Name(record.state()) + ")");
    }
    if (record.cancel_requested()) return record;
    request_cancel(record, request.reason(), shared_->clock.now());
    auto written = shared_->kv()->update(record, loaded.value()->revision);
    if (written) {
      shared_->log->info("deploy {}: cancel requested ({})", request.deploy_id(),
                         record.cancel_reason());
      std::shared_ptr<DeployRun> run;
      {
        std::lock_guard lock(runs_mutex_);
        if (auto it = runs_.find(request.deploy_id()); it != runs_.end()) run = it->second;
      }
      if (run) run->wake();
      return record;
    }
    if (written.error().code != ErrorCode::conflict) return written.error();
  }
  return unavailable("deploy " + request.deploy_id() + " changes too fast to cancel; try again");
}

void Orchestrator::observe(const v1::DeployEvent& event) {
  if (!event.has_step() || event.step().repo().empty() || event.env().empty()) return;
  const auto key = std::make_pair(event.step().repo(), event.env());
  std::lock_guard lock(summaries_mutex_);
  auto& summary = summaries_[key];
  // Deploy ids sort by creation time: an event of an older deploy does not replace a newer one.
  if (!summary.deploy_id().empty() && summary.deploy_id() > event.deploy_id()) return;
  summary.set_deploy_id(event.deploy_id());
  summary.set_state(summary_state(event.step().state()));
  summary.set_ref(event.ref());
  if (is_set(event.step().finished_at())) {
    *summary.mutable_finished_at() = event.step().finished_at();
  } else {
    summary.clear_finished_at();
  }
}

void Orchestrator::load_recent_summaries() {
  // The newest deploys, until every repo+env seen has its last deploy (bounded).
  auto ids = shared_->kv()->deploy_ids();
  if (!ids) return;
  int loaded_count = 0;
  for (auto it = ids.value().rbegin(); it != ids.value().rend() && loaded_count < 100;
       ++it, ++loaded_count) {
    auto loaded = shared_->kv()->load(*it);
    if (!loaded || !loaded.value()) continue;
    const Record& record = loaded.value()->record;
    for (const Step& step : record.steps()) {
      v1::DeployEvent event;
      event.set_deploy_id(record.deploy_id());
      event.set_env(record.env());
      event.set_ref(record.ref());
      *event.mutable_step() = step;
      observe(event);
    }
  }
}

void Orchestrator::fill_status(v1::RepoStatus& repo) const {
  std::lock_guard lock(summaries_mutex_);
  for (auto it = summaries_.lower_bound({repo.name(), std::string{}});
       it != summaries_.end() && it->first.first == repo.name(); ++it) {
    (*repo.mutable_deploys())[it->first.second] = it->second;
  }
}

void Orchestrator::fill_status(v1::OrgStatus& org) const {
  for (auto& repo : *org.mutable_repos()) fill_status(repo);
}

Result<bool> Orchestrator::request_known(const std::string& request_id) {
  DeployStore* store = shared_->kv();
  if (!attached_.load() || store == nullptr) return unavailable("the KV buckets are not open");
  auto existing = store->deploy_of_request(request_id);
  if (!existing) return existing.error();
  return existing.value().has_value();
}

}  // namespace orgd::deploy
