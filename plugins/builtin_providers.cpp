// The built-in providers, above both the plugin SPI and the providers: daemon/plugin/ may not
// depend on plugins/, which depends on it, so ProviderRegistry's default constructor lives here.
#include <utility>
#include <vector>

#include "daemon/plugin/registry.hpp"
#include "plugins/cloudflare/cloudflare_provider.hpp"
#include "plugins/exec/exec_provider.hpp"
#include "plugins/github/github_provider.hpp"
#include "plugins/local/local_provider.hpp"
#include "plugins/remote/remote_provider.hpp"
#include "plugins/synadia/synadia_provider.hpp"

namespace orgd {

namespace {

// The one list of built-in providers.
std::vector<std::pair<std::string, ProviderRegistry::Factory>> builtin_factories() {
  return {
      {"local", make_local_provider},
      {"exec", make_exec_provider},
      {"github", make_github_provider},
      {"cloudflare", make_cloudflare_provider},
      {"synadia", make_synadia_provider},
      {"remote", make_remote_provider},
  };
}

}  // namespace

ProviderRegistry::ProviderRegistry() {
  for (auto& [type, factory] : builtin_factories()) add_factory(type, std::move(factory));
}

}  // namespace orgd
