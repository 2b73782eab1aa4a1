#pragma once

// The `github` provider: its settings, validated at load (so by --check-config), and its health
// probe (GET /rate_limit: credentials and rate-limit budget). It offers no deploy or secret
// targets yet: a target naming it is refused by the provider set with file:line ("has no
// deploy targets") until GitHub deploys and Actions secret targets are built on it.

#include <memory>
#include <string>

#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/github/github_settings.hpp"
#include "plugins/github/health_probe.hpp"

namespace orgd::github {

class GithubProvider final : public Provider {
 public:
  // The HTTP client and the auth are made on first use, from `services`.
  GithubProvider(Settings settings, const ProviderServices& services);

  const Settings& settings() const { return settings_; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.health_probe = true;
    return c;
  }
  HealthProbe* health_probe() override { return &probe_; }

 private:
  Settings settings_;
  GithubHealthProbe probe_;
};

// The registry's factory for type `github`; `owner` defaults to the services' org.
std::unique_ptr<Provider> make_github_provider(const ProviderConfig& config,
                                               const ProviderServices& services,
                                               const std::string& source_file);

}  // namespace orgd::github

namespace orgd {
using github::make_github_provider;
}  // namespace orgd
