#pragma once

// The `github` provider on the current provider SPI: it validates its settings, so a config can
// name a github provider (its webhooks, and soon its secret targets), and refuses deploy
// targets until GitHub deploys are built.

#include <memory>
#include <string>

#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/github/github_settings.hpp"

namespace orgd::github {

class GithubProvider final : public Provider {
 public:
  explicit GithubProvider(Settings settings)
      : Provider(settings.name, "github"), settings_(std::move(settings)) {}

  const Settings& settings() const { return settings_; }

  // Throws ConfigError: "<file>:<line>: deploy.<env>: github deploy targets: not built yet".
  std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                   const std::string& source_file) override;

 private:
  Settings settings_;
};

// The registry's factory for type `github`. The SPI gives it no org name, so `owner` stays as
// written (empty when absent: whoever knows the org fills it in).
std::unique_ptr<Provider> make_github_provider(const ProviderConfig& config,
                                               const ProviderEnvironment& env,
                                               const std::string& source_file);

}  // namespace orgd::github

namespace orgd {
using github::make_github_provider;
}  // namespace orgd
