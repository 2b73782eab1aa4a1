#pragma once

// The daemon's POST /webhooks/github: an intake built from the configured github providers
// (their webhook secrets read through SecretSource, the longest of their dedup windows), which
// stores deliveries in GITHUB_EVENTS over the daemon's NATS connection.

#include <chrono>
#include <memory>

#include "daemon/bus/nats_connection.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/http/http_server.hpp"
#include "daemon/http/webhook_intake.hpp"
#include "daemon/http/webhook_jetstream.hpp"

namespace orgd {

class GithubWebhooks {
 public:
  // Null when no provider has type github. Throws ConfigError for invalid provider settings. A
  // provider whose webhook_secret_env is unset is logged (its deliveries are refused with 401),
  // not fatal: it may be configured for API calls only.
  static std::unique_ptr<GithubWebhooks> create(const Config& config, const Environment& env,
                                                NatsConnection& nats, MetricsRegistry& metrics);

  // GITHUB_EVENTS, for the connection supervisor to put in place with orgd's other streams.
  StreamSpec stream(int replicas) const;
  // The webhook path's own body limit (GitHub's 25 MB).
  void configure_http(HttpServerSettings& settings) const;
  WebhookIntake& intake() { return intake_; }

  GithubWebhooks(WebhookIntakeSettings settings, std::chrono::seconds dedup_window,
                 NatsConnection& nats, MetricsRegistry& metrics);

 private:
  std::chrono::seconds dedup_window_;
  JetStreamWebhookSink sink_;
  WebhookIntake intake_;
};

}  // namespace orgd
