#include "daemon/deploy/scheduler.hpp"

#include <algorithm>
#include <vector>

#include "daemon/core/timestamps.hpp"
#include "daemon/deploy/deploy_index.hpp"
#include "daemon/deploy/deploy_run.hpp"

namespace orgd::deploy {

namespace {

using std::chrono::milliseconds;

// Deploy records re-read at a deploy event's prompt, waiting at once (more are dropped and
// counted; the scheduler tick's catch-up from the recent index covers them).
constexpr std::size_t kMaxPendingRefreshes = 256;
// What deploy events prompt (re-reading records, a look at the queue) runs at most once per this:
// a deploy publishes an event per step change, and anyone on the bus can publish more, so
// without it each event costs a KV read of a record that can be 1 MB.
constexpr milliseconds kPromptPace{250};

}  // namespace

Scheduler::Scheduler(std::shared_ptr<OrchestratorContext> shared, LastDeploys& last_deploys,
                     MetricsRegistry& metrics)
    : shared_(std::move(shared)), last_deploys_(last_deploys), lease_(shared_) {
  queue_started_ = &metrics.counter("orgd_deploys_dequeued_total",
                                    "Queued deploys started once their locks were free");
}

Scheduler::~Scheduler() {
  if (thread_.joinable()) thread_.join();
}

void Scheduler::start() {
  thread_ = std::thread([this] { loop(); });
}

void Scheduler::stop(std::chrono::steady_clock::time_point deadline) {
  wake();
  if (thread_.joinable()) thread_.join();
  std::map<std::string, std::shared_ptr<DeployRun>> runs;
  {
    std::lock_guard lock(runs_mutex_);
    runs.swap(runs_);
  }
  for (auto& [id, run] : runs) run->request_stop();
  for (auto& [id, run] : runs) run->join(deadline);
  lease_.release();
}

bool Scheduler::request_refresh(const std::string& deploy_id, bool finished) {
  bool added = false;
  {
    std::lock_guard lock(wake_mutex_);
    if (refresh_ids_.size() < kMaxPendingRefreshes || refresh_ids_.count(deploy_id)) {
      refresh_ids_.insert(deploy_id);
      added = true;
    }
    if (finished) queue_prompted_ = true;
  }
  wake_cv_.notify_all();
  return added;
}

void Scheduler::begin_accepting(const std::string& deploy_id) {
  std::lock_guard lock(runs_mutex_);
  accepting_.insert(deploy_id);
}

void Scheduler::end_accepting(const std::string& deploy_id) {
  std::lock_guard lock(runs_mutex_);
  accepting_.erase(deploy_id);
}

void Scheduler::wake_run(const std::string& deploy_id) {
  std::shared_ptr<DeployRun> run;
  {
    std::lock_guard lock(runs_mutex_);
    if (auto it = runs_.find(deploy_id); it != runs_.end()) run = it->second;
  }
  if (run) run->wake();
}

void Scheduler::loop() {
  // On this thread, not in attach(): reading the last deploys is KV work.
  last_deploys_.load_recent();
  auto next_tick = std::chrono::steady_clock::now();
  // Prompted work runs at once when the last such pass is kPromptPace old, else when it is: a
  // flood of events gets four passes a second.
  auto next_prompt = next_tick;
  while (!shared_->stopping.load()) {
    const auto ttl = shared_->current_inventory()->settings().lease_ttl;
    const auto interval = std::max(milliseconds{100}, ttl / 3);
    bool tick = false;
    bool prompted = false;
    bool queue_prompted = false;
    std::set<std::string> ids;
    {
      std::unique_lock lock(wake_mutex_);
      for (;;) {
        const bool prompt_waiting = !refresh_ids_.empty() || queue_prompted_;
        const auto deadline = prompt_waiting ? std::min(next_tick, next_prompt) : next_tick;
        if (wake_ || std::chrono::steady_clock::now() >= deadline) break;
        wake_cv_.wait_until(lock, deadline);
      }
      const auto now = std::chrono::steady_clock::now();
      tick = wake_ || now >= next_tick;
      wake_ = false;
      prompted = (!refresh_ids_.empty() || queue_prompted_) && now >= next_prompt;
      if (prompted) {
        ids.swap(refresh_ids_);
        queue_prompted = queue_prompted_;
        queue_prompted_ = false;
      }
    }
    if (shared_->stopping.load()) break;
    // Prompted work does not wait for the tick, and does not move it: the leases below are
    // renewed on time however many events arrive.
    if (prompted) {
      next_prompt = std::chrono::steady_clock::now() + kPromptPace;
      last_deploys_.refresh(ids);
      // A finished deploy frees locks that queued deploys may be waiting for.
      if (queue_prompted && lease_.held()) run_queue();
    }
    if (!tick) continue;
    next_tick = std::chrono::steady_clock::now() + interval;
    this->tick();
  }
}

void Scheduler::tick() {
  reap();
  lease_.keep(*shared_->kv());
  if (lease_.held()) {
    sweep();
    run_queue();
  }
  last_deploys_.catch_up();
}

void Scheduler::wake() {
  {
    std::lock_guard lock(wake_mutex_);
    wake_ = true;
  }
  wake_cv_.notify_all();
}

void Scheduler::sweep() {
  DeployStore* store = shared_->kv();
  auto active = store->active_ids();
  if (!active) {
    shared_->kv_errors->inc();
    return;
  }
  for (const auto& id : active.value()) {
    if (shared_->stopping.load()) return;
    {
      std::lock_guard lock(runs_mutex_);
      if (runs_.count(id) != 0 || accepting_.count(id) != 0) continue;
    }
    auto holder = store->lease_holder(DeployStore::deploy_lease(id));
    if (!holder || holder.value()) continue;
    auto lease = store->acquire_lease(DeployStore::deploy_lease(id), shared_->options.instance_id);
    if (!lease) continue;
    start_run(id, lease.value(), true);
  }
}

void Scheduler::reap() {
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

void Scheduler::start_run(const std::string& deploy_id, std::uint64_t lease_revision,
                          bool resumed) {
  auto run = std::make_shared<DeployRun>(shared_, deploy_id, lease_revision, resumed);
  {
    std::lock_guard lock(runs_mutex_);
    if (shared_->stopping.load()) return;
    // One run per deploy here: a second would replace the first in runs_, unjoined. (The lease
    // does not tell them apart: both are this orgd's.)
    if (runs_.count(deploy_id) != 0) return;
    runs_[deploy_id] = run;
  }
  run->start();
}

std::size_t Scheduler::running() const {
  std::lock_guard lock(runs_mutex_);
  std::size_t n = 0;
  for (const auto& [id, run] : runs_) n += run->finished() ? 0 : 1;
  return n;
}

void Scheduler::run_queue() {
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
    if (shared_->stopping.load() || !lease_.held()) return;
    if (waits(entry)) {
      hold(entry);
      continue;
    }
    const std::string& id = entry.deploy_id();
    auto loaded = store->load_head(id, 0);  // the header: what starting it changes
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
    auto lease = store->acquire_lease(DeployStore::deploy_lease(id), shared_->options.instance_id);
    if (lease) start_run(id, lease.value(), false);  // else the sweep picks it up
    hold(entry);
  }
}

}  // namespace orgd::deploy
