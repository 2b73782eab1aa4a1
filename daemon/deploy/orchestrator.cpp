#include "daemon/deploy/orchestrator.hpp"

#include <fmt/format.h>
#include <google/protobuf/struct.pb.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <deque>
#include <functional>
#include <set>

#include "daemon/core/duration.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/timestamps.hpp"
#include "daemon/deploy/deploy_index.hpp"
#include "daemon/deploy/deploy_state.hpp"
#include "daemon/events/codec.hpp"

namespace orgd::deploy {

namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;

constexpr std::size_t kMaxLogLinesPerStep = 1000;
constexpr int kDefaultListLimit = 20;
constexpr int kMaxListLimit = 500;
// Deploy records re-read at a deploy event's prompt, waiting at once (more are dropped and
// counted; the scheduler tick's catch-up from the recent index covers them).
constexpr std::size_t kMaxPendingRefreshes = 256;
// What a summary keeps of a record's ref (deploy requests allow 256 bytes).
constexpr std::size_t kMaxSummaryRef = 256;
// How long accepting a deploy may take between claiming its request id (or queue entry) and
// writing its record (a lock per repo in between); a claim older than this without a record
// was left by an orgd that died.
constexpr std::chrono::seconds kAcceptGrace{30};
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

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
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

// A fixed set of threads that run every deploy's decisions, record writes and timers (each
// DeployRun on its own strand). Waiting is done by asio timers, so a step polling its provider,
// backing off before a retry or waiting for its health gate holds no thread; work that blocks
// (a KV call, bounded by the JetStream timeout) holds one for its duration. Held by shared_ptr
// from its own threads, so threads left behind by a bounded stop() still find it.
class DeployExecutor : public std::enable_shared_from_this<DeployExecutor> {
 public:
  static std::shared_ptr<DeployExecutor> create(int threads, Gauge& gauge) {
    std::shared_ptr<DeployExecutor> executor{new DeployExecutor()};
    const int n = std::max(1, threads);
    for (int i = 0; i < n; ++i) {
      executor->threads_.emplace_back([executor] { executor->work(); });
    }
    executor->live_ = n;
    gauge.set(n);
    return executor;
  }

  asio::io_context& context() { return io_; }
  bool stopped() const { return stopped_.load(); }

  // A thread still inside a handler at `deadline` (a KV call that NATS does not answer) is left
  // to finish on its own, counted in `abandoned`. Otherwise the handlers still queued (runs that
  // have ended: cancelled timers) run here once, so none keeps its run, and with it this
  // executor, alive.
  void stop(std::chrono::steady_clock::time_point deadline, Counter& abandoned) {
    stopped_.store(true);
    work_.reset();
    io_.stop();
    std::unique_lock lock(mutex_);
    const bool all_done = cv_.wait_until(lock, deadline, [&] { return live_ == 0; });
    if (!all_done) abandoned.inc(live_);
    lock.unlock();
    for (auto& thread : threads_) {
      if (!thread.joinable()) continue;
      if (all_done) {
        thread.join();
      } else {
        thread.detach();
      }
    }
    if (all_done) {
      io_.restart();
      io_.poll();
    }
  }

 private:
  DeployExecutor() : work_(asio::make_work_guard(io_)) {}

  void work() {
    for (;;) {
      try {
        io_.run();
        break;
      } catch (const std::exception& e) {
        logging::get("deploy")->error("deploy executor: a handler threw: {}", e.what());
      }
    }
    std::lock_guard lock(mutex_);
    --live_;
    cv_.notify_all();
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;  // guards live_
  std::condition_variable cv_;
  int live_ = 0;
  std::atomic<bool> stopped_{false};
};

// Provider calls run here, off the executor: a call blocks for as long as the provider takes (an
// exec command runs to completion inside start()). At most `max_threads` threads, started on
// demand and kept until stop(): an exec command dies with the thread that forked it
// (PR_SET_PDEATHSIG), so a thread must outlive its calls. The caller waits on a timer, not on the
// call; a call past its deadline keeps its thread until it returns (DeployRun counts it as hung),
// so hung providers take at most `max_threads` threads and later calls queue.
class ProviderCalls : public std::enable_shared_from_this<ProviderCalls> {
 public:
  ProviderCalls(std::size_t max_threads, Gauge& gauge)
      : max_threads_(std::max<std::size_t>(1, max_threads)), gauge_(gauge) {}

  void submit(std::function<void()> job) {
    std::lock_guard lock(mutex_);
    if (stopping_) return;  // the caller's deadline answers it
    queue_.push_back(std::move(job));
    if (idle_ == 0 && threads_.size() < max_threads_) {
      ++live_;
      threads_.emplace_back([self = shared_from_this()] { self->work(); });
      gauge_.set(static_cast<double>(threads_.size()));
    }
    cv_.notify_one();
  }

  // Queued calls are dropped; threads still in a call at `deadline` are left to it.
  void stop(std::chrono::steady_clock::time_point deadline, Counter& abandoned) {
    std::unique_lock lock(mutex_);
    stopping_ = true;
    queue_.clear();
    cv_.notify_all();
    const bool all_done = cv_.wait_until(lock, deadline, [&] { return live_ == 0; });
    if (!all_done) abandoned.inc(live_);
    std::vector<std::thread> threads;
    threads.swap(threads_);
    lock.unlock();
    for (auto& thread : threads) {
      if (all_done) {
        thread.join();
      } else {
        thread.detach();
      }
    }
  }

