#include "daemon/deploy/deploy_service.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "daemon/core/timestamps.hpp"
#include "daemon/deploy/deploy_index.hpp"
#include "daemon/deploy/record_pages.hpp"
#include "daemon/deploy/scheduler.hpp"

namespace orgd::deploy {

namespace {

constexpr int kDefaultListLimit = 20;
constexpr int kMaxListLimit = 500;

}  // namespace

DeployService::DeployService(std::shared_ptr<OrchestratorContext> shared, Scheduler& scheduler,
                             const std::atomic<bool>& attached, MetricsRegistry& metrics)
    : shared_(std::move(shared)), scheduler_(scheduler), attached_(attached) {
  deploys_queued_ = &metrics.counter("orgd_deploys_queued_total",
                                     "Deploy commands queued behind a held repo+env lock");
  queue_full_ = &metrics.counter("orgd_deploys_queue_full_total",
                                 "Deploy commands refused because the deploy queue was full");
}

Result<v1::DeployAccepted> DeployService::accepted_of(const std::string& deploy_id,
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

Result<v1::DeployAccepted> DeployService::deploy(const v1::DeployRequest& request,
                                                 const std::string& fallback_request_id,
                                                 WhenLocked when_locked) {
  if (!attached_.load() || shared_->stopping.load()) {
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
  auto policy = request.on_failure().empty()
                    ? parse_failure_policy(inventory->settings().on_failure)
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
      if (shared_->clock.now() - existing.value()->created < kAcceptGrace) {
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
  for (const auto& wave : waves.value())
    all_repos.insert(all_repos.end(), wave.begin(), wave.end());
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
  scheduler_.begin_accepting(id);
  struct Accepted {
    Scheduler& scheduler;
    const std::string& id;
    ~Accepted() { scheduler.end_accepting(id); }
  } accepting{scheduler_, id};
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
  auto lease = store->acquire_lease(DeployStore::deploy_lease(id), shared_->options.instance_id);
  if (lease) {
    scheduler_.start_run(id, lease.value(), false);
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

Result<v1::DeployRecord> DeployService::get(const v1::DeployGetRequest& request) {
  if (!attached_.load()) return unavailable("deploys are not available yet");
  if (!valid_name(request.deploy_id())) return invalid_argument("invalid deployId");
  auto loaded = shared_->kv()->load(request.deploy_id());
  if (!loaded) return loaded.error();
  if (!loaded.value()) return not_found("no deploy " + request.deploy_id());
  return std::move(loaded.value()->record);
}

Result<v1::DeployList> DeployService::list(const v1::DeployListRequest& request) {
  if (!attached_.load()) return unavailable("deploys are not available yet");
  if (request.limit() < 0) return invalid_argument("limit must not be negative");
  const int limit =
      request.limit() == 0 ? kDefaultListLimit : std::min(request.limit(), kMaxListLimit);
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
    // The header and the steps a list shows, unless the repo filter needs them all.
    const bool whole = !request.repo().empty();
    auto loaded = whole ? shared_->kv()->load(it->deploy_id())
                        : shared_->kv()->load_head(it->deploy_id(), kListedSteps);
    if (!loaded) return loaded.error();
    if (!loaded.value()) continue;  // expired from the bucket's history
    Record& record = loaded.value()->record;
    if (!request.env().empty() && record.env() != request.env()) continue;
    if (whole && find_step(record, request.repo()) == nullptr) continue;
    *list.add_deploys() = std::move(record);
  }
  return list;
}

Result<v1::DeployRecord> DeployService::cancel(const v1::DeployCancelRequest& request) {
  if (!attached_.load()) return unavailable("deploys are not available yet");
  if (!valid_name(request.deploy_id())) return invalid_argument("invalid deployId");
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto loaded = shared_->kv()->load(request.deploy_id());
    if (!loaded) return loaded.error();
    if (!loaded.value()) return not_found("no deploy " + request.deploy_id());
    Record& record = loaded.value()->record;
    if (is_terminal(record.state())) {
      return conflict("deploy " + request.deploy_id() + " already finished (" +
                      Record::State_Name(record.state()) + ")");
    }
    if (record.cancel_requested()) return record;
    if (!record.queued_behind().empty()) {
      auto cancelled = cancel_queued(*loaded.value(), request.reason());
      if (cancelled || cancelled.error().code != ErrorCode::conflict) return cancelled;
      continue;  // started (or changed) meanwhile: look again
    }
    request_cancel(record, request.reason(), shared_->clock.now());
    // The header alone: the run writes the steps.
    auto written = shared_->kv()->update(record, loaded.value()->revision);
    if (written) {
      shared_->log->info("deploy {}: cancel requested ({})", request.deploy_id(),
                         record.cancel_reason());
      scheduler_.wake_run(request.deploy_id());
      return record;
    }
    if (written.error().code != ErrorCode::conflict) return written.error();
  }
  return unavailable("deploy " + request.deploy_id() + " changes too fast to cancel; try again");
}

Result<bool> DeployService::request_known(const std::string& request_id) {
  DeployStore* store = shared_->kv();
  if (!attached_.load() || store == nullptr) return unavailable("the KV buckets are not open");
  auto existing = store->deploy_of_request(request_id);
  if (!existing) return existing.error();
  return existing.value().has_value();
}

Result<v1::DeployAccepted> DeployService::enqueue(Record record,
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

Result<v1::DeployRecord> DeployService::cancel_queued(StoredRecord& stored,
                                                      const std::string& reason) {
  // Nobody runs a queued deploy yet: it is finished here, and the queue forgets it.
  Record& record = stored.record;
  const auto now = shared_->clock.now();
  request_cancel(record, reason, now);
  std::vector<std::string> repos;
  for (const Step& step : record.steps()) repos.push_back(step.repo());
  for (const auto& repo : repos) mark_skipped(record, repo, Step::cancelled, now);
  record.clear_queued_behind();
  mark_finished(record, Record::cancelled, now);
  DeployStore* store = shared_->kv();
  if (record.total_steps() == 0) {  // stored whole
    auto written = store->update(record, stored.revision);
    if (!written) return written.error();
  } else {
    // The header first: its compare-and-set decides between this cancel and the scheduler
    // starting the deploy. Once it says finished nobody else writes the steps; a crash before
    // they are written leaves them pending in a cancelled deploy, which is what they are.
    auto written = store->update_header(record, record.steps_size(), stored.revision);
    if (!written) return written.error();
    for (int i = 0; i < record.steps_size(); ++i) {
      const auto revision =
          i < static_cast<int>(stored.step_revisions.size()) ? stored.step_revisions[i] : 0;
      if (auto step = store->update_step(record.deploy_id(), i, record.steps(i), revision);
          !step) {
        shared_->kv_errors->inc();
        shared_->log->warn("deploy {}: step {} not marked cancelled: {}", record.deploy_id(), i,
                           step.error().message);
      }
    }
  }
  (void)DeployQueueStore(shared_->kv()->deploys()).remove(record.deploy_id());
  shared_->deploys_finished["cancelled"]->inc();
  shared_->publish_event(record, "cancelled", nullptr, record.deploy_id() + ".cancelled");
  shared_->publish_event(record, "finished", nullptr, record.deploy_id() + ".finished");
  shared_->log->info("deploy {}: cancelled while queued ({})", record.deploy_id(),
                     record.cancel_reason());
  return record;
}

}  // namespace orgd::deploy
