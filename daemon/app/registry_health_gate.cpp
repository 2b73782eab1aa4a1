#include "daemon/app/registry_health_gate.hpp"

#include "daemon/core/timestamps.hpp"
#include "orgd/v1/health.pb.h"

namespace orgd {

deploy::GateCheck RegistryHealthGate::check(const std::string& repo,
                                            Clock::time_point since) const {
  deploy::GateCheck check;
  auto status = health_.repo_status(repo);
  if (!status || status.value().services().empty()) {
    check.no_services = true;
    return check;
  }
  std::string waiting;
  for (const auto& service : status.value().services()) {
    const bool fresh = service.has_last_report_at() &&
                       from_timestamp(service.last_report_at()) > since;
    if (service.status() == v1::Health::ok && !service.stale() && fresh) continue;
    check.unhealthy.push_back(service.name());
    if (!waiting.empty()) waiting += ", ";
    waiting += service.name() + " " +
               (fresh ? v1::Health::Status_Name(service.status()) : "no report since deploy");
    if (service.stale()) waiting += " (stale)";
  }
  check.healthy = waiting.empty();
  check.detail = waiting;
  return check;
}

}  // namespace orgd
