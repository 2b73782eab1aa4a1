#include "daemon/secrets/secret_sync.hpp"

#include <condition_variable>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "daemon/core/ascii.hpp"
#include "daemon/core/logging.hpp"

namespace orgd::secrets {
namespace {

// A target's claim while this replica applies it. Renewed ahead of expiry before every item (on
// the injected clock) and, in wall time, by a thread of its own every quarter ttl, so a call
// that takes longer than the ttl (an API's retries and waits) keeps it while this process lives,
// and the ttl can stay short: a replica that dies mid-sync holds the target up for one ttl.
class ClaimKeeper {
 public:
  ClaimKeeper(SyncState& state, SyncClaim claim, Duration ttl, const Clock& clock)
      : state_(state), ttl_(ttl), clock_(clock), claim_(std::move(claim)),
        renew_at_(clock_.now() + ttl_ / 4) {
    thread_ = std::thread([this] { beat(); });
  }
  ~ClaimKeeper() { stop(); }
  ClaimKeeper(const ClaimKeeper&) = delete;
  ClaimKeeper& operator=(const ClaimKeeper&) = delete;

  // Renews when due; the error when the claim was lost (expired and taken over).
  std::optional<Error> keep() {
    std::lock_guard lock(mutex_);
    if (!lost_ && clock_.now() >= renew_at_) renew_locked();
    return lost_;
  }

  // Stops the heartbeat and gives the claim up when it is still held.
  Result<Ok> release() {
    stop();
    std::lock_guard lock(mutex_);
    if (lost_) return Ok{};  // not ours any more: nothing to give up
    return state_.release(claim_);
  }

 private:
  void renew_locked() {
    auto renewed = state_.renew(claim_, ttl_);
    if (!renewed) {
      lost_ = renewed.error();
      return;
    }
    claim_ = renewed.value();
    renew_at_ = clock_.now() + ttl_ / 4;
  }

