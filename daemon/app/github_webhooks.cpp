#include "daemon/app/github_webhooks.hpp"

#include <algorithm>
#include <set>

#include "daemon/core/logging.hpp"
#include "daemon/core/secret_source.hpp"
#include "plugins/github/github_settings.hpp"

namespace orgd {

std::unique_ptr<GithubWebhooks> GithubWebhooks::create(const Config& config, const Environment& env,
                                                       NatsConnection& nats,
                                                       MetricsRegistry& metrics) {
  const auto log = logging::get("http");
  const SecretSource source{env};
  WebhookIntakeSettings settings;
  std::chrono::seconds dedup_window{0};
  std::set<std::string> variables_read;
  bool any = false;
  for (const auto& [name, provider] : config.providers) {
    if (provider.type != "github") continue;
    any = true;
    const github::Settings parsed = github::parse_settings(provider, config.source, config.org);
    dedup_window =
        std::max(dedup_window,
                 std::chrono::duration_cast<std::chrono::seconds>(parsed.webhook_dedup_window));
    // Providers sharing a variable share a secret: checked once.
    if (!variables_read.insert(parsed.webhook_secret_env).second) continue;
    auto secret = source.from_env(parsed.webhook_secret_env);
    if (!secret) {
      log->warn("provider {}: {}: webhook deliveries signed with its secret are refused", name,
                secret.error().message);
      continue;
    }
    settings.secrets.push_back({name, std::move(secret).value()});
  }
  if (!any) return nullptr;
  if (settings.secrets.empty()) {
    log->warn("no github provider has a webhook secret: POST {} refuses every delivery",
              kGithubWebhookPath);
  }
  return std::make_unique<GithubWebhooks>(std::move(settings), dedup_window, nats, metrics);
}

GithubWebhooks::GithubWebhooks(WebhookIntakeSettings settings, std::chrono::seconds dedup_window,
                               NatsConnection& nats, MetricsRegistry& metrics)
    : dedup_window_(dedup_window),
      sink_(nats, kGithubEventsStream),
      intake_(std::move(settings), sink_, metrics) {}

StreamSpec GithubWebhooks::stream(int replicas) const {
  return github_events_stream(dedup_window_, replicas);
}

void GithubWebhooks::configure_http(HttpServerSettings& settings) const {
  settings.path_body_limits[kGithubWebhookPath] = kGithubWebhookMaxBody;
}

}  // namespace orgd
