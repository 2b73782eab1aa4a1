#include "daemon/app/secrets_app.hpp"

#include <fmt/format.h>

#include "daemon/core/logging.hpp"
#include "daemon/core/secret_source.hpp"
#include "daemon/events/codec.hpp"
#include "daemon/secrets/master_key.hpp"
#include "daemon/secrets/secret_vault.hpp"
#include "orgd/v1/secrets.pb.h"

namespace orgd {
namespace {

Error no_vault() {
  return unavailable(
      "orgd has no vault: set secrets.master_key_file, master_key_env or passphrase_env");
}
Error vault_not_ready() {
  return unavailable("the vault is not open yet (orgd is connecting to NATS)");
}

}  // namespace

std::map<std::string, std::vector<std::string>> secret_names_by_repo(const Config& config) {
  std::map<std::string, std::vector<std::string>> names;
  for (const auto& [name, repo] : config.repos) names[name] = repo.secrets;
  return names;
}

PendingRepoSecrets::PendingRepoSecrets(std::map<std::string, std::vector<std::string>> names,
                                       bool has_vault)
    : names_by_repo_(std::move(names)), has_vault_(has_vault) {}

Result<std::vector<NamedSecret>> PendingRepoSecrets::secrets_for(const std::string& repo) {
  std::shared_ptr<RepoSecrets> resolver;
  {
    std::lock_guard lock(mutex_);
    resolver = resolver_;
  }
  if (resolver) return resolver->secrets_for(repo);
  const auto it = names_by_repo_.find(repo);
  if (it == names_by_repo_.end() || it->second.empty()) return std::vector<NamedSecret>{};
  return has_vault_ ? vault_not_ready() : no_vault();
}

void PendingRepoSecrets::set(std::shared_ptr<RepoSecrets> resolver) {
  std::lock_guard lock(mutex_);
  resolver_ = std::move(resolver);
}

SecretsApp::SecretsApp(Parts parts)
    : parts_(std::move(parts)) {
  auto make_intake = [this](const std::string& op, bool rotate) {
    CommandIntakeSettings settings = parts_.commands;
    settings.prefix = parts_.prefix;
    settings.op = op;
    return std::make_unique<CommandIntake>(
        settings,
        [this, rotate](const BusMessage& command, const std::string& dedup_id) {
          return on_command(command, dedup_id, rotate);
        },
        *parts_.replies, *parts_.rejections, *parts_.metrics);
  };
  if (configured()) {
    sync_commands_ = make_intake("secrets.sync", false);
    rotate_commands_ = make_intake("secrets.rotate", true);
  }
}

SecretsApp::~SecretsApp() { stop(); }

std::shared_ptr<secrets::SecretsService> SecretsApp::service() const {
  std::lock_guard lock(mutex_);
  return service_;
}

template <class Request, class Reply>
void SecretsApp::add(ApiRouter& router, const std::string& op,
                     Result<Reply> (secrets::SecretsService::*handler)(const Request&)) {
  router.add<Request, Reply>(op, [this, handler](const Request& request) -> Result<Reply> {
    if (!configured()) return no_vault();
    auto service = this->service();
    if (!service) return vault_not_ready();
    return ((*service).*handler)(request);
  });
}

void SecretsApp::register_api(ApiRouter& router) {
  router.add<v1::SecretsKeyRequest, v1::SecretsKey>(
      "secrets.key", [this](const v1::SecretsKeyRequest&) -> Result<v1::SecretsKey> {
        if (!configured()) return no_vault();
        auto service = this->service();
        if (!service) return vault_not_ready();
        return service->key();
      });
  add(router, "secrets.set", &secrets::SecretsService::set);
  add(router, "secrets.list", &secrets::SecretsService::list);
  add(router, "secrets.sync", &secrets::SecretsService::sync);
  add(router, "secrets.rotate", &secrets::SecretsService::rotate);
  add(router, "secrets.backup", &secrets::SecretsService::backup);
  add(router, "secrets.restore", &secrets::SecretsService::restore);
}

Result<Ok> SecretsApp::on_command(const BusMessage& command, const std::string& dedup_id,
                                  bool rotate) {
  auto service = this->service();
  if (!service) return vault_not_ready();  // redelivered once the vault is open
  const Encoding encoding =
      encoding_from_content_type(command.header(kContentTypeHeader).value_or(std::string()));
  if (rotate) {
    v1::SecretRotateRequest request;
    if (auto decoded = decode(command.data, encoding, request, command.data.size() + 1);
        !decoded) {
      return permanent(Error{decoded.error()});
    }
    if (request.request_id().empty()) request.set_request_id(dedup_id);
    if (request.actor().empty()) request.set_actor("cmd");
    auto done = service->rotate(request);
    if (!done) {
      return done.error().code == ErrorCode::unavailable ? done.error()
                                                         : permanent(done.error());
    }
    return Ok{};
  }
  v1::SecretSyncRequest request;
  if (auto decoded = decode(command.data, encoding, request, command.data.size() + 1); !decoded) {
    return permanent(Error{decoded.error()});
  }
  if (request.request_id().empty()) request.set_request_id(dedup_id);
  if (request.actor().empty()) request.set_actor("cmd");
  if (request.repos().empty()) request.set_all(true);
  auto done = service->sync(request);
  if (!done) {
    return done.error().code == ErrorCode::unavailable ? done.error() : permanent(done.error());
  }
  // Targets left behind are retried by the next trigger or the sync_interval, not by
  // redelivering the command (a sync is a reconcile, not a list of writes).
  return Ok{};
}

Result<Ok> SecretsApp::attach(__natsConnection* connection, __jsCtx* js,
                              std::shared_ptr<const ProviderSet> providers) {
  if (!configured()) return Ok{};
  const auto log = logging::get("secrets");
  BucketSpec vault_spec{"orgd_vault", "orgd vault: encrypted secret entries (ciphertext only)"};
  vault_spec.replicas = parts_.config->nats.replicas;
  BucketSpec sync_spec{"orgd_sync", "orgd secret sync: keyed digests of pushed values, rotations"};
  sync_spec.replicas = parts_.config->nats.replicas;
  auto vault_bucket = KvBucket::open(js, vault_spec);
  if (!vault_bucket) return vault_bucket.error();
  auto sync_bucket = KvBucket::open(js, sync_spec);
  if (!sync_bucket) return sync_bucket.error();
  if (!service()) {
    std::shared_ptr<KvBucket> vault_kv = std::move(vault_bucket.value());
    const SecretSource source(parts_.environment);
    auto key = secrets::load_master_key(parts_.config->secrets, source, *vault_kv,
                                        parts_.kdf_cost);
    if (!key) return permanent(key.error());
    secrets::MasterKey backup_key = key.value().clone();
    auto vault = secrets::SecretVault::open(vault_kv, std::move(key.value()), std::nullopt,
                                            *parts_.clock);
    if (!vault) return permanent(vault.error());
    std::shared_ptr<secrets::SecretVault> shared_vault = std::move(vault.value());
    secrets::SecretsServiceOptions options;
    options.prefix = parts_.prefix;
    options.replica_id = parts_.replica_id;
    options.backup_kdf_cost = parts_.kdf_cost;
    auto service = std::make_shared<secrets::SecretsService>(
        *parts_.config, shared_vault, std::move(backup_key), *sync_bucket.value(), std::move(providers), *parts_.events,
        *parts_.metrics, *parts_.clock, parts_.is_leader, options);
    if (parts_.repo_secrets) {
      parts_.repo_secrets->set(std::make_shared<secrets::VaultRepoSecrets>(
          shared_vault, secret_names_by_repo(*parts_.config)));
    }
    {
      std::lock_guard lock(mutex_);
      vault_bucket_ = vault_kv;
      sync_bucket_ = std::move(sync_bucket.value());
      service_ = service;
    }
    for (const auto& problem : service->start()) log->warn("{}", problem);
    log->info("vault open (key {}), {} rotation policies, {} sources", shared_vault->key_id(),
              parts_.config->secrets.rotation.size(), parts_.config->secrets.sources.size());
  }
  for (CommandIntake* intake : {sync_commands_.get(), rotate_commands_.get()}) {
    if (auto started = intake->start(connection, js); !started) return started.error();
  }
  return Ok{};
}

void SecretsApp::stop() {
  for (CommandIntake* intake : {sync_commands_.get(), rotate_commands_.get()}) {
    if (intake != nullptr) intake->stop();
  }
  if (auto service = this->service()) service->stop();
}

}  // namespace orgd
