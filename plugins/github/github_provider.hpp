#pragma once

// The `github` provider: for now its settings, validated at load (so by --check-config), for the
// webhook intake and the auth to use. It offers no capability yet: a deploy or secret target
// naming it is refused by the provider set with file:line ("has no deploy targets") until
// GitHub deploys and Actions secret targets are built on it.

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
  Capabilities capabilities() const override { return {}; }

 private:
  Settings settings_;
};

// The registry's factory for type `github`. The services carry no org name, so `owner` stays as
// written (empty when absent: whoever knows the org fills it in).
std::unique_ptr<Provider> make_github_provider(const ProviderConfig& config,
                                               const ProviderServices& services,
                                               const std::string& source_file);

}  // namespace orgd::github

namespace orgd {
using github::make_github_provider;
}  // namespace orgd
