#pragma once

// The `remote` provider (DESIGN.md §8): a provider served by another process, in any language,
// over P.plugin.<name>.<op> (proto/orgd/v1/plugin.proto, docs/remote-providers.md). Every
// capability forwards to the process: deploy targets (deploy.start/poll/cancel/advance/
// rollback), secret targets (secret.list/put/delete, values sealed to the provider's announced
// key), a credential issuer (issue/revoke, values sealed back to orgd's key) and a health probe
// (describe, then health). Capabilities are declared in the settings, because the config is
// checked before orgd is connected; the provider's describe must announce them when it first
// answers. Target settings are kept as written and sent with every call; the provider checks
// them (validate) before the target's first use.

#include <memory>
#include <mutex>
#include <string>

#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/remote/remote_client.hpp"
#include "plugins/remote/remote_settings.hpp"

namespace orgd::remote {

// A target's settings, asked of the provider (validate) once before the first use that needs
// them and remembered when accepted; refused settings fail the call, permanently.
class TargetValidation {
 public:
  TargetValidation(std::shared_ptr<RemoteClient> client, v1::PluginValidateRequest request,
                   std::string what);
  Result<Ok> ensure(RemoteClient::SteadyTime deadline);

 private:
  std::shared_ptr<RemoteClient> client_;
  v1::PluginValidateRequest request_;
  std::string what_;  // "deploy target api/production", for messages
  std::mutex mutex_;  // guards accepted_
  bool accepted_ = false;
};

class RemoteDeployTarget final : public DeployTarget {
 public:
  RemoteDeployTarget(std::shared_ptr<RemoteClient> client, const DeployTargetConfig& target,
                     google::protobuf::Struct settings);

  Result<DeployProgress> start(const DeployContext& context, const LogSink& log) override;
  Result<DeployProgress> poll(const DeployContext& context) override;
  bool can_cancel() const override { return true; }
  Result<DeployProgress> cancel(const DeployContext& context) override;
  Result<DeployProgress> advance(const DeployContext& context) override;
  Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) override;
  bool can_rollback() const override { return true; }
  // A call never outlasts the provider's timeout.
  std::optional<Duration> max_call_duration() const override { return client_->settings().timeout; }

 private:
  Result<DeployProgress> deploy_op(const std::string& op, const DeployContext& context,
                                   bool needs_handle);

  std::shared_ptr<RemoteClient> client_;
  google::protobuf::Struct settings_;
  TargetValidation validation_;
};

class RemoteSecretTarget final : public SecretTarget {
 public:
  RemoteSecretTarget(std::shared_ptr<RemoteClient> client, const SecretTargetConfig& target,
                     google::protobuf::Struct settings);

  std::string describe() const override { return description_; }
  Result<std::vector<SecretInfo>> list() override;
  Result<Ok> put(const std::string& name, const Secret& value) override;
  Result<Ok> remove(const std::string& name) override;

 private:
  std::shared_ptr<RemoteClient> client_;
  v1::PluginSecretTarget ref_;
  std::string description_;
  TargetValidation validation_;
};

class RemoteCredentialIssuer final : public CredentialIssuer {
 public:
  explicit RemoteCredentialIssuer(std::shared_ptr<RemoteClient> client)
      : client_(std::move(client)) {}
  Result<IssuedCredential> issue(const std::string& name) override;
  Result<Ok> revoke(const std::string& id) override;

 private:
  std::shared_ptr<RemoteClient> client_;
};

// describe (the capabilities match, the key is sound), then health.
class RemoteHealthProbe final : public HealthProbe {
 public:
  explicit RemoteHealthProbe(std::shared_ptr<RemoteClient> client) : client_(std::move(client)) {}
  Result<ProbeResult> probe() override;

 private:
  std::shared_ptr<RemoteClient> client_;
};

class RemoteProvider final : public Provider {
 public:
  RemoteProvider(Settings settings, const ProviderServices& services);

  const Settings& settings() const { return client_->settings(); }
  const std::shared_ptr<RemoteClient>& client() const { return client_; }
  Capabilities capabilities() const override { return client_->settings().capabilities; }
  std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                   const std::string& source_file) override;
  std::unique_ptr<SecretTarget> make_secret_target(const SecretTargetConfig& target,
                                                   const std::string& source_file) override;
  CredentialIssuer* credential_issuer() override {
    return client_->settings().capabilities.credential_issuer ? &issuer_ : nullptr;
  }
  HealthProbe* health_probe() override {
    return client_->settings().capabilities.health_probe ? &probe_ : nullptr;
  }

 private:
  std::shared_ptr<RemoteClient> client_;
  RemoteCredentialIssuer issuer_;
  RemoteHealthProbe probe_;
};

// The registry's factory for type `remote`.
std::unique_ptr<Provider> make_remote_provider(const ProviderConfig& config,
                                               const ProviderServices& services,
                                               const std::string& source_file);

}  // namespace orgd::remote

namespace orgd {
using remote::make_remote_provider;
}  // namespace orgd
