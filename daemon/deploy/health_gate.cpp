#include "daemon/deploy/health_gate.hpp"

#include <fmt/format.h>

#include "daemon/core/duration.hpp"

namespace orgd::deploy {

namespace {

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

}  // namespace

HealthGate::HealthGate(const HealthGateConfig& config, Clock::time_point since,
                       std::string waiting_for, std::chrono::steady_clock::time_point now)
    : config_(config),
      since_(since),
      deadline_(now + config.timeout),
      waiting_for_(std::move(waiting_for)) {}

HealthGate::Verdict HealthGate::judge(const std::string& repo, const GateCheck& check,
                                      std::chrono::steady_clock::time_point now) {
  Verdict verdict;
  if (check.no_services) {
    verdict.passed = true;
    return verdict;
  }
  if (check.healthy) {
    if (!healthy_since_) healthy_since_ = now;
    if (now - *healthy_since_ >= config_.soak) {
      verdict.passed = true;
      return verdict;
    }
    verdict.waiting_for = "health: ok, holding for " + format_duration(config_.soak);
  } else {
    healthy_since_.reset();
    detail_ = check.detail;
    std::vector<std::string> names;
    for (const auto& service : check.unhealthy) names.push_back(repo + "/" + service);
    verdict.waiting_for = "health: " + (names.empty() ? (check.detail.empty() ? repo : check.detail)
                                                      : join_names(names));
  }
  if (now >= deadline_) {
    verdict.failed = fmt::format("health gate: not healthy within {}: {}",
                                 format_duration(config_.timeout), detail_);
  }
  return verdict;
}

}  // namespace orgd::deploy
