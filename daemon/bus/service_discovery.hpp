#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "daemon/core/clock.hpp"

namespace orgd {

// One endpoint as ADR-32 describes it, with its live stats.
struct ServiceEndpoint {
  std::string name;
  std::string subject;
  std::string queue_group;
  std::uint64_t num_requests = 0;
  std::uint64_t num_errors = 0;
  std::string last_error;
  std::int64_t processing_time_ns = 0;
};

struct ServiceIdentity {
  std::string name = "orgd";
  std::string id;  // unique per process
  std::string version;
  std::string description;
  std::map<std::string, std::string> metadata;
};

// NATS service discovery (ADR-32): answers $SRV.PING|INFO|STATS, $SRV.<verb>.<name> and
// $SRV.<verb>.<name>.<id>, so any NATS client's service discovery lists orgd. nats.c 3.4.1 has
// no micro API, so the protocol is implemented here.
class ServiceDiscovery {
 public:
  using EndpointSource = std::function<std::vector<ServiceEndpoint>()>;

  ServiceDiscovery(ServiceIdentity identity, EndpointSource endpoints, Clock::time_point started);

  // The nine subjects to subscribe to (no queue group: every instance answers).
  std::vector<std::string> subjects() const;

  // The JSON reply for a request on `subject`; empty when the subject is not ours.
  std::string respond(const std::string& subject) const;

  std::string ping_json() const;
  std::string info_json() const;
  std::string stats_json() const;

  const ServiceIdentity& identity() const { return identity_; }

  // A random 22-character id in the alphabet NATS uses for ids.
  static std::string new_id();

 private:
  ServiceIdentity identity_;
  EndpointSource endpoints_;
  Clock::time_point started_;
};

}  // namespace orgd