 private:
  void work() {
    std::unique_lock lock(mutex_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      --idle_;
      if (stopping_) break;
      auto job = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
    --live_;
    cv_.notify_all();
  }

  const std::size_t max_threads_;
  Gauge& gauge_;
  std::mutex mutex_;  // guards everything below
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  int live_ = 0;
  int idle_ = 0;
  bool stopping_ = false;
};

}  // namespace

class DeployRun;

// What the orchestrator and its runs share. Runs hold it by shared_ptr, so a run whose provider
// call outlives stop() still has a valid store; `Publisher` and `HealthGateSource` belong to the
// daemon and are only touched by runs that are not abandoned.
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
      deploys_finished[state] = &metrics.counter(
          "orgd_deploys_finished_total", "Deploys finished, by final state", {{"state", state}});
    }
    steps_started = &metrics.counter("orgd_deploy_steps_started_total", "Deploy steps started");
    step_retries = &metrics.counter("orgd_deploy_step_retries_total", "Deploy step retries");
    steps_interrupted = &metrics.counter(
        "orgd_deploy_steps_interrupted_total",
        "Deploy step attempts found interrupted by an orgd stop or crash, run again");
    commit_conflicts = &metrics.counter(
        "orgd_deploy_commit_conflicts_total",
        "Deploy record writes that lost a compare-and-set and were merged and retried");
    kv_errors = &metrics.counter("orgd_deploy_kv_errors_total",
                                 "Deploy KV operations that failed (NATS unavailable)");
    active_gauge = &metrics.gauge("orgd_deploys_running", "Deploys this orgd is running");
    for (const char* op : {"start", "poll", "recover", "rollback"}) {
      provider_timeouts[op] = &metrics.counter(
          "orgd_provider_call_timeouts_total",
          "Provider calls that did not return within their deadline", {{"op", op}});
    }
    provider_hung = &metrics.gauge(
        "orgd_provider_calls_hung",
        "Provider calls past their deadline that have not returned yet (each holds a thread)");
    threads_abandoned =
        &metrics.counter("orgd_deploy_threads_abandoned_total",
                         "Deploy executor and provider threads left busy when orgd stopped");
    executor = DeployExecutor::create(
        options.executor_threads,
        metrics.gauge("orgd_deploy_executor_threads", "Threads running deploys and steps"));
    provider_calls = std::make_shared<ProviderCalls>(
        static_cast<std::size_t>(std::max(1, options.provider_threads)),
        metrics.gauge("orgd_provider_threads", "Threads making provider calls"));
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
  std::mutex inventory_mutex;  // guards inventory
  std::shared_ptr<const Inventory> inventory;
  std::atomic<DeployStore*> store{nullptr};
  std::unique_ptr<DeployStore> store_owner;
  std::vector<std::unique_ptr<DeployStore>> retired_stores;  // of earlier connections
  std::shared_ptr<spdlog::logger> log;
  std::shared_ptr<DeployExecutor> executor;
  std::shared_ptr<ProviderCalls> provider_calls;

  std::mutex slots_mutex;  // guards active, waiting_for_slot
  int active = 0;
  std::deque<std::weak_ptr<DeployRun>> waiting_for_slot;

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

// One deploy run by this orgd, on its own strand of the deploy executor: decide() applies
// deploy_state's next_actions, each step in flight is a chain of provider calls (on the provider
// threads, under a deadline) and timers (polls, retry backoff, the health gate), and every change
// is written through commit(), revision-checked against KV.
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
        log_(shared_->log),
        strand_(asio::make_strand(shared_->executor->context())),
        lease_strand_(asio::make_strand(shared_->executor->context())),
        tick_(strand_) {}

  void start() {
    post([self = shared_from_this()] { self->begin(); });
  }

  void request_stop() {
    {
      std::lock_guard lock(wake_mutex_);
      stopping_.store(true);
    }
    stop_cv_.notify_all();
    post([self = shared_from_this()] { self->end_stopped(); });
  }

  // Something changed (a commit, a cancel request): decide again, soon.
  void wake() {
    if (wake_posted_.exchange(true)) return;
    post([self = shared_from_this()] {
      self->wake_posted_ = false;
      self->decide();
    });
  }

  // Called by Shared::release_slot when this run's turn has come.
  void slot_granted() {
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

  bool finished() const { return finished_.load(); }

  // Waits until the run has ended, at most until `deadline`; a run still busy then (its strand
  // inside a KV call that NATS does not answer) is abandoned: it never touches the daemon again.
  void join(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(done_mutex_);
    if (done_cv_.wait_until(lock, deadline, [&] { return finished_.load(); })) return;
    // Not under mutex_: a commit holds it for as long as its KV call takes, and this must not
    // wait for that.
    abandoned_.store(true);
  }

 private:
  // A step in flight: what its provider calls and timers carry from one to the next.
  struct StepRun {
    explicit StepRun(asio::strand<asio::io_context::executor_type>& strand) : timer(strand) {}
    std::string repo;
    const TargetEntry* target = nullptr;
    StepPolicy policy;
    DeployContext context;
    std::optional<DeployProgress> progress;
    std::string committed_handle;
    std::chrono::steady_clock::time_point attempt_started;
    int poll_errors = 0;
    asio::steady_timer timer;  // polls, retry backoff, gate checks
    // The health gate.
    Clock::time_point gate_since;
    std::chrono::steady_clock::time_point gate_deadline;
    std::optional<std::chrono::steady_clock::time_point> healthy_since;
    std::string gate_detail;
    std::string waiting_for;  // as last written to the record
  };
  using StepPtr = std::shared_ptr<StepRun>;

  template <class F>
  void post(F&& f) {
    asio::post(strand_, std::forward<F>(f));
  }

  // ---- the run -------------------------------------------------------------------------------

  void begin() {
    if (should_stop()) {
      end_stopped();
      return;
    }
    next_renewal_ = std::chrono::steady_clock::now() + renew_interval();
    if (!shared_->take_slot(shared_from_this())) {
      // In line behind deploy.max_active others: the lease is renewed by the tick meanwhile.
      waiting_for_slot_ = true;
      arm_tick();
      return;
    }
    has_slot_ = true;
    after_slot();
  }

  void after_slot() {
    DeployStore* store = shared_->kv();
    if (!load()) {
      store->release_lease(DeployStore::deploy_lease(id_), owner());
      end();
      return;
    }
    repos_.clear();
    for (const Step& step : record_.steps()) repos_.push_back(step.repo());
    if (is_terminal(record_.state())) {
      finalize(/*checked=*/true);
      end();
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
      end_stopped();
      return;
    }
    running_ = true;
    next_renewal_ = std::chrono::steady_clock::now() + renew_interval();
    decide();
  }

  // One pass of what the old main loop did per wake-up: renew, decide, start what is due.
  void decide() {
    if (ended_) return;
    if (should_stop()) {
      end_stopped();
      return;
    }
    if (waiting_for_slot_) {
      renew_in_background(/*with_refresh=*/false);
      arm_tick();
      return;
    }
    if (!running_) return;
    renew_in_background(/*with_refresh=*/true);
    if (lost()) {
      end();
      return;
    }
    // A cancel ends waits at once: gate checks and retry backoffs run now and see it.
    if (cancel_requested()) {
      for (auto& [repo, step] : steps_) step->timer.cancel();
    }
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
      finish(*next.finish, now);
      return;
    }
    if (next.rollback && steps_.count(*next.rollback) == 0) {
      begin_step(*next.rollback, Mode::rollback);
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
      commit(
          [&](Record& r) {
            for (const auto& repo : unlocked) {
              mark_started(r, repo, "", now);
              mark_failed(r, repo,
                          "the lock of " + repo + "/" + env_ + " is held by another deploy", now);
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
          begin_step(repo, Mode::fresh);
        }
      }
    }
    // Steps in flight without a runner here: a resumed deploy's, re-checked with the provider.
    std::vector<std::string> orphans;
    {
      std::lock_guard lock(mutex_);
      for (const Step& step : record_.steps()) {
        if (step.state() == Step::running) orphans.push_back(step.repo());
      }
    }
    for (const auto& repo : orphans) {
      if (steps_.count(repo) == 0) begin_step(repo, Mode::resume);
    }
    arm_tick();
  }

  void finish(Record::State state, Clock::time_point now) {
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
      end();
      return;
    }
    end_stopped();
  }

