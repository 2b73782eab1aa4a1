#pragma once

// The `github` provider: its settings, validated at load (so by --check-config); deploy targets
// (Actions workflows with GitHub Deployments: workflow_deploys.hpp); secret targets (Actions
// secrets of a repository, an environment or the organization: actions_secrets.hpp); and its
// health probe (GET /rate_limit: credentials and rate-limit budget). One REST client (HTTPS
// client and credential) serves every target of the provider.

#include <cstdint>
#include <memory>
#include <string>

#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/github/github_settings.hpp"
#include "plugins/github/health_probe.hpp"
#include "plugins/github/rest_client.hpp"

namespace orgd::github {

class GithubProvider final : public Provider {
 public:
  // The HTTP client and the auth are made on first use, from `services`.
  GithubProvider(Settings settings, const ProviderServices& services);

  const Settings& settings() const { return settings_; }
  Capabilities capabilities() const override {
    return {.deploy_target = true, .secret_target = true, .health_probe = true};
  }
  std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                   const std::string& source_file) override;
  std::unique_ptr<SecretTarget> make_secret_target(const SecretTargetConfig& target,
                                                   const std::string& source_file) override;
  HealthProbe* health_probe() override { return &probe_; }
  // What a deploy step following run `run_id` is watched by (a workflow_run webhook's news).
  static std::string run_watch_key(std::int64_t run_id);
  const std::shared_ptr<RestClient>& rest() const { return rest_; }

 private:
  Settings settings_;
  std::shared_ptr<RestClient> rest_;
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
