#include "plugins/github/github_provider.hpp"

#include "plugins/github/auth.hpp"

namespace orgd::github {

GithubProvider::GithubProvider(Settings settings, const ProviderServices& services)
    : Provider(settings.name, "github"),
      settings_(settings),
      probe_(
          settings,
          [settings, services]() -> Result<GithubHealthProbe::Client> {
            auto transport = services.make_http(http_client_options(settings));
            if (!transport) return transport.error();
            const SecretSource& secrets =
                services.secrets ? *services.secrets : SecretSource(Environment{});
            auto auth = make_auth(settings, secrets, transport.value(), services.clock);
            if (!auth) return auth.error();
            return GithubHealthProbe::Client{transport.value(), std::move(auth).value()};
          },
          services.clock) {}

std::unique_ptr<Provider> make_github_provider(const ProviderConfig& config,
                                               const ProviderServices& services,
                                               const std::string& source_file) {
  return std::make_unique<GithubProvider>(
      parse_settings(config, source_file, /*default_owner=*/services.org), services);
}

}  // namespace orgd::github