  // Wakes decide() at the next lease renewal, and at least every second.
  void arm_tick() {
    if (ended_) return;
    // A renewal in progress wakes decide() itself when it is done.
    const auto now = std::chrono::steady_clock::now();
    const auto until = renewing_.load() ? now + milliseconds{1000}
                                        : std::clamp(next_renewal_.load(), now + milliseconds{10},
                                                     now + milliseconds{1000});
    tick_.expires_at(until);
    tick_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted) return;
      self->decide();
    });
  }

  // Stopped, not finished: hand the deploy over at once instead of after the lease expires.
  void end_stopped() {
    if (ended_) return;
    if (!lost()) shared_->kv()->release_lease(DeployStore::deploy_lease(id_), owner());
    end();
  }

  // The run is over here (finished, stopped or lost): timers end, the slot goes to the next.
  void end() {
    if (ended_) return;
    ended_ = true;
    tick_.cancel();
    for (auto& [repo, step] : steps_) step->timer.cancel();
    for (auto& call : calls_) {
      if (auto pending = call.lock()) pending->timer.cancel();
    }
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
  void finalize(bool checked = false) {
    DeployStore* store = shared_->kv();
    if (checked) store->release_locks(repos_, env_, id_);
    (void)store->clear_active(id_);
    store->release_lease(DeployStore::deploy_lease(id_), owner());
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
    return std::max(milliseconds{100}, std::chrono::duration_cast<milliseconds>(ttl) / 3);
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

  // Every lease_ttl/3: the lease, and (`with_refresh`) a look at the record for a cancel
  // request written by another replica. On a strand of its own: while NATS is unreachable these
  // KV calls wait out their timeout, and the steps' polls and gate checks must not wait behind
  // them. Once done, decide() runs again and sees a lost lease.
  void renew_in_background(bool with_refresh) {
    if (std::chrono::steady_clock::now() < next_renewal_.load() || renewing_.exchange(true)) {
      return;
    }
    asio::post(lease_strand_, [self = shared_from_this(), with_refresh] {
      if (!self->should_stop()) {
        self->renew_lease_only();
        if (with_refresh && !self->lost()) self->refresh();
      }
      self->renewing_ = false;
      self->wake();
    });
  }

  void refresh() {
    auto loaded = shared_->kv()->load(id_);
    if (!loaded || !loaded.value()) return;
    std::lock_guard lock(mutex_);
    // Not newer than ours: a commit wrote since this was read.
    if (loaded.value()->revision <= revision_) return;
    if (loaded.value()->record.owner() != owner()) {
      log_->warn("deploy {}: now run by {}; stopping here", id_, loaded.value()->record.owner());
      lost_ = true;
      return;
    }
    merge_external(record_, loaded.value()->record);
    revision_ = loaded.value()->revision;
  }

  // Sleeps up to `d`, returning early when the run stops. Only while NATS is unreachable (KV
  // retries); everything else waits on timers.
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

  // ---- provider calls ----------------------------------------------------------------------

  using Outcome = std::function<void(Result<DeployProgress>)>;

  // A provider call in flight: its deadline, and whether it was answered (on the strand only).
  struct PendingCall {
    explicit PendingCall(asio::strand<asio::io_context::executor_type>& strand) : timer(strand) {}
    asio::steady_timer timer;
    bool settled = false;
    bool hung = false;
  };

  // Runs `call` on the provider threads; `done` runs on this run's strand with its result, or
  // with "<op> did not return within <limit>" once `limit` has passed. A call past its deadline
  // is left to return on its own (counted in orgd_provider_calls_hung until it does); what it
  // returns then is dropped.
  void call_provider(const std::string& op, Duration limit,
                     std::function<Result<DeployProgress>()> call, Outcome done) {
    auto pending = std::make_shared<PendingCall>(strand_);
    std::erase_if(calls_, [](const std::weak_ptr<PendingCall>& call) { return call.expired(); });
    calls_.push_back(pending);
    auto self = shared_from_this();
    pending->timer.expires_after(limit);
    pending->timer.async_wait([self, pending, op, limit,
                               done](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted || pending->settled) return;
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
  static Duration query_limit(const StepPolicy& policy) {
    return std::min<Duration>(policy.step_timeout, std::chrono::minutes{1});
  }

  // Start and rollback: the step timeout, or longer when the provider ends its calls itself.
  static Duration action_limit(const TargetEntry& target) {
    const auto own = target.target->max_call_duration();
    return own ? std::max<Duration>(target.policy.step_timeout, *own) : target.policy.step_timeout;
  }

  // ---- steps -------------------------------------------------------------------------------

  void begin_step(const std::string& repo, Mode mode) {
    auto step = std::make_shared<StepRun>(strand_);
    step->repo = repo;
    steps_[repo] = step;
    step->target = inventory_->target(repo, env_);
    if (step->target == nullptr) {
      fail_step(repo,
                "no deploy target for " + repo + " in env " + env_ + " in this orgd's config");
      step_done(step);
      return;
    }
    step->policy = step->target->policy;
    if (mode == Mode::rollback) {
      roll_back(step);
      return;
    }
    const Step snapshot = step_snapshot(repo);
    step->context = context_for(repo, snapshot.attempts());
    if (mode == Mode::fresh) {
      start_attempt(step);
      return;
    }
    if (is_set(snapshot.healthy_at())) {
      succeed(repo, false);
      step_done(step);
      return;
    }
    if (is_set(snapshot.deployed_at())) {
      gate_begin(step);
      return;
    }
    step->attempt_started = std::chrono::steady_clock::now();
    if (!snapshot.handle().empty()) {
      step->committed_handle = snapshot.handle();
      on_progress(step, DeployProgress{DeployStatus::running, snapshot.handle(), {}});
      return;
    }
    recover(step);
  }

  void recover(const StepPtr& step) {
    if (should_stop()) return step_done(step);
    auto target = step->target->target;
    const DeployContext context = step->context;
    call_provider(
        "recover", query_limit(step->policy),
        [target, context] { return target->recover(context); },
        [self = shared_from_this(), step](Result<DeployProgress> r) {
          self->on_recovered(step, std::move(r));
        });
  }

  void step_done(const StepPtr& step) {
    auto it = steps_.find(step->repo);
    if (it != steps_.end() && it->second == step) steps_.erase(it);
    wake();
  }

  void on_recovered(const StepPtr& step, Result<DeployProgress> recovered) {
    if (should_stop()) return step_done(step);
    const std::string& repo = step->repo;
    if (recovered && recovered.value().status == DeployStatus::interrupted) {
      // Ended with orgd, not by the deploy: a new attempt, not one of the step's retries.
      const std::string why =
          recovered.value().error.empty() ? "interrupted" : recovered.value().error;
      if (!commit([&](Record& r) { return mark_interrupted(r, repo, why); },
                  {{"step_interrupted", repo}})) {
        return step_done(step);
      }
      shared_->steps_interrupted->inc();
      step->context.attempt = step_snapshot(repo).attempts();
      log_->info(
          "deploy {}: {} was in flight when its orgd stopped ({}); running it again as "
          "attempt {}",
          id_, repo, why, step->context.attempt);
      start_attempt(step);
      return;
    }
    if (recovered) {
      const DeployProgress progress = recovered.value();
      log_->info("deploy {}: {} was in flight; provider says {}", id_, repo,
                 progress.status == DeployStatus::running     ? "still running"
                 : progress.status == DeployStatus::succeeded ? "succeeded"
                                                              : "failed");
      on_progress(step, progress);
      return;
    }
    if (recovered.error().code == ErrorCode::not_found) {
      log_->info("deploy {}: {} was in flight; provider has no record of it, starting it", id_,
                 repo);
      start_attempt(step);
      return;
    }
    // The provider could not answer (its API unreachable right after the crash, a call past
    // its deadline): that says nothing about the deploy, so ask again, as a poll would.
    if (++step->poll_errors < kMaxPollErrors) {
      log_->warn("deploy {}: cannot ask the provider about {} yet ({}); asking again", id_, repo,
                 recovered.error().message);
      step->timer.expires_after(shared_->options.poll_interval);
      step->timer.async_wait([self = shared_from_this(), step](const boost::system::error_code&) {
        self->recover(step);
      });
      return;
    }
    on_progress(
        step,
        DeployProgress{DeployStatus::failed, {}, "recover failed: " + recovered.error().message});
  }

  void start_attempt(const StepPtr& step) {
    if (should_stop()) return step_done(step);
    if (cancel_requested()) {
      // Cancelled before this attempt began (backing off before a retry, or a resumed step's
      // new attempt): it does not start.
      cancel_step(step, "cancelled before attempt " + std::to_string(step->context.attempt));
      return;
    }
    step->attempt_started = std::chrono::steady_clock::now();
    step->poll_errors = 0;
    step->progress.reset();
    auto target = step->target->target;
    const DeployContext context = step->context;
    LogSink sink = log_sink(step->repo, context.attempt);
    call_provider(
        "start", action_limit(*step->target),
        [target, context, sink] { return target->start(context, sink); },
        [self = shared_from_this(), step](Result<DeployProgress> r) {
          self->on_progress(
              step, r ? r.value() : DeployProgress{DeployStatus::failed, {}, r.error().message});
        });
  }

  void on_progress(const StepPtr& step, DeployProgress progress) {
    if (should_stop()) return step_done(step);
    const std::string& repo = step->repo;
    if (progress.status == DeployStatus::running && !progress.handle.empty() &&
        progress.handle != step->committed_handle) {
      const std::string handle = progress.handle;
      commit([&](Record& r) { return mark_handle(r, repo, handle); }, {});
      step->committed_handle = handle;
    }
    step->progress = progress;
    if (progress.status == DeployStatus::running) {
      if (std::chrono::steady_clock::now() - step->attempt_started > step->policy.step_timeout) {
        step->progress =
            DeployProgress{DeployStatus::failed, progress.handle,
                           "timed out after " + format_duration(step->policy.step_timeout)};
        attempt_failed(step);
        return;
      }
      step->timer.expires_after(shared_->options.poll_interval);
      step->timer.async_wait([self = shared_from_this(), step](const boost::system::error_code&) {
        self->poll(step);
      });
      return;
    }
    if (progress.status == DeployStatus::succeeded) {
      if (!step->policy.health_gate.enabled) {
        succeed(repo, false);
        return step_done(step);
      }
      const auto now = shared_->clock.now();
      commit([&](Record& r) { return mark_deployed(r, repo, now); }, {});
      gate_begin(step);
      return;
    }
    attempt_failed(step);
  }

  void poll(const StepPtr& step) {
    if (should_stop()) return step_done(step);
    auto target = step->target->target;
    const DeployContext context = step->context;
    const std::string handle = step->progress ? step->progress->handle : std::string{};
    call_provider(
        "poll", query_limit(step->policy),
        [target, context, handle] { return target->poll(context, handle); },
        [self = shared_from_this(), step, handle](Result<DeployProgress> polled) {
          if (polled) {
            step->poll_errors = 0;
            self->on_progress(step, polled.value());
          } else if (++step->poll_errors >= kMaxPollErrors) {
            self->on_progress(step, DeployProgress{DeployStatus::failed, handle,
                                                   "poll failed: " + polled.error().message});
          } else {
            self->on_progress(step, DeployProgress{DeployStatus::running, handle, {}});
          }
        });
  }

  void attempt_failed(const StepPtr& step) {
    const std::string& repo = step->repo;
    const std::string error =
        !step->progress || step->progress->error.empty() ? "deploy failed" : step->progress->error;
    const Step current = step_snapshot(repo);
    const int used = retries_used(current);
    if (used < step->policy.retries && !cancel_requested()) {
      shared_->step_retries->inc();
      if (!commit([&](Record& r) { return mark_retrying(r, repo, error); },
                  {{"step_retrying", repo}})) {
        return step_done(step);
      }
      const auto backoff = step->policy.retry_backoff * (1 << std::min(used, 10));
      step->context.attempt = current.attempts() + 1;
      step->timer.expires_after(backoff);
      step->timer.async_wait([self = shared_from_this(), step](const boost::system::error_code&) {
        self->start_attempt(step);
      });
      return;
    }
    fail_step(repo, error);
    step_done(step);
  }

  // The health gate: the repo's services report ok, newer than the step's end, held for
  // `soak`; otherwise the step fails at `timeout`. Checked every poll interval on a timer; what
  // it waits for is written to the step (waiting_for) and published when it changes.
  void gate_begin(const StepPtr& step) {
    const HealthGateConfig& config = step->policy.health_gate;
    if (!config.enabled) {
      succeed(step->repo, false);
      return step_done(step);
    }
    const Step snapshot = step_snapshot(step->repo);
    step->gate_since = from_timestamp(snapshot.deployed_at());
    step->gate_deadline = std::chrono::steady_clock::now() + config.timeout;
    step->healthy_since.reset();
    step->gate_detail = "no report yet";
    step->waiting_for = snapshot.waiting_for();
    gate_check(step);
  }

  void gate_check(const StepPtr& step) {
    if (should_stop()) return step_done(step);
    const std::string& repo = step->repo;
    const HealthGateConfig& config = step->policy.health_gate;
    if (cancel_requested()) {
      cancel_step(step,
                  "cancelled while waiting for " +
                      (step->waiting_for.empty() ? std::string{"health"} : step->waiting_for));
      return;
    }
    GateCheck check;
    {
      std::lock_guard lock(mutex_);
      if (abandoned_) return;
      check = shared_->health.check(repo, step->gate_since);
    }
    const auto now = std::chrono::steady_clock::now();
    if (check.no_services) {
      succeed(repo, true);
      return step_done(step);
    }
    if (check.healthy) {
      if (!step->healthy_since) step->healthy_since = now;
      if (now - *step->healthy_since >= config.soak) {
        succeed(repo, true);
        return step_done(step);
      }
      set_waiting(step, "health: ok, holding for " + format_duration(config.soak));
    } else {
      step->healthy_since.reset();
      step->gate_detail = check.detail;
      std::vector<std::string> names;
      for (const auto& service : check.unhealthy) names.push_back(repo + "/" + service);
      set_waiting(step, "health: " + (names.empty() ? (check.detail.empty() ? repo : check.detail)
                                                    : join_names(names)));
    }
    if (now >= step->gate_deadline) {
      fail_step(repo, fmt::format("health gate: not healthy within {}: {}",
                                  format_duration(config.timeout), step->gate_detail));
      return step_done(step);
    }
    step->timer.expires_after(shared_->options.poll_interval);
    step->timer.async_wait([self = shared_from_this(), step](const boost::system::error_code&) {
      self->gate_check(step);
    });
  }

  void set_waiting(const StepPtr& step, const std::string& what) {
    if (what == step->waiting_for) return;
    const std::string& repo = step->repo;
    if (commit([&](Record& r) { return mark_waiting(r, repo, what); },
               {{"health_gate_waiting", repo}})) {
      step->waiting_for = what;
    }
  }

  void cancel_step(const StepPtr& step, const std::string& why) {
    const auto now = shared_->clock.now();
    const std::string& repo = step->repo;
    log_->info("deploy {}: {} {}", id_, repo, why);
    commit([&](Record& r) { return mark_cancelled(r, repo, why, now); },
           {{"step_cancelled", repo}});
    step_done(step);
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

  void rollback_failed(const std::string& repo, const std::string& why) {
    log_->warn("deploy {}: {} is not rolled back: {}", id_, repo, why);
    commit([&](Record& r) { return mark_rollback_failed(r, repo, why); },
           {{"rollback_failed", repo}});
  }

  void roll_back(const StepPtr& step) {
    const TargetEntry& target = *step->target;
    if (!target.target->can_rollback()) {
      rollback_failed(step->repo, "provider " + target.provider + " cannot roll this target back");
      return step_done(step);
    }
    const Step snapshot = step_snapshot(step->repo);
    const DeployContext context = context_for(step->repo, snapshot.attempts());
    auto provider = target.target;
    LogSink sink = log_sink(step->repo, context.attempt);
    call_provider(
        "rollback", action_limit(target),
        [provider, context, sink] { return provider->rollback(context, sink); },
        [self = shared_from_this(), step](Result<DeployProgress> result) {
          if (self->should_stop()) return self->step_done(step);
          const std::string& repo = step->repo;
          if (result && result.value().status == DeployStatus::succeeded) {
            const auto now = self->shared_->clock.now();
            self->commit([&](Record& r) { return mark_rolled_back(r, repo, now); },
                         {{"rolled_back", repo}});
            return self->step_done(step);
          }
          const std::string error = !result
                                        ? result.error().message
                                        : (result.value().error.empty() ? "rollback did not succeed"
                                                                        : result.value().error);
          self->rollback_failed(repo, "rollback: " + error);
          self->step_done(step);
        });
  }

  std::shared_ptr<Shared> shared_;
  const std::string id_;
  std::uint64_t lease_revision_;  // lease strand only (after begin())
  const bool resumed_;
  std::shared_ptr<spdlog::logger> log_;
  // Everything not guarded below is used on strand_ only.
  asio::strand<asio::io_context::executor_type> strand_;
  asio::strand<asio::io_context::executor_type> lease_strand_;  // lease renewal and refresh
  asio::steady_timer tick_;
  std::shared_ptr<const Inventory> inventory_;  // set before any step starts
  int parallel_ = 1;
  std::vector<std::string> repos_;
  std::set<std::string> lost_locks_;
  std::atomic<std::chrono::steady_clock::time_point> next_renewal_{};
  std::atomic<bool> renewing_{false};
  std::map<std::string, StepPtr> steps_;           // steps in flight here, by repo
  std::vector<std::weak_ptr<PendingCall>> calls_;  // provider calls in flight, for end()
  bool waiting_for_slot_ = false;
  bool has_slot_ = false;
  bool running_ = false;  // loaded and marked running: decide() may act
  bool ended_ = false;

  mutable std::mutex mutex_;  // guards record_, revision_, lost_, abandoned_; held while publishing
  Record record_;
  std::uint64_t revision_ = 0;
  bool lost_ = false;
  std::atomic<bool> abandoned_{false};  // also read under mutex_ before publishing
  bool claimed_ = false;                // the record names us as owner
  std::string env_;                     // set by load(), then constant

  std::atomic<bool> stopping_{false};
  std::atomic<bool> wake_posted_{false};
  std::mutex wake_mutex_;  // pairs with stop_cv_ for pause()
  std::condition_variable stop_cv_;

  std::mutex done_mutex_;  // pairs with done_cv_ for join()
  std::condition_variable done_cv_;
  std::atomic<bool> finished_{false};
};

bool Orchestrator::Shared::take_slot(const std::shared_ptr<DeployRun>& run) {
  std::lock_guard lock(slots_mutex);
  const int max_active = std::max(1, current_inventory()->settings().max_active);
  if (active < max_active) {
    ++active;
    active_gauge->set(active);
    return true;
  }
  waiting_for_slot.push_back(run);
  return false;
}

void Orchestrator::Shared::release_slot() {
  std::shared_ptr<DeployRun> next;
  {
    std::lock_guard lock(slots_mutex);
    --active;
    while (!waiting_for_slot.empty()) {
      next = waiting_for_slot.front().lock();
      waiting_for_slot.pop_front();
      if (next && !next->finished()) {
        ++active;
        break;
      }
      next.reset();
    }
    active_gauge->set(active);
  }
  if (next) next->slot_granted();
}

// ---- Orchestrator ------------------------------------------------------------------------------

Orchestrator::Orchestrator(OrchestratorOptions options, std::shared_ptr<const Inventory> inventory,
                           Publisher& publisher, const HealthGateSource& health,
                           MetricsRegistry& metrics, const Clock& clock)
    : options_(options),
      shared_(std::make_shared<Shared>(std::move(options), std::move(inventory), publisher, health,
                                       metrics, clock)) {
  events_ignored_ = &metrics.counter(
      "orgd_deploy_events_ignored_total",
      "Deploy events that named no configured repo+env or no valid deploy id (not re-read)");
  refreshes_dropped_ = &metrics.counter(
      "orgd_deploy_summary_refreshes_dropped_total",
      "Deploy records not re-read at an event's prompt because too many were waiting");
  deploys_queued_ = &metrics.counter("orgd_deploys_queued_total",
                                     "Deploy commands queued behind a held repo+env lock");
  queue_full_ = &metrics.counter("orgd_deploys_queue_full_total",
                                 "Deploy commands refused because the deploy queue was full");
  queue_started_ = &metrics.counter("orgd_deploys_dequeued_total",
                                    "Queued deploys started once their locks were free");
}

Orchestrator::~Orchestrator() { stop(milliseconds{2000}); }

void Orchestrator::set_inventory(std::shared_ptr<const Inventory> inventory) {
  std::lock_guard lock(shared_->inventory_mutex);
  shared_->inventory = std::move(inventory);
}

Result<Ok> Orchestrator::attach(__jsCtx* js) {
  std::lock_guard lock(attach_mutex_);
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
  // Every connect re-creates the buckets a server may have lost; the store's handles keep
  // reaching them while the JetStream context is the same. A new context (a new connection)
  // gets a new store; runs may still hold the old one, so it is kept.
  if (attached_.load() && js == attached_js_) return Ok{};
  if (shared_->store_owner) shared_->retired_stores.push_back(std::move(shared_->store_owner));
  shared_->store_owner = std::make_unique<DeployStore>(
      std::move(deploys.value()), std::move(locks.value()), std::move(leases.value()));
  shared_->store.store(shared_->store_owner.get());
  attached_js_ = js;
  if (attached_.exchange(true)) return Ok{};
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
  shared_->stop_threads(deadline);
}

void Orchestrator::scheduler_loop() {
  auto& log = shared_->log;
  // On this thread, not in attach(): reading the last deploys is KV work.
  load_recent_summaries();
  auto next_tick = std::chrono::steady_clock::now();
  while (!stopping_.load()) {
    const auto ttl = shared_->current_inventory()->settings().lease_ttl;
    const auto interval = std::max(milliseconds{100}, ttl / 3);
    bool tick = false;
    {
      std::unique_lock lock(wake_mutex_);
      wake_cv_.wait_until(lock, next_tick, [&] { return wake_ || !refresh_ids_.empty(); });
      tick = wake_ || std::chrono::steady_clock::now() >= next_tick;
      wake_ = false;
    }
    if (stopping_.load()) break;
    // Re-reads asked for by deploy events do not wait for the tick, and do not move it: the
    // leases below are renewed on time however many events arrive.
    refresh_requested_summaries();
    if (!tick) continue;
    next_tick = std::chrono::steady_clock::now() + interval;
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
    if (scheduler_.load()) {
      sweep();
      run_queue();
    }
    catch_up_summaries();
  }
}

void Orchestrator::wake_scheduler() {
  {
    std::lock_guard lock(wake_mutex_);
    wake_ = true;
  }
  wake_cv_.notify_all();
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
      if (runs_.count(id) != 0 || accepting_.count(id) != 0) continue;
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
    // One run per deploy here: a second would replace the first in runs_, unjoined. (The lease
    // does not tell them apart: both are this orgd's.)
    if (runs_.count(deploy_id) != 0) return;
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
  auto loaded = shared_->kv()->load(deploy_id);
  if (!loaded) return loaded.error();
  if (!loaded.value()) return not_found("deploy " + deploy_id + " has no record");
  v1::DeployAccepted accepted;
  accepted.set_deploy_id(deploy_id);
  accepted.set_duplicate(duplicate);
  accepted.set_env(loaded.value()->record.env());
  set_waves(accepted.mutable_waves(), waves_of(loaded.value()->record));
  return accepted;
}

Result<v1::DeployAccepted> Orchestrator::deploy(const v1::DeployRequest& request,
                                                const std::string& fallback_request_id,
                                                WhenLocked when_locked) {
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
    auto existing = store->request_claim(request_id);
    if (!existing) return existing.error();
    if (existing.value()) {
      auto accepted = accepted_of(existing.value()->value, true);
      if (accepted) {
        shared_->deploys_duplicate->inc();
        return accepted;
      }
      if (accepted.error().code != ErrorCode::not_found) return accepted.error();
      // No record yet: being accepted right now (taking its locks), or claimed by an orgd that
      // died before writing it, after which the request is free again. Nobody waits here.
      if (std::chrono::system_clock::now() - existing.value()->created < kAcceptGrace) {
        return unavailable("request " + request_id + " is being accepted right now; try again");
      }
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
      return unavailable("request " + request_id + " is being accepted by another orgd");
    }
  }
  auto give_back_request = [&] {
    if (!request_id.empty()) (void)store->release_request(request_id);
  };
  std::vector<std::string> all_repos;
  for (const auto& wave : waves.value()) all_repos.insert(all_repos.end(), wave.begin(), wave.end());
  // Deploys queued for one of these repos go first: a request does not overtake them, even
  // when the lock happens to be free between two scheduler passes.
  DeployQueueStore queue(store->deploys());
  auto queued = queue.read();
  if (!queued) {
    give_back_request();
    return queued.error();
  }
  std::optional<Error> blocked;
  if (queued_for(queued.value().queue, all_repos, request.env())) {
    blocked =
        conflict(fmt::format("{} in {} has deploys queued before this one",
                             all_repos.size() == 1 ? all_repos.front() : "a repo", request.env()));
  } else if (auto locked = store->acquire_locks(all_repos, request.env(), id); !locked) {
    if (locked.error().code != ErrorCode::conflict) {
      give_back_request();
      return locked.error();
    }
    blocked = locked.error();
  }
  if (blocked) {
    if (when_locked == WhenLocked::queue) {
      auto accepted = enqueue(new_record(id, waves.value(), request, *policy, shared_->clock.now()),
                              all_repos, blocked->message);
      if (!accepted) give_back_request();
      return accepted;
    }
    give_back_request();
    shared_->deploys_conflict->inc();
    return *blocked;
  }
  // Active before the record exists: a crash in between leaves an id the sweep drops, never a
  // record nobody resumes. Until its run starts below, this orgd's own sweep leaves it alone.
  {
    std::lock_guard lock(runs_mutex_);
    accepting_.insert(id);
  }
  struct Accepted {
    Orchestrator& self;
    const std::string& id;
    ~Accepted() {
      std::lock_guard lock(self.runs_mutex_);
      self.accepting_.erase(id);
    }
  } accepting{*this, id};
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
  if (auto indexed = RecentDeploys(store->deploys())
                         .add(RecentDeploys::entry_of(id, request.env(), all_repos));
      !indexed) {
    // The deploy runs and deploy.get finds it; only deploy.list will not show it.
    shared_->kv_errors->inc();
    shared_->log->warn("deploy {}: not added to the recent index: {}", id, indexed.error().message);
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
  // The recent index, not a listing of the bucket: that would read every key of its history.
  auto index = RecentDeploys(shared_->kv()->deploys()).read();
  if (!index) return index.error();
  const auto& entries = index.value().entries();
  v1::DeployList list;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (list.deploys_size() >= limit) break;
    // What the entry says decides without reading the record when it can.
    if (!request.env().empty() && !it->env().empty() && it->env() != request.env()) continue;
    if (!request.repo().empty() && !it->many_repos() && !it->env().empty() &&
        std::find(it->repos().begin(), it->repos().end(), request.repo()) == it->repos().end()) {
      continue;
    }
    auto loaded = shared_->kv()->load(it->deploy_id());
    if (!loaded) return loaded.error();
    if (!loaded.value()) continue;  // expired from the bucket's history
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
    if (!record.queued_behind().empty()) {
      auto cancelled = cancel_queued(record, loaded.value()->revision, request.reason());
      if (cancelled || cancelled.error().code != ErrorCode::conflict) return cancelled;
      continue;  // started (or changed) meanwhile: look again
    }
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

Result<v1::DeployAccepted> Orchestrator::enqueue(Record record,
                                                 const std::vector<std::string>& repos,
                                                 const std::string& reason) {
  DeployStore* store = shared_->kv();
  const std::string id = record.deploy_id();
  const auto now = shared_->clock.now();
  v1::DeployQueue::Entry entry;
  entry.set_deploy_id(id);
  entry.set_env(record.env());
  for (const auto& repo : repos) entry.add_repos(repo);
  *entry.mutable_queued_at() = to_timestamp(now);
  // The queue first, the record next: a crash in between leaves an entry without a record,
  // which the scheduler drops after kAcceptGrace, and a command that is redelivered.
  DeployQueueStore queue(store->deploys());
  if (auto pushed = queue.push(entry); !pushed) {
    if (pushed.error().code == ErrorCode::conflict) queue_full_->inc();
    return pushed.error();
  }
  record.set_queued_behind(reason);
  if (auto created = store->create(record); !created) {
    (void)queue.remove(id);
    return created.error();
  }
  if (auto indexed =
          RecentDeploys(store->deploys()).add(RecentDeploys::entry_of(id, record.env(), repos));
      !indexed) {
    shared_->kv_errors->inc();
    shared_->log->warn("deploy {}: not added to the recent index: {}", id, indexed.error().message);
  }
  deploys_queued_->inc();
  shared_->publish_event(record, "queued", nullptr, id + ".queued", reason);
  shared_->log->info("deploy {} to {} queued: {}", id, record.env(), reason);
  v1::DeployAccepted accepted;
  accepted.set_deploy_id(id);
  accepted.set_env(record.env());
  set_waves(accepted.mutable_waves(), waves_of(record));
  return accepted;
}

Result<v1::DeployRecord> Orchestrator::cancel_queued(Record record, std::uint64_t revision,
                                                     const std::string& reason) {
  // Nobody runs a queued deploy yet: it is finished here, and the queue forgets it.
  const auto now = shared_->clock.now();
  request_cancel(record, reason, now);
  std::vector<std::string> repos;
  for (const Step& step : record.steps()) repos.push_back(step.repo());
  for (const auto& repo : repos) mark_skipped(record, repo, Step::cancelled, now);
  record.clear_queued_behind();
  mark_finished(record, Record::cancelled, now);
  auto written = shared_->kv()->update(record, revision);
  if (!written) return written.error();
  (void)DeployQueueStore(shared_->kv()->deploys()).remove(record.deploy_id());
  shared_->deploys_finished["cancelled"]->inc();
  shared_->publish_event(record, "cancelled", nullptr, record.deploy_id() + ".cancelled");
  shared_->publish_event(record, "finished", nullptr, record.deploy_id() + ".finished");
  shared_->log->info("deploy {}: cancelled while queued ({})", record.deploy_id(),
                     record.cancel_reason());
  return record;
}

void Orchestrator::run_queue() {
  DeployStore* store = shared_->kv();
  DeployQueueStore queue(store->deploys());
  auto read = queue.read();
  if (!read) {
    shared_->kv_errors->inc();
    return;
  }
  // Strictly in order per repo+env: once an entry has to wait, every later entry that shares a
  // repo+env with it waits too, even if its own locks are free.
  std::set<std::pair<std::string, std::string>> waiting;
  auto waits = [&](const v1::DeployQueue::Entry& entry) {
    for (const auto& repo : entry.repos()) {
      if (waiting.count({repo, entry.env()}) != 0) return true;
    }
    return false;
  };
  auto hold = [&](const v1::DeployQueue::Entry& entry) {
    for (const auto& repo : entry.repos()) waiting.insert({repo, entry.env()});
  };
  for (const auto& entry : read.value().queue.entries()) {
    if (stopping_.load() || !scheduler_.load()) return;
    if (waits(entry)) {
      hold(entry);
      continue;
    }
    const std::string& id = entry.deploy_id();
    auto loaded = store->load(id);
    if (!loaded) {
      shared_->kv_errors->inc();
      hold(entry);
      continue;
    }
    if (!loaded.value()) {
      if (shared_->clock.now() - from_timestamp(entry.queued_at()) > kAcceptGrace) {
        shared_->log->warn("deploy {}: queued without a record; dropping it", id);
        (void)queue.remove(id);
      } else {
        hold(entry);  // its record is being written right now
      }
      continue;
    }
    Record record = loaded.value()->record;
    if (is_terminal(record.state()) || record.queued_behind().empty()) {
      (void)queue.remove(id);  // cancelled while queued, or started by a pass that then died
      continue;
    }
    const std::vector<std::string> repos(entry.repos().begin(), entry.repos().end());
    if (auto locked = store->acquire_locks(repos, entry.env(), id); !locked) {
      if (locked.error().code != ErrorCode::conflict) shared_->kv_errors->inc();
      hold(entry);
      continue;
    }
    if (auto active = store->mark_active(id); !active) {
      store->release_locks(repos, entry.env(), id);
      shared_->kv_errors->inc();
      hold(entry);
      continue;
    }
    record.clear_queued_behind();
    if (auto written = store->update(record, loaded.value()->revision); !written) {
      // Cancelled meanwhile (the only change others make to a queued deploy), or NATS trouble:
      // give the locks back; the next pass looks again.
      store->release_locks(repos, entry.env(), id);
      (void)store->clear_active(id);
      hold(entry);
      continue;
    }
    (void)queue.remove(id);
    queue_started_->inc();
    shared_->deploys_accepted->inc();
    shared_->publish_event(record, "accepted", nullptr, id + ".accepted");
    shared_->log->info("deploy {} to {}: its locks are free, starting it", id, entry.env());
    auto lease = store->acquire_lease(DeployStore::deploy_lease(id), options_.instance_id);
    if (lease) start_run(id, lease.value(), false);  // else the sweep picks it up
    hold(entry);
  }
}

void Orchestrator::observe(const v1::DeployEvent& event) {
  // Anyone on the bus can publish a deploy event: it only prompts a re-read of the record it
  // names, and only when it names a configured repo+env, so made-up names cost nothing.
  const auto inventory = shared_->current_inventory();
  // Step events name their repo; the deploy's own (accepted, finished) only the env.
  const bool configured = event.has_step()
                              ? inventory->target(event.step().repo(), event.env()) != nullptr
                              : inventory->has_env(event.env());
  if (!configured || !valid_name(event.deploy_id()) || event.deploy_id().size() > 64) {
    events_ignored_->inc();
    return;
  }
  bool added = false;
  {
    std::lock_guard lock(wake_mutex_);
    if (refresh_ids_.size() < kMaxPendingRefreshes || refresh_ids_.count(event.deploy_id())) {
      refresh_ids_.insert(event.deploy_id());
      added = true;
    }
    // A finished deploy frees locks that queued deploys may be waiting for.
    if (event.kind() == "finished") wake_ = true;
  }
  if (!added) refreshes_dropped_->inc();
  wake_cv_.notify_all();
}

void Orchestrator::apply_to_summaries(const Record& record) {
  if (!record.queued_behind().empty()) return;  // not started: not anyone's last deploy yet
  const auto inventory = shared_->current_inventory();
  std::lock_guard lock(summaries_mutex_);
  for (const Step& step : record.steps()) {
    if (inventory->target(step.repo(), record.env()) == nullptr) continue;
    auto& last = summaries_[{step.repo(), record.env()}];
    // An older deploy does not replace a newer one (ids tell apart deploys of one second only
    // by chance: the creation time decides, then the id).
    const std::pair<std::int64_t, std::int32_t> created{record.created_at().seconds(),
                                                        record.created_at().nanos()};
    if (!last.summary.deploy_id().empty() && last.summary.deploy_id() != record.deploy_id() &&
        (created < last.created ||
         (created == last.created && last.summary.deploy_id() > record.deploy_id()))) {
      continue;
    }
    last.created = created;
    v1::DeploySummary& summary = last.summary;
    summary.set_deploy_id(record.deploy_id());
    summary.set_state(summary_state(step.state()));
    summary.set_ref(record.ref().substr(0, kMaxSummaryRef));
    if (is_set(step.finished_at())) {
      *summary.mutable_finished_at() = step.finished_at();
    } else {
      summary.clear_finished_at();
    }
  }
}

void Orchestrator::refresh_requested_summaries() {
  std::set<std::string> ids;
  {
    std::lock_guard lock(wake_mutex_);
    ids.swap(refresh_ids_);
  }
  for (const auto& id : ids) {
    if (stopping_.load()) return;
    auto loaded = shared_->kv()->load(id);
    if (!loaded) {
      shared_->kv_errors->inc();
      continue;
    }
    if (loaded.value()) apply_to_summaries(loaded.value()->record);
  }
}

void Orchestrator::load_recent_summaries() {
  // Newest first, until every configured repo+env has its last deploy or the index ends.
  RecentDeploys recent(shared_->kv()->deploys());
  auto index = recent.read();
  if (!index) {
    shared_->kv_errors->inc();
    return;
  }
  if (index.value().entries_size() == 0) {
    // Records written before the index existed: index the newest of them once.
    auto ids = shared_->kv()->deploy_ids();
    if (!ids) return;
    v1::DeployIndex seeded;
    const std::size_t skip =
        ids.value().size() > kRecentIndexSize ? ids.value().size() - kRecentIndexSize : 0;
    for (std::size_t i = skip; i < ids.value().size(); ++i) {
      auto* entry = seeded.add_entries();
      entry->set_deploy_id(ids.value()[i]);
      entry->set_many_repos(true);
    }
    if (seeded.entries_size() > 0) (void)recent.seed(seeded);
    index = recent.read();
    if (!index) return;
  }
  const std::size_t targets = shared_->current_inventory()->target_count();
  const auto& entries = index.value().entries();
  if (!entries.empty()) index_seen_ = entries.rbegin()->deploy_id();
  for (auto it = entries.rbegin(); it != entries.rend() && !stopping_.load(); ++it) {
    if (summary_count() >= targets) break;
    auto loaded = shared_->kv()->load(it->deploy_id());
    if (loaded && loaded.value()) apply_to_summaries(loaded.value()->record);
  }
}

void Orchestrator::catch_up_summaries() {
  // Deploys indexed since the last look, and the ones still running: what deploy events would
  // have prompted, for events that were lost or dropped.
  auto index = RecentDeploys(shared_->kv()->deploys()).read();
  if (!index) {
    shared_->kv_errors->inc();
    return;
  }
  const auto& entries = index.value().entries();
  std::set<std::string> ids;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->deploy_id() == index_seen_) break;
    ids.insert(it->deploy_id());
  }
  if (!entries.empty()) index_seen_ = entries.rbegin()->deploy_id();
  {
    std::lock_guard lock(summaries_mutex_);
    for (const auto& [key, last] : summaries_) {
      const auto state = last.summary.state();
      if (state == Record::pending || state == Record::running) {
        ids.insert(last.summary.deploy_id());
      }
    }
  }
  for (const auto& id : ids) {
    if (stopping_.load()) return;
    auto loaded = shared_->kv()->load(id);
    if (loaded && loaded.value()) apply_to_summaries(loaded.value()->record);
  }
}

std::size_t Orchestrator::summary_count() const {
  std::lock_guard lock(summaries_mutex_);
  return summaries_.size();
}

std::size_t Orchestrator::summary_bytes() const {
  std::lock_guard lock(summaries_mutex_);
  std::size_t bytes = 0;
  for (const auto& [key, last] : summaries_) {
    bytes += key.first.size() + key.second.size() + last.summary.ByteSizeLong();
  }
  return bytes;
}

void Orchestrator::fill_status(v1::RepoStatus& repo) const {
  std::lock_guard lock(summaries_mutex_);
  for (auto it = summaries_.lower_bound({repo.name(), std::string{}});
       it != summaries_.end() && it->first.first == repo.name(); ++it) {
    (*repo.mutable_deploys())[it->first.second] = it->second.summary;
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
