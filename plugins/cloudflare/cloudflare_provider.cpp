#include "plugins/cloudflare/cloudflare_provider.hpp"

#include <fmt/format.h>

#include <cctype>

#include "daemon/core/config.hpp"
#include "plugins/cloudflare/containers_deploys.hpp"
#include "plugins/cloudflare/r2_store.hpp"
#include "plugins/cloudflare/worker_secrets.hpp"
#include "plugins/cloudflare/workers_deploys.hpp"

namespace orgd::cloudflare {

namespace {

Secret bearer(std::string_view token) {
  std::string text;
  // Reserved up front: a reallocation would leave an unwiped copy behind.
  text.reserve(7 + token.size());
  text.append("Bearer ").append(token);
  return Secret::take(std::move(text));
}

// The provider's one HTTP client, made when the first request needs it.
class LazyTransport final : public HttpTransport {
 public:
  explicit LazyTransport(std::shared_ptr<RestClient> rest) : rest_(std::move(rest)) {}
  Result<HttpResponse> send(HttpRequest request) override {
    auto transport = rest_->transport();
    if (!transport) return transport.error();
    return transport.value()->send(std::move(request));
  }

 private:
  std::shared_ptr<RestClient> rest_;
};

}  // namespace

bool valid_bucket_name(const std::string& name) {
  if (name.size() < 3 || name.size() > 63) return false;
  for (const unsigned char c : name) {
    if (!(std::islower(c) || std::isdigit(c) || c == '-')) return false;
  }
  return name.front() != '-' && name.back() != '-';
}

// The token read once, on first use: its value (R2 derives its S3 key from it) and its
// Authorization header.
struct CloudflareProvider::Token {
  std::string env;
  std::shared_ptr<const SecretSource> source;
  std::mutex mutex;  // guards value, header
  std::shared_ptr<const Secret> value;
  std::shared_ptr<const Secret> header;

  Result<Ok> load() {
    if (value) return Ok{};
    const SecretSource fallback{Environment{}};
    auto token = (source ? *source : fallback).from_env(env);
    if (!token) {
      return permanent(Error{token.error().code, "Cloudflare API token: " + token.error().message});
    }
    header = std::make_shared<const Secret>(bearer(token.value().expose()));
    value = std::make_shared<const Secret>(std::move(token).value());
    return Ok{};
  }
  Result<std::shared_ptr<const Secret>> get(bool as_header) {
    std::lock_guard lock(mutex);
    if (auto loaded = load(); !loaded) return loaded.error();
    return as_header ? header : value;
  }
};

HttpClientOptions http_client_options(const Settings& settings) {
  HttpClientOptions options;
  options.provider = settings.name;
  options.ca_file = settings.ca_file;
  options.rate_limit_headers = RateLimitHeaders::cloudflare;
  return options;
}

CloudflareProvider::CloudflareProvider(Settings settings, const ProviderServices& services)
    : Provider(settings.name, "cloudflare"),
      settings_(settings),
      services_(services),
      token_(std::make_shared<Token>()),
      rest_(std::make_shared<RestClient>(
          settings,
          [settings, services]() { return services.make_http(http_client_options(settings)); },
          [token = token_] { return token->get(/*as_header=*/true); }, services.clock)),
      probe_(rest_) {
  token_->env = settings_.token_env;
  token_->source = services.secrets;
}

Capabilities CloudflareProvider::capabilities() const {
  return {.deploy_target = true, .secret_target = true, .health_probe = true, .object_store = true};
}

std::unique_ptr<DeployTarget> CloudflareProvider::make_deploy_target(
    const DeployTargetConfig& target, const std::string& source_file) {
  auto parsed = parse_deploy_target(target, source_file);
  if (parsed.containers) return std::make_unique<ContainersDeployTarget>(rest_, parsed.app);
  return std::make_unique<WorkersDeployTarget>(rest_, parsed.workers);
}

std::unique_ptr<SecretTarget> CloudflareProvider::make_secret_target(
    const SecretTargetConfig& target, const std::string& source_file) {
  return std::make_unique<WorkerSecretTarget>(rest_, parse_secret_script(target, source_file));
}

std::unique_ptr<ObjectStore> CloudflareProvider::make_object_store(const ObjectStoreConfig& config,
                                                                   const std::string& source_file) {
  const auto problem = [&](const std::string& key, const std::string& text) {
    return ConfigError(
        {fmt::format("{}:{}: secrets.backup.r2.{}: {}", source_file, config.line, key, text)});
  };
  if (!valid_bucket_name(config.bucket)) {
    throw problem("bucket",
                  "an R2 bucket name is 3 to 63 lower-case letters, digits and hyphens, "
                  "beginning and ending with a letter or digit");
  }
  if (!config.prefix.empty() && config.prefix.front() == '/') {
    throw problem("prefix", "a key prefix does not begin with '/'");
  }
  if (config.prefix.size() > 512) throw problem("prefix", "at most 512 bytes");
  R2Settings r2;
  r2.account_id = settings_.account_id;
  r2.api_url = settings_.api_url;
  r2.s3_url = settings_.r2_url;
  r2.jurisdiction = settings_.r2_jurisdiction;
  r2.store = config;
  // The transport is made on the first call (a ca_file that cannot be read fails that call).
  auto transport = std::make_shared<LazyTransport>(rest_);
  return make_r2_store(
      std::move(r2), std::move(transport),
      [token = token_] { return token->get(/*as_header=*/false); }, services_.clock);
}

std::unique_ptr<Provider> make_cloudflare_provider(const ProviderConfig& config,
                                                   const ProviderServices& services,
                                                   const std::string& source_file) {
  return std::make_unique<CloudflareProvider>(parse_settings(config, source_file), services);
}

}  // namespace orgd::cloudflare
