#include "daemon/deploy/record_committer.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "daemon/core/timestamps.hpp"

namespace orgd::deploy {

using std::chrono::milliseconds;

RecordCommitter::RecordCommitter(std::shared_ptr<OrchestratorContext> shared, std::string id,
                                 StopFlag& stop, std::function<void()> on_written)
    : shared_(std::move(shared)),
      id_(std::move(id)),
      stop_(stop),
      on_written_(std::move(on_written)),
      log_(shared_->log) {}

bool RecordCommitter::load() {
  for (int attempt = 0; !stop_.requested(); ++attempt) {
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
    stop_.pause(milliseconds{std::min(2000, 100 << std::min(attempt, 4))});
  }
  return false;
}

bool RecordCommitter::commit(const std::function<bool(Record&)>& change,
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
      on_written_();
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
      log_->warn("deploy {}: cannot write the record ({}); retrying", id_, written.error().message);
    }
    lock.unlock();
    if (stop_.requested()) return false;
    stop_.pause(milliseconds{std::min(2000, 100 << std::min(attempt, 4))});
    lock.lock();
  }
}

void RecordCommitter::refresh() {
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

void RecordCommitter::mark_lost() {
  std::lock_guard lock(mutex_);
  lost_ = true;
}

bool RecordCommitter::lost() const {
  std::lock_guard lock(mutex_);
  return lost_ || abandoned_;
}

bool RecordCommitter::while_live(const std::function<void(const Record&)>& f) const {
  std::lock_guard lock(mutex_);
  if (abandoned_) return false;
  f(record_);
  return true;
}

Record RecordCommitter::record() const {
  std::lock_guard lock(mutex_);
  return record_;
}

Step RecordCommitter::step(const std::string& repo) const {
  std::lock_guard lock(mutex_);
  const Step* step = find_step(record_, repo);
  return step == nullptr ? Step{} : *step;
}

bool RecordCommitter::cancel_requested() const {
  std::lock_guard lock(mutex_);
  return record_.cancel_requested();
}

DeployContext RecordCommitter::context_for(const std::string& repo, int attempt) const {
  std::lock_guard lock(mutex_);
  DeployContext context;
  context.repo = repo;
  context.env = record_.env();
  context.ref = record_.ref();
  context.deploy_id = id_;
  context.attempt = std::max(1, attempt);
  if (const Step* step = find_step(record_, repo)) {
    context.handle = step->handle();
    context.phases_passed = step->phases_passed();
    if (step->has_previous()) {
      context.previous =
          PreviousDeploy{step->previous().deploy_id(), step->previous().ref(),
                         step->previous().handle()};
    }
  }
  return context;
}

}  // namespace orgd::deploy
