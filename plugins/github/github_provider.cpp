#include "plugins/github/github_provider.hpp"

#include "plugins/github/actions_secrets.hpp"
#include "plugins/github/auth.hpp"
#include "plugins/github/workflow_deploys.hpp"

namespace orgd::github {

GithubProvider::GithubProvider(Settings settings, const ProviderServices& services)
    : Provider(settings.name, "github"),
      settings_(settings),
      rest_(std::make_shared<RestClient>(
          settings,
          [settings, services]() -> Result<RestClient::Client> {
            auto transport = services.make_http(http_client_options(settings));
            if (!transport) return transport.error();
            const SecretSource& secrets =
                services.secrets ? *services.secrets : SecretSource(Environment{});
            auto auth = make_auth(settings, secrets, transport.value(), services.clock);
            if (!auth) return auth.error();
            return RestClient::Client{transport.value(), std::move(auth).value()};
          },
          services.clock)),
      // The probe uses the targets' client, so what it reports (circuit, last error) is theirs.
      probe_(
          settings,
          [rest = rest_]() -> Result<GithubHealthProbe::Client> {
            auto client = rest->client();
            if (!client) return client.error();
            return GithubHealthProbe::Client{client.value().transport, client.value().auth};
          },
          services.clock) {}

std::unique_ptr<DeployTarget> GithubProvider::make_deploy_target(const DeployTargetConfig& target,
                                                                 const std::string& source_file) {
  // The target's repo at GitHub defaults to the orgd repo it deploys.
  return std::make_unique<WorkflowDeployTarget>(
      rest_, parse_workflow_target(target, source_file, settings_, target.repo));
}

std::unique_ptr<SecretTarget> GithubProvider::make_secret_target(const SecretTargetConfig& target,
                                                                 const std::string& source_file) {
  return std::make_unique<ActionsSecretTarget>(rest_,
                                               parse_secret_place(target, source_file, settings_));
}

std::string GithubProvider::run_watch_key(std::int64_t run_id) {
  return "run=" + std::to_string(run_id);
}

std::unique_ptr<Provider> make_github_provider(const ProviderConfig& config,
                                               const ProviderServices& services,
                                               const std::string& source_file) {
  return std::make_unique<GithubProvider>(
      parse_settings(config, source_file, /*default_owner=*/services.org), services);
}

}  // namespace orgd::github
