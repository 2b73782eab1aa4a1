#pragma once

// The secrets engine's front (DESIGN.md §9): what P.api.secrets.* and P.cmd.secrets.* do, over
// the vault, the sync engine, rotation and backups. It turns the config (repos' secrets and
// secret targets, org targets, rotation policies) into desired state, answers the API, and runs
// the background work: a sync after every vault change, the sources re-imported when a file
// changes, and on the scheduler lease holder the sync_interval reconcile, rotations and
// scheduled backups. Every operation is an audit event on P.events.secrets.<name>.<kind> (names,
// targets, actor, result; never a value).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/plugin/registry.hpp"
#include "daemon/secrets/rotation.hpp"
#include "daemon/secrets/secret_sync.hpp"
#include "daemon/secrets/secret_vault.hpp"
#include "daemon/secrets/vault_backup.hpp"
#include "orgd/v1/secrets.pb.h"

namespace orgd::secrets {

struct SecretsServiceOptions {
  std::string prefix;      // P
  std::string replica_id;  // this orgd's instance id (sync claims)
  // How often the background thread looks at sources, rotations and schedules.
  std::chrono::milliseconds tick{std::chrono::seconds{1}};
  // A vault change is synced after this quiet time, so an import of 1,000 values is one sync.
  std::chrono::milliseconds settle{std::chrono::milliseconds{200}};
  RotationEngine::Options rotation;
  // The Argon2id cost of a passphrase backup's key.
  KdfCost backup_kdf_cost = KdfCost::moderate();
};

// RotationVault over the vault: a version's creation time is its age.
class VaultRotationAdapter final : public RotationVault {
 public:
  explicit VaultRotationAdapter(SecretVault& vault) : vault_(vault) {}
  Result<std::optional<Active>> active(const std::string& scope,
                                       const std::string& name) override;
  Result<std::uint64_t> put_pending(const std::string& scope, const std::string& name,
                                    Secret value) override;
  Result<Ok> activate(const std::string& scope, const std::string& name,
                      std::uint64_t version) override;
  Result<Ok> retire(const std::string& scope, const std::string& name,
                    std::uint64_t version) override;

 private:
  SecretVault& vault_;
};

class SecretsService {
 public:
  // `vault`, `sync_bucket` (orgd_sync), `providers` and `events` outlive the service; so does
  // `clock`. `is_leader` says whether this orgd holds the scheduler lease.
  // `master_key` is the vault's: backups without a passphrase are made under it.
  SecretsService(const Config& config, std::shared_ptr<SecretVault> vault, MasterKey master_key,
                 KvBucket& sync_bucket,
                 std::shared_ptr<const ProviderSet> providers, Publisher& events,
                 MetricsRegistry& metrics, const Clock& clock, std::function<bool()> is_leader,
                 SecretsServiceOptions options);
  ~SecretsService();
  SecretsService(const SecretsService&) = delete;
  SecretsService& operator=(const SecretsService&) = delete;

  // Imports every source once (the problems are returned, each naming its file and line), then
  // starts the background thread.
  std::vector<std::string> start();
  void stop();

  // The API (P.api.secrets.<op>), also what the commands do.
  Result<v1::SecretsKey> key() const;
  Result<v1::SecretSetReply> set(const v1::SecretSetRequest& request);
  Result<v1::SecretList> list(const v1::SecretListRequest& request);
  Result<v1::SecretSyncReport> sync(const v1::SecretSyncRequest& request);
  Result<v1::SecretRotateReport> rotate(const v1::SecretRotateRequest& request);
  Result<v1::SecretBackupReply> backup(const v1::SecretBackupRequest& request);
  Result<v1::SecretRestoreReply> restore(const v1::SecretRestoreRequest& request);

  // Imports one source file now (also what a change of the file does).
  Result<std::size_t> import_source(const SecretSourceConfig& source);
  // One pass of the background work (tests drive it without the thread).
  void tick();
  // The sync a vault change asks for, run now if one is waiting.
  void flush_pending_sync();

  RotationEngine& rotations() { return *rotations_; }
  SecretVault& vault() { return *vault_; }

 private:
  struct TargetRef {
    std::string provider;
    std::string repo;  // empty for an org target
    const SecretTargetConfig* config = nullptr;
    std::shared_ptr<SecretTarget> target;
  };

  // Targets a sync request selects, with what each should hold.
  Result<std::vector<SyncTarget>> desired_targets(const std::set<std::string>& repos, bool org,
                                                  const std::set<std::string>& names,
                                                  std::vector<std::string>& missing);
  // The value a target gets for `name` as seen from `repo` (empty: the org's): the pending
  // version of a rotation when there is one, else the active one.
  Result<std::optional<DesiredSecret>> desired_value(const std::string& repo,
                                                     const std::string& name,
                                                     std::map<std::string, DesiredSecret>& cache);
  Result<PushOutcome> push_for_rotation(const std::string& scope, const std::string& name);
  v1::SecretSyncReport report_of(const SyncResult& result, const std::string& sync_id) const;
  void audit(const std::string& kind, const std::string& action, std::vector<std::string> names,
             const std::string& scope, std::vector<std::string> targets,
             const std::string& actor, const std::string& result, const std::string& error,
             const std::string& id, std::uint64_t version = 0);
  // A backup's key: the passphrase sealed to the vault's key, or (none given) the master key.
  Result<BackupKey> backup_key(const std::string& sealed_passphrase) const;
  void loop();
  void watch_sources();
  void scheduled_backup();
  // secrets.backup.r2's store (null when not configured).
  ObjectStore* backup_store() const { return providers_->backup_store().get(); }

  const Config config_;
  std::shared_ptr<SecretVault> vault_;
  MasterKey master_key_;
  KvBucket& sync_bucket_;
  std::shared_ptr<const ProviderSet> providers_;
  Publisher& events_;
  const Clock& clock_;
  std::function<bool()> is_leader_;
  SecretsServiceOptions options_;
  std::vector<TargetRef> targets_;
  std::unique_ptr<SecretSync> syncer_;
  std::unique_ptr<VaultRotationAdapter> rotation_vault_;  // before rotations_, which uses it
  std::unique_ptr<RotationEngine> rotations_;
  Counter* operations_ok_ = nullptr;
  Counter* operations_failed_ = nullptr;
  // orgd_secret_backups_total{destination=dir|store, result=ok|failed}: scheduled backups.
  Counter* backups_dir_ok_ = nullptr;
  Counter* backups_dir_failed_ = nullptr;
  Counter* backups_store_ok_ = nullptr;
  Counter* backups_store_failed_ = nullptr;

  std::mutex mutex_;  // guards sync_wanted_at_, source_times_, last_*_ and stop_
  std::condition_variable wake_;
  bool stop_ = false;
  std::optional<std::chrono::steady_clock::time_point> sync_wanted_at_;
  std::map<std::string, std::filesystem::file_time_type> source_times_;
  Clock::time_point last_interval_sync_{};
  Clock::time_point last_backup_{};
  std::thread thread_;
};

}  // namespace orgd::secrets
