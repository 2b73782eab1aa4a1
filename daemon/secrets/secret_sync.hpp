#pragma once

// Syncing secrets to their targets with the fewest calls (issue 9 point 3, docs/secret-sync.md).
// Per target: the target's claim in orgd_sync taken (one replica applies a target at a time),
// its records read, one list() call, a plan (sync_planner.hpp), then the puts and removes the
// plan asks for, each success recorded at once, and one list() after puts to note the target's
// update times for drift. A sync with nothing changed is one list() and no writes. Errors are
// per name; a rate limit stops the target's remaining work for this run (reported as behind).
// Nothing here holds a value outside a Secret; results, errors and logs carry names only.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/plugin/provider.hpp"
#include "daemon/secrets/sync_planner.hpp"
#include "daemon/secrets/sync_state.hpp"

namespace orgd::secrets {

// One secret a target should hold.
struct DesiredSecret {
  std::string name;
  // Shared: one value goes to several targets without a copy per target.
  std::shared_ptr<const Secret> value;
  std::uint64_t version = 0;  // the vault's version of the value (kept in the record)
  std::string scope;          // "org" or the repo whose value it is
};

// A target and what it should hold.
struct SyncTarget {
  std::string id;  // target_id(provider, target->describe())
  std::shared_ptr<SecretTarget> target;
  bool prune = false;  // SecretTargetConfig::prune
  std::vector<DesiredSecret> desired;

  // With the id made from the provider instance's name and the target's describe().
  static SyncTarget make(std::string_view provider, std::shared_ptr<SecretTarget> target,
                         bool prune, std::vector<DesiredSecret> desired);
};

struct SyncFailure {
  std::string name;
  std::string message;  // the target's error: names, never values
  Retry retry = Retry::retryable;
};

struct TargetSyncResult {
  std::string target_id;
  std::string target;  // describe()
  TargetPlan plan;     // what was planned (all of a dry run)
  std::size_t pushed = 0;
  std::size_t removed = 0;
  std::size_t unchanged = 0;  // desired names already in sync
  std::vector<SyncFailure> failures;
  // Names whose planned change is not done: failed, or not tried after a rate limit or a lost
  // claim. The next sync plans them again.
  std::vector<std::string> behind;
  // The target was not synced at all: its listing failed, orgd_sync was unreachable, or
  // another replica holds its claim (claimed_elsewhere; that replica is syncing it).
  std::optional<Error> error;
  bool claimed_elsewhere = false;

  bool in_sync() const { return !error && behind.empty() && failures.empty(); }
};

struct SyncResult {
  bool dry_run = false;
  std::vector<TargetSyncResult> targets;

  bool in_sync() const;
};

struct SyncOptions {
  // Names this replica in claims (the daemon's instance id).
  std::string replica_id = "orgd";
  // How long a claim holds without renewal. While a replica applies the target it renews it
  // every quarter of this (before each item, and in wall time by a thread of its own, so one
  // slow call does not lose it); a replica that dies mid-sync blocks the target's sync for at
  // most this long.
  Duration claim_ttl{std::chrono::seconds{30}};
};

// The result as a reply or event body (P.api.secrets.sync, `orgctl secrets sync [--dry-run]`):
// {"dry_run", "in_sync", "targets": [{"target_id", "target", "pushed", "removed", "unchanged",
// "plan": [{"name", "action", "reason"}], "failures": [{"name", "error", "retry"}], "behind",
// "error"?, "claimed_elsewhere"}]}. Names, actions and messages only: no value, no digest. A
// dry run's plan lists every entry; otherwise only the entries with an action or a reason other
// than in_sync (1,000 unchanged names need not be echoed).
nlohmann::json to_json(const SyncResult& result);

class SecretSync {
 public:
  // `bucket` is orgd_sync; it and `clock` outlive this. `digest_key` (32 bytes, derived by the
  // vault from its master key) keys the digests; std::invalid_argument for another size.
  SecretSync(KvBucket& bucket, Secret digest_key, SyncOptions options,
             const Clock& clock = system_clock());

  // Every target in turn. dry_run: the plans only (one list() per target; no claim, no write).
  // Calls are serialized: a second sync() waits for the one running.
  SyncResult sync(const std::vector<SyncTarget>& targets, bool dry_run = false);
  TargetSyncResult sync_target(const SyncTarget& target, bool dry_run = false);

  const SyncOptions& options() const { return options_; }

 private:
  KvBucket& bucket_;
  Secret digest_key_;
  SyncOptions options_;
  const Clock& clock_;
  SyncState state_;
  std::mutex mutex_;  // one sync at a time per instance (claims are per replica, not per call)
};

}  // namespace orgd::secrets