  void beat() {
    std::unique_lock lock(mutex_);
    while (!stopping_ && !lost_) {
      wake_.wait_for(lock, ttl_ / 4, [this] { return stopping_; });
      if (stopping_) break;
      renew_locked();
    }
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  SyncState& state_;
  const Duration ttl_;
  const Clock& clock_;
  std::mutex mutex_;  // guards everything below; KV calls of a renewal are made holding it
  std::condition_variable wake_;
  SyncClaim claim_;
  Clock::time_point renew_at_;
  std::optional<Error> lost_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

SyncTarget SyncTarget::make(std::string_view provider, std::shared_ptr<SecretTarget> target,
                            bool prune, std::vector<DesiredSecret> desired) {
  SyncTarget t;
  t.id = target_id(provider, target->describe());
  t.target = std::move(target);
  t.prune = prune;
  t.desired = std::move(desired);
  return t;
}

bool SyncResult::in_sync() const {
  for (const auto& t : targets) {
    if (!t.in_sync()) return false;
  }
  return true;
}

nlohmann::json to_json(const SyncResult& result) {
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& t : result.targets) {
    nlohmann::json plan = nlohmann::json::array();
    for (const auto& e : t.plan.entries) {
      if (!result.dry_run && e.action == SyncAction::none && e.reason == SyncReason::in_sync) {
        continue;
      }
      plan.push_back({{"name", e.name},
                      {"action", std::string(action_name(e.action))},
                      {"reason", std::string(reason_name(e.reason))}});
    }
    nlohmann::json failures = nlohmann::json::array();
    for (const auto& f : t.failures) {
      failures.push_back(
          {{"name", f.name}, {"error", f.message}, {"retry", std::string(retry_name(f.retry))}});
    }
    nlohmann::json j{{"target_id", t.target_id},
                     {"target", t.target},
                     {"pushed", t.pushed},
                     {"removed", t.removed},
                     {"unchanged", t.unchanged},
                     {"plan", std::move(plan)},
                     {"failures", std::move(failures)},
                     {"behind", t.behind},
                     {"claimed_elsewhere", t.claimed_elsewhere}};
    if (t.error) j["error"] = t.error->message;
    targets.push_back(std::move(j));
  }
  return {{"dry_run", result.dry_run}, {"in_sync", result.in_sync()}, {"targets", targets}};
}

SecretSync::SecretSync(KvBucket& bucket, Secret digest_key, SyncOptions options, const Clock& clock)
    : bucket_(bucket),
      digest_key_(std::move(digest_key)),
      options_(std::move(options)),
      clock_(clock),
      state_(bucket, clock) {
  if (digest_key_.size() != kDigestKeyBytes) {
    throw std::invalid_argument("the sync digest key must be 32 bytes");
  }
}

SyncResult SecretSync::sync(const std::vector<SyncTarget>& targets, bool dry_run) {
  SyncResult result;
  result.dry_run = dry_run;
  for (const auto& target : targets) result.targets.push_back(sync_target(target, dry_run));
  return result;
}

TargetSyncResult SecretSync::sync_target(const SyncTarget& target, bool dry_run) {
  std::lock_guard lock(mutex_);
  auto log = logging::get("secrets");
  TargetSyncResult result;
  result.target_id = target.id;
  result.target = target.target->describe();

  // The claim comes before the records are read: a replica that just finished this target has
  // written its records by the time its claim is released, so this plan starts from them.
  std::optional<ClaimKeeper> held;
  if (!dry_run) {
    auto claim = state_.claim(target.id, options_.replica_id, options_.claim_ttl);
    if (!claim) {
      result.claimed_elsewhere = claim.error().code == ErrorCode::conflict;
      result.error = claim.error();
      log->info("sync of {} skipped: {}", result.target, claim.error().message);
      return result;
    }
    held.emplace(state_, claim.value(), options_.claim_ttl, clock_);
  }
  auto release = [&] {
    if (!held) return;
    if (auto released = held->release(); !released) {
      log->warn("sync of {}: releasing its claim: {}", result.target, released.error().message);
    }
    held.reset();
  };

  auto records = state_.load(target.id);
  if (!records) {
    result.error = records.error();
    release();
    return result;
  }
  auto listing = target.target->list();
  if (!listing) {
    result.error = listing.error();
    log->warn("sync of {}: listing failed: {}", result.target, listing.error().message);
    release();
    return result;
  }

  std::vector<DesiredDigest> digests;
  std::map<std::string, const DesiredSecret*> by_name;
  digests.reserve(target.desired.size());
  for (const auto& d : target.desired) {
    if (!d.value) continue;
    auto digest = secret_digest(digest_key_, target.id, d.name, *d.value);
    if (!digest) {  // only a bad key, refused at construction
      result.error = digest.error();
      release();
      return result;
    }
    digests.push_back({d.name, std::move(digest.value())});
    by_name.emplace(d.name, &d);
  }
  std::map<std::string, const std::string*> digest_of;
  for (const auto& d : digests) digest_of.emplace(d.name, &d.digest);

  result.plan = plan_target(target.id, result.target, target.prune, digests, records.value(),
                            listing.value());
  for (const auto& e : result.plan.entries) {
    if (e.action == SyncAction::none && e.reason == SyncReason::in_sync) ++result.unchanged;
  }
  if (dry_run) return result;

  TargetRecords& stored = records.value();
  // Puts first (what services are waiting for), then removals.
  std::vector<const PlanEntry*> work;
  for (const auto& e : result.plan.entries) {
    if (e.action == SyncAction::put) work.push_back(&e);
  }
  for (const auto& e : result.plan.entries) {
    if (e.action == SyncAction::remove) work.push_back(&e);
  }

  std::map<std::string, std::uint64_t> pushed;  // name -> its record's revision
  bool stopped = false;
  for (std::size_t i = 0; i < work.size(); ++i) {
    const PlanEntry& e = *work[i];
    if (stopped) {
      result.behind.push_back(e.name);
      continue;
    }
    // A claim lost (this replica stalled past its ttl and another took over) ends the run
    // here, so the two never work on the target at once.
    if (auto lost = held->keep()) {
      log->warn("sync of {} stopped: {}", result.target, lost->message);
      result.error = *lost;
      release();  // stops the heartbeat; nothing is given up
      stopped = true;
      result.behind.push_back(e.name);
      continue;
    }

    Result<Ok> done = Ok{};
    if (e.action == SyncAction::put) {
      const DesiredSecret& d = *by_name.at(e.name);
      done = target.target->put(d.name, *d.value);
      if (done) {
        SyncRecord record;
        record.digest = *digest_of.at(e.name);
        record.version = d.version;
        record.scope = d.scope;
        record.pushed_at = clock_.now();
        auto it = stored.find(e.name);
        auto saved =
            state_.save(target.id, e.name, record, it == stored.end() ? 0 : it->second.revision);
        if (!saved) {
          // Pushed but not noted: the next sync pushes it once more, which is harmless.
          result.failures.push_back(
              {e.name, "pushed, but its sync record was not written: " + saved.error().message,
               saved.error().retry});
          result.behind.push_back(e.name);
          continue;
        }
        stored[e.name] = StoredRecord{record, saved.value()};
        pushed[e.name] = saved.value();
        ++result.pushed;
        continue;
      }
    } else {
      if (e.listed_name) {
        done = target.target->remove(*e.listed_name);
        if (!done && done.error().code == ErrorCode::not_found) done = Ok{};  // already gone
      }
      if (done && e.reason == SyncReason::no_longer_desired) {
        if (auto dropped = state_.drop(target.id, e.name); !dropped) {
          result.failures.push_back(
              {e.name, "removed, but its sync record was not dropped: " + dropped.error().message,
               dropped.error().retry});
          result.behind.push_back(e.name);
          continue;
        }
        stored.erase(e.name);
      }
      if (done) {
        if (e.listed_name) ++result.removed;
        continue;
      }
    }
    const Error& error = done.error();
    log->warn("sync of {}: {} {}: {}", result.target, action_name(e.action), e.name, error.message);
    result.failures.push_back({e.name, error.message, error.retry});
    result.behind.push_back(e.name);
    if (error.retry == Retry::rate_limited) stopped = true;  // the rest waits for the next run
  }

  // The target's own time of each push, from one more listing, so a later change by someone
  // else shows as drift. Skipped after a rate limit (it would be refused too); the records then
  // fall back to the push time (kTargetClockSlack).
  std::map<std::string, Clock::time_point> adopt;
  for (const auto& e : result.plan.entries) {
    if (e.adopt_updated_at) adopt.emplace(e.name, *e.adopt_updated_at);
  }
  if (!pushed.empty() && !stopped) {
    auto after = target.target->list();
    if (after) {
      std::map<std::string, Clock::time_point> shown;
      for (const auto& info : after.value()) {
        if (info.updated_at) shown.emplace(ascii_lowered(info.name), *info.updated_at);
      }
      for (const auto& [name, revision] : pushed) {
        (void)revision;
        auto it = shown.find(ascii_lowered(name));
        if (it != shown.end()) adopt[name] = it->second;
      }
    } else {
      log->warn("sync of {}: listing after the pushes failed: {}", result.target,
                after.error().message);
    }
  }
  for (const auto& [name, when] : adopt) {
    auto it = stored.find(name);
    if (it == stored.end()) continue;
    SyncRecord record = it->second.record;
    record.target_updated_at = when;
    auto saved = state_.save(target.id, name, record, it->second.revision);
    if (saved) {
      it->second = StoredRecord{record, saved.value()};
    } else {
      // Harmless: drift for this name is then measured from the push time.
      log->warn("sync of {}: noting the target's time of {}: {}", result.target, name,
                saved.error().message);
    }
  }

  release();
  log->info("synced {}: {} pushed, {} removed, {} unchanged, {} failed, {} behind", result.target,
            result.pushed, result.removed, result.unchanged, result.failures.size(),
            result.behind.size());
  return result;
}

}  // namespace orgd::secrets
