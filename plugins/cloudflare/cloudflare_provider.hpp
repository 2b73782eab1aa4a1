#pragma once

// The `cloudflare` provider (docs/cloudflare.md): its settings, validated at load (so by
// --check-config); deploy targets (Workers versions and gradual deployments:
// workers_deploys.hpp; Containers rollouts: containers_deploys.hpp); secret targets (a
// Worker's secrets: worker_secrets.hpp); its health probe (token verify: health_probe.hpp); and
// R2 as an object store for the secrets engine's backups (r2_store.hpp). One REST client
// (HTTPS client, token, call count) serves every target of the provider.

#include <memory>
#include <mutex>
#include <string>

#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/provider_services.hpp"
#include "plugins/cloudflare/cloudflare_settings.hpp"
#include "plugins/cloudflare/health_probe.hpp"
#include "plugins/cloudflare/rest_client.hpp"

namespace orgd::cloudflare {

// What the provider's HTTP client is built with: Cloudflare's rate-limit headers, the
// provider's name on metrics and logs, its extra CA.
HttpClientOptions http_client_options(const Settings& settings);

class CloudflareProvider final : public Provider {
 public:
  // The HTTP client and the token are made on first use, from `services`.
  CloudflareProvider(Settings settings, const ProviderServices& services);

  const Settings& settings() const { return settings_; }
  Capabilities capabilities() const override;
  std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                   const std::string& source_file) override;
  std::unique_ptr<SecretTarget> make_secret_target(const SecretTargetConfig& target,
                                                   const std::string& source_file) override;
  std::unique_ptr<ObjectStore> make_object_store(const ObjectStoreConfig& config,
                                                 const std::string& source_file) override;
  HealthProbe* health_probe() override { return &probe_; }
  const std::shared_ptr<RestClient>& rest() const { return rest_; }

 private:
  struct Token;
  Settings settings_;
  ProviderServices services_;
  std::shared_ptr<Token> token_;
  std::shared_ptr<RestClient> rest_;
  CloudflareHealthProbe probe_;
};

// An R2 bucket name: 3 to 63 of a-z, 0-9 and '-', not beginning or ending with '-'.
bool valid_bucket_name(const std::string& name);

// The registry's factory for type `cloudflare`.
std::unique_ptr<Provider> make_cloudflare_provider(const ProviderConfig& config,
                                                   const ProviderServices& services,
                                                   const std::string& source_file);

}  // namespace orgd::cloudflare

namespace orgd {
using cloudflare::make_cloudflare_provider;
}  // namespace orgd
