#include "plugins/github/github_provider.hpp"

namespace orgd::github {

std::unique_ptr<Provider> make_github_provider(const ProviderConfig& config,
                                               const ProviderServices&,
                                               const std::string& source_file) {
  return std::make_unique<GithubProvider>(
      parse_settings(config, source_file, /*default_owner=*/""));
}

}  // namespace orgd::github
