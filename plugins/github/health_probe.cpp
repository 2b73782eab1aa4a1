#include "plugins/github/health_probe.hpp"

#include "daemon/net/https_client.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "daemon/core/timestamps.hpp"

namespace orgd::github {

namespace {

std::optional<long> number_at(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return std::nullopt;
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<long>();
}

ProbeResult failed(std::string why) {
  ProbeResult r;
  r.ok = false;
  r.detail = why;
  r.last_error = std::move(why);
  return r;
}

}  // namespace

GithubHealthProbe::GithubHealthProbe(Settings settings, ClientFactory make_client,
                                     std::shared_ptr<const Clock> clock)
    : settings_(std::move(settings)),
      make_client_(std::move(make_client)),
      clock_(clock ? std::move(clock) : std::make_shared<SystemClock>()) {}

Result<ProbeResult> GithubHealthProbe::probe() {
  Client client;
  auto result = probe_with(client);
  // The client's own view: its circuit, and the last call of any target that failed.
  if (result && client.transport) {
    if (const auto status = http_client_status(*client.transport)) {
      result.value().circuit = status->circuit;
      if (result.value().last_error.empty()) result.value().last_error = status->last_error;
    }
  }
  return result;
}

Result<ProbeResult> GithubHealthProbe::probe_with(Client& client) {
  {
    std::lock_guard lock(mutex_);
    if (!client_) {
      auto made = make_client_();
      if (!made) return failed(made.error().message);
      client_ = std::move(made).value();
    }
    client = *client_;
  }
  auto authorization = client.auth->authorization();
  if (!authorization) return failed("credentials: " + authorization.error().message);

  HttpRequest request;
  request.method = "GET";
  request.url = settings_.api_url + "/rate_limit";
  request.headers = {{"Accept", "application/vnd.github+json"},
                     {"X-GitHub-Api-Version", settings_.api_version}};
  request.authorization = std::move(authorization).value();
  auto sent = client.transport->send(std::move(request));
  if (!sent) return failed("GET /rate_limit: " + sent.error().message);
  const HttpResponse& response = sent.value();
  if (response.status == 401) client.auth->invalidate();
  if (response.status != 200) {
    ProbeResult r = failed(github_error("GET /rate_limit", response, clock_->now()).message);
    if (response.header("x-ratelimit-remaining") == "0") r.rate_limit_remaining = 0;
    return r;
  }
  const auto json = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* core = nullptr;
  if (json.is_object()) {
    const auto resources = json.find("resources");
    if (resources != json.end() && resources->is_object()) {
      const auto it = resources->find("core");
      if (it != resources->end() && it->is_object()) core = &*it;
    }
  }
  if (core == nullptr) return failed("GET /rate_limit: GitHub's answer has no resources.core");
  ProbeResult r;
  r.ok = true;
  r.rate_limit_limit = number_at(*core, "limit");
  r.rate_limit_remaining = number_at(*core, "remaining");
  if (const auto reset = number_at(*core, "reset")) {
    r.rate_limit_reset = Clock::time_point{std::chrono::seconds{*reset}};
  }
  r.detail = fmt::format(
      "credentials valid; core rate limit {}/{} remaining{}", r.rate_limit_remaining.value_or(-1),
      r.rate_limit_limit.value_or(-1),
      r.rate_limit_reset ? ", resets " + format_rfc3339(*r.rate_limit_reset) : std::string{});
  return r;
}

}  // namespace orgd::github
