#include "daemon/bus/service_discovery.hpp"

#include <nlohmann/json.hpp>
#include <sodium.h>

#include "daemon/core/timestamps.hpp"

namespace orgd {
namespace {

using nlohmann::json;

json metadata_json(const std::map<std::string, std::string>& m) {
  json out = json::object();
  for (const auto& [k, v] : m) out[k] = v;
  return out;
}

}  // namespace

ServiceDiscovery::ServiceDiscovery(ServiceIdentity identity, EndpointSource endpoints,
                                   Clock::time_point started)
    : identity_(std::move(identity)), endpoints_(std::move(endpoints)), started_(started) {
  if (identity_.id.empty()) identity_.id = new_id();
}

std::string ServiceDiscovery::new_id() {
  static constexpr char kAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string id(22, '0');
  for (auto& c : id) c = kAlphabet[randombytes_uniform(sizeof(kAlphabet) - 1)];
  return id;
}

std::vector<std::string> ServiceDiscovery::subjects() const {
  std::vector<std::string> out;
  for (const char* verb : {"PING", "INFO", "STATS"}) {
    std::string base = std::string("$SRV.") + verb;
    out.push_back(base);
    out.push_back(base + "." + identity_.name);
    out.push_back(base + "." + identity_.name + "." + identity_.id);
  }
  return out;
}

std::string ServiceDiscovery::respond(const std::string& subject) const {
  auto verb_of = [&](const std::string& verb) {
    std::string base = "$SRV." + verb;
    return subject == base || subject == base + "." + identity_.name ||
           subject == base + "." + identity_.name + "." + identity_.id;
  };
  if (verb_of("PING")) return ping_json();
  if (verb_of("INFO")) return info_json();
  if (verb_of("STATS")) return stats_json();
  return {};
}

std::string ServiceDiscovery::ping_json() const {
  json j = {{"type", "io.nats.micro.v1.ping_response"},
            {"name", identity_.name},
            {"id", identity_.id},
            {"version", identity_.version},
            {"metadata", metadata_json(identity_.metadata)}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string ServiceDiscovery::info_json() const {
  json endpoints = json::array();
  for (const auto& e : endpoints_()) {
    endpoints.push_back({{"name", e.name},
                         {"subject", e.subject},
                         {"queue_group", e.queue_group},
                         {"metadata", json::object()}});
  }
  json j = {{"type", "io.nats.micro.v1.info_response"},
            {"name", identity_.name},
            {"id", identity_.id},
            {"version", identity_.version},
            {"description", identity_.description},
            {"metadata", metadata_json(identity_.metadata)},
            {"endpoints", endpoints}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string ServiceDiscovery::stats_json() const {
  json endpoints = json::array();
  for (const auto& e : endpoints_()) {
    std::int64_t average =
        e.num_requests > 0 ? e.processing_time_ns / static_cast<std::int64_t>(e.num_requests) : 0;
    endpoints.push_back({{"name", e.name},
                         {"subject", e.subject},
                         {"queue_group", e.queue_group},
                         {"num_requests", e.num_requests},
                         {"num_errors", e.num_errors},
                         {"last_error", e.last_error},
                         {"processing_time", e.processing_time_ns},
                         {"average_processing_time", average}});
  }
  json j = {{"type", "io.nats.micro.v1.stats_response"},
            {"name", identity_.name},
            {"id", identity_.id},
            {"version", identity_.version},
            {"metadata", metadata_json(identity_.metadata)},
            {"started", format_rfc3339(started_)},
            {"endpoints", endpoints}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace orgd
