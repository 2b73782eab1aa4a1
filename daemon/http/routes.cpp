#include "daemon/http/routes.hpp"

#include <nlohmann/json.hpp>

#include "daemon/core/metrics.hpp"
#include "daemon/http/webhook_intake.hpp"

namespace orgd {

HttpRoutes::HttpRoutes(RouteSources& sources, const MetricsRegistry& metrics,
                       WebhookIntake* webhooks)
    : sources_(sources), metrics_(metrics), webhooks_(webhooks) {}

HttpServerResponse HttpRoutes::handle(const HttpServerRequest& request) const {
  std::string path = request.target.substr(0, request.target.find('?'));
  if (path == kGithubWebhookPath) {
    if (webhooks_ == nullptr) {
      return {404, "text/plain; charset=utf-8", "no github provider is configured\n", {}};
    }
    return webhooks_->handle(request);
  }
  if (request.method != "GET" && request.method != "HEAD") {
    return {405, "text/plain; charset=utf-8", "method not allowed\n", {{"Allow", "GET, HEAD"}}};
  }
  if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n", {}};
  if (path == "/readyz") {
    const ProbeReadiness r = sources_.readiness();
    nlohmann::json j = {{"ready", r.ready},
                        {"nats", r.nats},
                        {"streams", r.streams ? "ready" : "not ready"},
                        {"subscriptions", r.subscriptions ? "active" : "not yet"},
                        {"nats_connect_attempts", r.connect_attempts}};
    if (!r.ready) j["reason"] = r.reason;
    return {r.ready ? 200 : 503, "application/json", j.dump() + "\n", {}};
  }
  if (path == "/metrics") {
    sources_.refresh_gauges();
    return {200, "text/plain; version=0.0.4; charset=utf-8", metrics_.render(), {}};
  }
  if (path == "/status") {
    HttpServerResponse response{200, "application/json", {}, {}};
    response.stream = sources_.status_stream();
    return response;
  }
  return {404, "text/plain; charset=utf-8", "not found\n", {}};
}

}  // namespace orgd
