#pragma once

#include <string>

#include "daemon/core/clock.hpp"
#include "daemon/deploy/orchestrator.hpp"
#include "daemon/health/health_registry.hpp"

namespace orgd {

// The health gate's view of the health registry: every service of the repo (configured or
// reported) says ok, is not stale, and reported after the step's deploy ended.
class RegistryHealthGate final : public deploy::HealthGateSource {
 public:
  explicit RegistryHealthGate(const HealthRegistry& health) : health_(health) {}

  deploy::GateCheck check(const std::string& repo, Clock::time_point since) const override;

 private:
  const HealthRegistry& health_;
};

}  // namespace orgd
