#pragma once

#include <cstdint>
#include <string>

#include "daemon/http/http_server.hpp"

namespace orgd {

class MetricsRegistry;
class WebhookIntake;

// What /readyz tells: the connection's readiness, in the words of its JSON.
struct ProbeReadiness {
  bool ready = false;
  std::string nats = "connecting";  // the connection's state
  bool streams = false;
  bool subscriptions = false;
  std::string reason;  // why not ready; empty when ready
  std::uint64_t connect_attempts = 0;
};

// What the routes read from the subsystems behind them.
class RouteSources {
 public:
  virtual ~RouteSources() = default;
  virtual ProbeReadiness readiness() const = 0;
  // Before /metrics renders: the gauges read at scrape time.
  virtual void refresh_gauges() = 0;
  // The org's status as JSON (/status), made page by page as it is sent: the same document as
  // encoding the whole OrgStatus, followed by a newline.
  virtual HttpServerResponse::BodyStream status_stream() const = 0;
};

// orgd's HTTP paths: /healthz, /readyz, /metrics and /status, GET or HEAD, and
// POST /webhooks/github when a github provider is configured (`webhooks`; 404 otherwise). Runs
// on the HTTP server's io threads, so nothing here blocks but a webhook waiting for its
// bounded JetStream ack (webhook_intake.hpp).
class HttpRoutes {
 public:
  HttpRoutes(RouteSources& sources, const MetricsRegistry& metrics,
             WebhookIntake* webhooks = nullptr);

  HttpServerResponse handle(const HttpServerRequest& request) const;

 private:
  RouteSources& sources_;
  const MetricsRegistry& metrics_;
  WebhookIntake* webhooks_;
};

}  // namespace orgd
