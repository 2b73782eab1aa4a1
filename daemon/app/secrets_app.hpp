#pragma once

// The secrets engine in the daemon: its KV buckets opened and its master key loaded once NATS is
// up (a connection step), P.api.secrets.* registered on the router, P.cmd.secrets.sync and
// P.cmd.secrets.rotate consumed like deploy commands, and the vault offered to providers as the
// repos' secrets. Without secrets.master_key_file|master_key_env|passphrase_env there is no
// vault: the API answers 503 saying so.

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/events/api_router.hpp"
#include "daemon/events/command_intake.hpp"
#include "daemon/events/rejections.hpp"
#include "daemon/plugin/provider_services.hpp"
#include "daemon/plugin/registry.hpp"
#include "daemon/secrets/secrets_service.hpp"

struct __jsCtx;
struct __natsConnection;

namespace orgd {

// The repos' secrets as providers are given them (ProviderEnvironment::repo_secrets), made with
// the daemon, before the vault exists: unavailable until the vault is open, then the vault's.
class PendingRepoSecrets final : public RepoSecrets {
 public:
  // `names_by_repo`: repos.<name>.secrets; `has_vault`: a master key is configured.
  PendingRepoSecrets(std::map<std::string, std::vector<std::string>> names_by_repo,
                     bool has_vault);
  Result<std::vector<NamedSecret>> secrets_for(const std::string& repo) override;
  void set(std::shared_ptr<RepoSecrets> resolver);

 private:
  const std::map<std::string, std::vector<std::string>> names_by_repo_;
  const bool has_vault_;
  std::mutex mutex_;  // guards resolver_
  std::shared_ptr<RepoSecrets> resolver_;
};

// repos.<name>.secrets of a config, by repo.
std::map<std::string, std::vector<std::string>> secret_names_by_repo(const Config& config);

class SecretsApp {
 public:
  struct Parts {
    const Config* config = nullptr;
    Environment environment;
    Publisher* events = nullptr;  // the audit trail (acked)
    Publisher* replies = nullptr;  // the connection (command dead letters)
    Rejections* rejections = nullptr;
    MetricsRegistry* metrics = nullptr;
    const Clock* clock = nullptr;
    std::function<bool()> is_leader;
    std::string prefix;
    std::string replica_id;
    CommandIntakeSettings commands;  // max_deliver, backoff (op and prefix are set here)
    std::shared_ptr<PendingRepoSecrets> repo_secrets;  // the daemon's, given to providers
    secrets::KdfCost kdf_cost = secrets::KdfCost::moderate();
  };

  explicit SecretsApp(Parts parts);
  ~SecretsApp();

  bool configured() const { return parts_.config->secrets.has_master_key(); }

  // P.api.secrets.* on `router` (before the router's endpoints are subscribed).
  void register_api(ApiRouter& router);

  // The connection step: buckets, master key, vault, service (once), command consumers (every
  // time: they are made again when the server lost them). `providers` are the daemon's.
  Result<Ok> attach(__natsConnection* connection, __jsCtx* js,
                    std::shared_ptr<const ProviderSet> providers);
  void stop();

  // Null until attach() made it.
  std::shared_ptr<secrets::SecretsService> service() const;

 private:
  template <class Request, class Reply>
  void add(ApiRouter& router, const std::string& op,
           Result<Reply> (secrets::SecretsService::*handler)(const Request&));
  Result<Ok> on_command(const BusMessage& command, const std::string& dedup_id, bool rotate);

  Parts parts_;
  mutable std::mutex mutex_;  // guards service_, vault_bucket_, sync_bucket_
  std::shared_ptr<KvBucket> vault_bucket_;
  std::unique_ptr<KvBucket> sync_bucket_;
  std::shared_ptr<secrets::SecretsService> service_;
  std::unique_ptr<CommandIntake> sync_commands_;
  std::unique_ptr<CommandIntake> rotate_commands_;
};

}  // namespace orgd
