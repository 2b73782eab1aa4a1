#pragma once

// A run's copy of its deploy record and the only way it is written (DESIGN.md §8): every change
// is applied to the copy and written compare-and-set on the revisions of the keys it touches
// (the steps it changed, then the header: deploy_store.hpp); on a conflict what another replica
// wrote (a cancel request) is merged in and the write is tried again. A change sees the header
// and only the steps it names, so its cost does not grow with the deploy's size. The run, its
// steps and its lease keeper read the record through here; its mutex is held while an event
// about the record is published.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/deploy/orchestrator_context.hpp"

namespace orgd::deploy {

class RecordCommitter {
 public:
  // `on_written` runs after every write (outside the mutex): something changed, decide again.
  RecordCommitter(std::shared_ptr<OrchestratorContext> shared, std::string id, StopFlag& stop,
                  std::function<void()> on_written);

  // Reads the record, retrying while NATS is unreachable. False when it is gone (dropped from
  // the active list), cannot be read, or the run stops.
  bool load();

  // Applies `change` to the record and writes it, compare-and-set on the revisions; on a
  // conflict, merges what another replica wrote (a cancel request) and tries again. `change`
  // is given the record's header with the steps of `repos` only (those it may change).
  // Publishes `events` (kind, repo) once written. False when nothing changed, or the run was
  // lost, abandoned or stopped while NATS was unreachable.
  bool commit(const std::vector<std::string>& repos, const std::function<bool(Record&)>& change,
              const std::vector<std::pair<std::string, std::string>>& events);

  // A look at the record for a cancel request written by another replica.
  void refresh();

  // The run is not ours any more: nothing is written from now on.
  void mark_lost();
  // The run is left to finish on its own (stop() did not wait for it): it never touches the
  // daemon again. Not under the mutex: a commit holds it for as long as its KV call takes.
  void abandon() { abandoned_.store(true); }
  bool lost() const;

  // Runs `f` with the record, under the mutex, unless the run was abandoned: what touches the
  // daemon (publishing, the health picture) runs this way. False when abandoned.
  bool while_live(const std::function<void(const Record&)>& f) const;
  // The same with the step of `repo` (nullptr when the deploy has none).
  bool while_live(const std::string& repo,
                  const std::function<void(const Record&, const Step*)>& f) const;

  // What `f` makes of the record, read under the mutex (a look that needs no copy).
  template <class F>
  auto read(F&& f) const {
    std::lock_guard lock(mutex_);
    return f(record_);
  }
  Record record() const;
  Step step(const std::string& repo) const;
  bool cancel_requested() const;
  DeployContext context_for(const std::string& repo, int attempt) const;
  const std::string& id() const { return id_; }
  const std::string& env() const { return env_; }  // set by load(), then constant
  std::string owner() const { return shared_->options.instance_id; }

 private:
  std::shared_ptr<OrchestratorContext> shared_;
  const std::string id_;
  StopFlag& stop_;
  std::function<void()> on_written_;
  std::shared_ptr<spdlog::logger> log_;

  // The step of `repo` in record_ (nullptr: none). Called with mutex_ held.
  const Step* find(const std::string& repo) const;
  // A conflict writing key `step` (-1: the header): what others wrote is read and merged into
  // record_. False when the record is not ours any more (lost_ is set) or cannot be read.
  bool merge_after_conflict(int step);

  // guards record_, stored_, index_, lost_, abandoned_; held while publishing
  mutable std::mutex mutex_;
  Record record_;
  StoredRecord stored_;                          // the revisions of record_'s keys (no record)
  std::unordered_map<std::string, int> index_;  // repo -> its step's index in record_
  bool split_ = false;  // every step of record_ has its own key (none has revision 0)
  bool lost_ = false;
  std::atomic<bool> abandoned_{false};  // also read under mutex_ before publishing
  bool claimed_ = false;                // the record names us as owner
  std::string env_;                     // set by load(), then constant
};

}  // namespace orgd::deploy
