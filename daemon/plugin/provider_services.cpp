#include "daemon/plugin/provider_services.hpp"

#include <filesystem>

#include "daemon/core/logging.hpp"

namespace orgd {

Result<std::shared_ptr<HttpTransport>> ProviderServices::make_http(
    HttpClientOptions options) const {
  if (!http) return permanent(unavailable("provider " + name + ": this orgd makes no HTTP calls"));
  options.provider = name;
  return http(options);
}

ProviderServices services_for(const ProviderConfig& config, const ProviderEnvironment& env) {
  ProviderServices services;
  services.name = config.name;
  services.type = config.type;
  services.org = env.org;
  services.clock = env.clock ? env.clock : std::make_shared<SystemClock>();
  services.secrets = std::make_shared<SecretSource>(env.environment);
  services.environment = env.environment;
  services.http = env.http;
  services.nats = env.nats ? env.nats : std::make_shared<UnconnectedNatsRequester>();
  services.repo_secrets = env.repo_secrets;
  services.log = logging::get("provider." + config.name);
  services.data_dir = env.data_dir;
  services.subject_prefix = !env.subject_prefix.empty() ? env.subject_prefix
                            : env.org.empty()            ? std::string{}
                                                         : "org." + env.org;
  if (!env.data_dir.empty()) {
    services.state_dir = (std::filesystem::path{env.data_dir} / config.type).string();
  }
  return services;
}

}  // namespace orgd
