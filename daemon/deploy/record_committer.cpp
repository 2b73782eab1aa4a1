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
      stored_ = std::move(*loaded.value());
      stored_.record.Clear();
      index_.clear();
      index_.reserve(static_cast<std::size_t>(record_.steps_size()));
      for (int i = 0; i < record_.steps_size(); ++i) index_.emplace(record_.steps(i).repo(), i);
      split_ = std::find(stored_.step_revisions.begin(), stored_.step_revisions.end(), 0) ==
               stored_.step_revisions.end();
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

const Step* RecordCommitter::find(const std::string& repo) const {
  const auto found = index_.find(repo);
  return found == index_.end() ? nullptr : &record_.steps(found->second);
}

bool RecordCommitter::commit(const std::vector<std::string>& repos,
                             const std::function<bool(Record&)>& change,
                             const std::vector<std::pair<std::string, std::string>>& events) {
  std::unique_lock lock(mutex_);
  for (int attempt = 0;; ++attempt) {
    if (abandoned_ || lost_) return false;
    // The header and the steps `change` may touch, not the whole record: a step's change costs
    // the same in a deploy of 3 repos and of 10,000.
    Record next;
    std::vector<int> picked;                // record_'s index of next.steps(k)
    std::unordered_map<int, int> slot;      // record_'s index -> k
    {
      google::protobuf::RepeatedPtrField<Step> steps;
      steps.Swap(record_.mutable_steps());
      next = record_;
      steps.Swap(record_.mutable_steps());
    }
    for (const auto& repo : repos) {
      const auto found = index_.find(repo);
      if (found == index_.end() || !slot.emplace(found->second, picked.size()).second) continue;
      picked.push_back(found->second);
      *next.add_steps() = record_.steps(found->second);
    }
    if (!change(next)) return false;
    *next.mutable_updated_at() = to_timestamp(shared_->clock.now());
    // The steps that changed, then the header (DeployStore::update writes them in that order).
    // `stored_` moves on with each write that lands, so a retry does not conflict with our own.
    std::vector<int> changed;
    for (std::size_t k = 0; k < picked.size(); ++k) {
      const Step& before = record_.steps(picked[k]);
      const Step& after = next.steps(static_cast<int>(k));
      if (before.SerializeAsString() != after.SerializeAsString()) changed.push_back(picked[k]);
    }
    int conflicted = -1;
    Result<std::uint64_t> written = std::uint64_t{0};
    for (const int i : changed) {
      auto step = shared_->kv()->update_step(id_, i, next.steps(slot.at(i)),
                                             stored_.step_revisions[static_cast<std::size_t>(i)]);
      if (!step) {
        written = step.error();
        conflicted = i;
        break;
      }
      stored_.step_revisions[static_cast<std::size_t>(i)] = step.value();
    }
    if (written && !split_) {
      // A record stored whole gets its steps' keys before its header stops carrying them.
      for (int i = 0; i < record_.steps_size() && written; ++i) {
        if (stored_.step_revisions[static_cast<std::size_t>(i)] != 0) continue;
        const auto k = slot.find(i);
        const Step& step = k != slot.end() ? next.steps(k->second) : record_.steps(i);
        auto created = shared_->kv()->update_step(id_, i, step, 0);
        if (!created) {
          written = created.error();
          conflicted = i;
          break;
        }
        stored_.step_revisions[static_cast<std::size_t>(i)] = created.value();
      }
    }
    if (written) {
      split_ = true;
      written = shared_->kv()->update_header(next, record_.steps_size(), stored_.revision);
      if (written) stored_.revision = written.value();
    }
    if (written) {
      for (std::size_t k = 0; k < picked.size(); ++k) {
        record_.mutable_steps(picked[k])->Swap(next.mutable_steps(static_cast<int>(k)));
      }
      next.clear_steps();
      next.mutable_steps()->Swap(record_.mutable_steps());
      record_.Swap(&next);
      record_.set_total_steps(record_.steps_size());
      claimed_ = true;
      for (const auto& [kind, repo] : events) {
        if (kind.empty()) continue;
        const Step* step = repo.empty() ? nullptr : find(repo);
        shared_->publish_event(record_, kind, step,
                               fmt::format("{}.{}.{}.{}", id_, stored_.revision, kind, repo));
      }
      lock.unlock();
      on_written_();
      return true;
    }
    if (written.error().code == ErrorCode::conflict) {
      shared_->commit_conflicts->inc();
      if (merge_after_conflict(conflicted)) continue;
      if (lost_) return false;
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

bool RecordCommitter::merge_after_conflict(int step) {
  auto loaded = shared_->kv()->load_head(id_, 0);
  if (!loaded || !loaded.value()) return false;
  const Record& theirs = loaded.value()->record;
  // Before our first write the record still names the runner we took over from.
  if (claimed_ && theirs.owner() != owner()) {
    log_->warn("deploy {}: now run by {}; stopping here", id_, theirs.owner());
    lost_ = true;
    return false;
  }
  merge_external(record_, theirs);
  stored_.revision = loaded.value()->revision;
  if (step >= 0) {
    // Only a run writes its steps: this one was written by the run we took over from, after we
    // read it (its last write still in flight). What it wrote is what happened: take it.
    auto stored = shared_->kv()->load_step(id_, step);
    if (!stored) return false;
    if (!stored.value()) {
      stored_.step_revisions[static_cast<std::size_t>(step)] = 0;
      split_ = false;
      return true;
    }
    Step current;
    if (!current.ParseFromString(stored.value()->value) ||
        current.repo() != record_.steps(step).repo()) {
      return false;
    }
    *record_.mutable_steps(step) = std::move(current);
    stored_.step_revisions[static_cast<std::size_t>(step)] = stored.value()->revision;
  }
  return true;
}

void RecordCommitter::refresh() {
  auto loaded = shared_->kv()->load_head(id_, 0);
  if (!loaded || !loaded.value()) return;
  std::lock_guard lock(mutex_);
  // Not newer than ours: a commit wrote since this was read.
  if (loaded.value()->revision <= stored_.revision) return;
  if (loaded.value()->record.owner() != owner()) {
    log_->warn("deploy {}: now run by {}; stopping here", id_, loaded.value()->record.owner());
    lost_ = true;
    return;
  }
  merge_external(record_, loaded.value()->record);
  stored_.revision = loaded.value()->revision;
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

bool RecordCommitter::while_live(const std::string& repo,
                                 const std::function<void(const Record&, const Step*)>& f) const {
  std::lock_guard lock(mutex_);
  if (abandoned_) return false;
  f(record_, find(repo));
  return true;
}

Record RecordCommitter::record() const {
  std::lock_guard lock(mutex_);
  return record_;
}

Step RecordCommitter::step(const std::string& repo) const {
  std::lock_guard lock(mutex_);
  const Step* step = find(repo);
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
  if (const Step* step = find(repo)) {
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
