#include "plugins/github/github_provider.hpp"

#include "daemon/core/errors.hpp"

namespace orgd::github {

std::unique_ptr<DeployTarget> GithubProvider::make_deploy_target(const DeployTargetConfig& target,
                                                                 const std::string& source_file) {
  std::string where = source_file;
  if (target.line > 0) where += ":" + std::to_string(target.line);
  throw ConfigError({where + ": deploy." + target.env + ": provider " + name() +
                     ": github deploy targets: not built yet"});
}

std::unique_ptr<Provider> make_github_provider(const ProviderConfig& config,
                                               const ProviderEnvironment&,
                                               const std::string& source_file) {
  return std::make_unique<GithubProvider>(
      parse_settings(config, source_file, /*default_owner=*/""));
}

}  // namespace orgd::github
