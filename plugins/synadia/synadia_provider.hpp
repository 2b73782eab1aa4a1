#pragma once

// The `synadia` provider (docs/synadia.md): Synadia Cloud's control plane. It issues NATS user
// creds for rotation (credential_issuer.hpp) and probes its token, its account's quotas and the
// managed NATS (health_probe.hpp). One API client (HTTPS client, token, resolved ids) serves
// both.

#include <memory>
#include <string>

#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/provider_services.hpp"
#include "plugins/synadia/credential_issuer.hpp"
#include "plugins/synadia/health_probe.hpp"
#include "plugins/synadia/synadia_api.hpp"
#include "plugins/synadia/synadia_settings.hpp"

namespace orgd::synadia {

// What the provider's HTTP client is built with: its name on metrics and logs, its extra CA.
// No rate-limit headers are documented; a 429's Retry-After is honoured whatever the kind.
HttpClientOptions http_client_options(const Settings& settings);

class SynadiaProvider final : public Provider {
 public:
  // The HTTP client and the token are made on first use, from `services`.
  SynadiaProvider(Settings settings, const ProviderServices& services);

  const Settings& settings() const { return settings_; }
  Capabilities capabilities() const override;
  CredentialIssuer* credential_issuer() override { return &issuer_; }
  HealthProbe* health_probe() override { return &probe_; }
  const std::shared_ptr<SynadiaApi>& api() const { return api_; }
  SynadiaHealthProbe& probe() { return probe_; }

 private:
  struct Token;
  Settings settings_;
  std::shared_ptr<Token> token_;
  std::shared_ptr<SynadiaApi> api_;
  std::shared_ptr<LastIssued> last_;
  SynadiaCredentialIssuer issuer_;
  SynadiaHealthProbe probe_;
};

// The registry's factory for type `synadia`.
std::unique_ptr<Provider> make_synadia_provider(const ProviderConfig& config,
                                                const ProviderServices& services,
                                                const std::string& source_file);

}  // namespace orgd::synadia

namespace orgd {
using synadia::make_synadia_provider;
}  // namespace orgd
