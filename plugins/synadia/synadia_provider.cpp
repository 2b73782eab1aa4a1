#include "plugins/synadia/synadia_provider.hpp"

#include <mutex>

namespace orgd::synadia {

namespace {

Secret bearer(std::string_view token) {
  std::string text;
  // Reserved up front: a reallocation would leave an unwiped copy behind.
  text.reserve(7 + token.size());
  text.append("Bearer ").append(token);
  return Secret::take(std::move(text));
}

}  // namespace

// The token's Authorization header, read once, on first use.
struct SynadiaProvider::Token {
  std::string env;
  std::shared_ptr<const SecretSource> source;
  std::mutex mutex;  // guards header
  std::shared_ptr<const Secret> header;

  Result<std::shared_ptr<const Secret>> get() {
    std::lock_guard lock(mutex);
    if (header) return header;
    const SecretSource fallback{Environment{}};
    auto token = (source ? *source : fallback).from_env(env);
    if (!token) {
      return permanent(Error{token.error().code, "Synadia API token: " + token.error().message});
    }
    header = std::make_shared<const Secret>(bearer(token.value().expose()));
    return header;
  }
};

HttpClientOptions http_client_options(const Settings& settings) {
  HttpClientOptions options;
  options.provider = settings.name;
  options.ca_file = settings.ca_file;
  options.rate_limit_headers = RateLimitHeaders::none;
  return options;
}

SynadiaProvider::SynadiaProvider(Settings settings, const ProviderServices& services)
    : Provider(settings.name, "synadia"),
      settings_(settings),
      token_(std::make_shared<Token>()),
      api_(std::make_shared<SynadiaApi>(
          settings,
          [settings, services]() { return services.make_http(http_client_options(settings)); },
          [token = token_] { return token->get(); }, services.clock)),
      last_(std::make_shared<LastIssued>()),
      issuer_(api_, last_),
      probe_(
          api_,
          [settings, secrets = services.secrets]() -> std::optional<Result<Secret>> {
            const SecretSource fallback{Environment{}};
            const SecretSource& source = secrets ? *secrets : fallback;
            if (!settings.creds_env.empty()) return source.from_env(settings.creds_env);
            if (!settings.creds_file.empty()) return source.from_file(settings.creds_file);
            return std::nullopt;
          },
          last_) {
  token_->env = settings_.token_env;
  token_->source = services.secrets;
}

Capabilities SynadiaProvider::capabilities() const {
  return {.credential_issuer = true, .health_probe = true};
}

std::unique_ptr<Provider> make_synadia_provider(const ProviderConfig& config,
                                                const ProviderServices& services,
                                                const std::string& source_file) {
  return std::make_unique<SynadiaProvider>(parse_settings(config, source_file), services);
}

}  // namespace orgd::synadia
