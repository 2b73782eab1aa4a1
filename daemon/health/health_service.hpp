#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/bus/message.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/health/health_registry.hpp"

namespace orgd {

struct Config;
class AckedPublisher;
class NatsConnection;
class Publisher;
class Rejections;

// What the registry knows of each configured repo: its dependencies, envs, services and ttl.
std::vector<RepoHealthSpec> health_specs(const Config& config);

struct HealthServiceSettings {
  std::string prefix;  // P
  // Largest report decoded.
  std::size_t max_payload = 1024 * 1024;
  // How often services are checked for staleness.
  std::chrono::milliseconds sweep_interval{1000};
};

// The health picture on the bus, over the registry: ingests the reports on P.health.<repo>.
// <service> (an invalid one is a rejection), publishes what they change (each service's state
// to ORGD_HEALTH, each repo's health change to ORGD_EVENTS), rebuilds the picture from
// ORGD_HEALTH once per process, and marks services stale on a timer.
class HealthService {
 public:
  // True while this replica follows: it keeps the picture but publishes none of it.
  using FollowerCheck = std::function<bool()>;

  HealthService(HealthServiceSettings settings, HealthRegistry& registry, NatsConnection& nats,
                Rejections& rejections, AckedPublisher& states, Publisher& events,
                FollowerCheck is_follower, MetricsRegistry& metrics, boost::asio::io_context& io);
  ~HealthService();
  HealthService(const HealthService&) = delete;
  HealthService& operator=(const HealthService&) = delete;

  // A report from P.health.>; runs on the caller's thread (it never blocks).
  void on_report(BusMessage message);

  // The connection supervisor's step: the first time it runs, the picture is rebuilt from
  // ORGD_HEALTH; later runs do nothing.
  Result<Ok> rebuild_once();

  // The staleness sweep on the io_context, every settings.sweep_interval until stop_sweep().
  void start_sweep();
  // No sweep runs after this; the timer is cancelled on the io_context.
  void stop_sweep();

  // Gauges read at scrape time.
  void refresh_gauges();

  std::uint64_t reports_processed() const { return processed_.load(); }

 private:
  void rebuild();
  void publish_update(const HealthRegistry::Update& update);
  void schedule_sweep();

  HealthServiceSettings settings_;
  HealthRegistry& registry_;
  NatsConnection& nats_;
  Rejections& rejections_;
  AckedPublisher& states_;
  Publisher& events_;
  FollowerCheck is_follower_;
  boost::asio::io_context& io_;
  std::unique_ptr<boost::asio::steady_timer> sweep_timer_;

  // Set once the health picture was rebuilt from ORGD_HEALTH: changes found before would
  // overwrite the stored states with an empty picture's.
  std::atomic<bool> rebuilt_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> processed_{0};

  Counter* reports_in_ = nullptr;
  Gauge* services_gauge_ = nullptr;
};

}  // namespace orgd
