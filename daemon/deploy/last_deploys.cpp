#include "daemon/deploy/last_deploys.hpp"

#include "daemon/core/timestamps.hpp"
#include "daemon/deploy/deploy_index.hpp"

namespace orgd::deploy {

namespace {

// What a summary keeps of a record's ref (deploy requests allow 256 bytes).
constexpr std::size_t kMaxSummaryRef = 256;
constexpr std::size_t kMaxPreviousField = 1024;

v1::DeployRecord::State summary_state(Step::State state) {
  switch (state) {
    case Step::pending:
      return Record::pending;
    case Step::running:
      return Record::running;
    case Step::succeeded:
      return Record::succeeded;
    case Step::failed:
      return Record::failed;
    case Step::rolled_back:
      return Record::rolled_back;
    case Step::cancelled:
    case Step::skipped:
      return Record::cancelled;
    default:
      return Record::pending;
  }
}

}  // namespace

LastDeploys::LastDeploys(std::shared_ptr<OrchestratorContext> shared, MetricsRegistry& metrics,
                         RequestRefresh request_refresh)
    : shared_(std::move(shared)), request_refresh_(std::move(request_refresh)) {
  events_ignored_ = &metrics.counter(
      "orgd_deploy_events_ignored_total",
      "Deploy events that named no configured repo+env or no valid deploy id (not re-read)");
  refreshes_dropped_ = &metrics.counter(
      "orgd_deploy_summary_refreshes_dropped_total",
      "Deploy records not re-read at an event's prompt because too many were waiting");
  prompts_ = &metrics.counter(
      "orgd_deploy_summary_prompts_total",
      "Deploy events that named a configured repo+env (a re-read asked for)");
  reads_ = &metrics.counter(
      "orgd_deploy_summary_reads_total",
      "Deploy records read for the last deploys in status (at most one pass per 250 ms of events)");
}

void LastDeploys::observe(const v1::DeployEvent& event) {
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
  prompts_->inc();
  // A finished deploy frees locks that queued deploys may be waiting for.
  if (!request_refresh_(event.deploy_id(), event.kind() == "finished")) {
    refreshes_dropped_->inc();
  }
}

void LastDeploys::apply(const Record& record) {
  if (!record.queued_behind().empty()) return;  // not started: not anyone's last deploy yet
  const auto inventory = shared_->current_inventory();
  std::lock_guard lock(summaries_mutex_);
  for (const Step& step : record.steps()) {
    if (inventory->target(step.repo(), record.env()) == nullptr) continue;
    // An older deploy does not replace a newer one (ids tell apart deploys of one second only
    // by chance: the creation time decides, then the id).
    const std::pair<std::int64_t, std::int32_t> created{record.created_at().seconds(),
                                                        record.created_at().nanos()};
    // A rollback needs the ref and handle whole: one too long to keep is not kept at all.
    if (step.state() == Step::succeeded && record.ref().size() <= kMaxPreviousField &&
        step.handle().size() <= kMaxPreviousField) {
      auto& success = successes_[{step.repo(), record.env()}];
      if (success.deploy.deploy_id().empty() || created > success.created ||
          (created == success.created && record.deploy_id() > success.deploy.deploy_id())) {
        success.created = created;
        success.deploy.set_deploy_id(record.deploy_id());
        success.deploy.set_ref(record.ref());
        success.deploy.set_handle(step.handle());
      }
    }
    auto& last = summaries_[{step.repo(), record.env()}];
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

std::optional<v1::PreviousDeploy> LastDeploys::last_success(const std::string& repo,
                                                            const std::string& env,
                                                            const std::string& except) const {
  std::lock_guard lock(summaries_mutex_);
  const auto it = successes_.find({repo, env});
  if (it == successes_.end() || it->second.deploy.deploy_id() == except) return std::nullopt;
  return it->second.deploy;
}

void LastDeploys::refresh(const std::set<std::string>& ids) {
  for (const auto& id : ids) {
    if (shared_->stopping.load()) return;
    reads_->inc();
    auto loaded = shared_->kv()->load(id);
    if (!loaded) {
      shared_->kv_errors->inc();
      continue;
    }
    if (loaded.value()) apply(loaded.value()->record);
  }
}

void LastDeploys::load_recent() {
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
  for (auto it = entries.rbegin(); it != entries.rend() && !shared_->stopping.load(); ++it) {
    if (summary_count() >= targets) break;
    reads_->inc();
    auto loaded = shared_->kv()->load(it->deploy_id());
    if (loaded && loaded.value()) apply(loaded.value()->record);
  }
}

void LastDeploys::catch_up() {
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
    if (shared_->stopping.load()) return;
    reads_->inc();
    auto loaded = shared_->kv()->load(id);
    if (loaded && loaded.value()) apply(loaded.value()->record);
  }
}

std::size_t LastDeploys::summary_count() const {
  std::lock_guard lock(summaries_mutex_);
  return summaries_.size();
}

std::size_t LastDeploys::summary_bytes() const {
  std::lock_guard lock(summaries_mutex_);
  std::size_t bytes = 0;
  for (const auto& [key, last] : summaries_) {
    bytes += key.first.size() + key.second.size() + last.summary.ByteSizeLong();
  }
  for (const auto& [key, success] : successes_) {
    bytes += key.first.size() + key.second.size() + success.deploy.ByteSizeLong();
  }
  return bytes;
}

void LastDeploys::fill_status(v1::RepoStatus& repo) const {
  std::lock_guard lock(summaries_mutex_);
  for (auto it = summaries_.lower_bound({repo.name(), std::string{}});
       it != summaries_.end() && it->first.first == repo.name(); ++it) {
    (*repo.mutable_deploys())[it->first.second] = it->second.summary;
  }
}

void LastDeploys::fill_status(v1::OrgStatus& org) const {
  for (auto& repo : *org.mutable_repos()) fill_status(repo);
}

std::function<std::optional<v1::PreviousDeploy>(const std::string&, const std::string&,
                                                const std::string&)>
previous_success_from(std::weak_ptr<LastDeploys> deploys) {
  return [deploys = std::move(deploys)](const std::string& repo, const std::string& env,
                                        const std::string& deploy_id)
             -> std::optional<v1::PreviousDeploy> {
    auto last = deploys.lock();
    if (!last) return std::nullopt;
    return last->last_success(repo, env, deploy_id);
  };
}

}  // namespace orgd::deploy
