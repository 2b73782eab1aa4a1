#pragma once

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/app/bus_requester.hpp"
#include "daemon/app/provider_monitor.hpp"
#include "daemon/bus/connection_supervisor.hpp"
#include "daemon/bus/acked_publisher.hpp"
#include "daemon/bus/nats_connection.hpp"
#include "daemon/bus/service_discovery.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/deploy/deploy_intake.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/deploy/orchestrator.hpp"
#include "daemon/events/api_router.hpp"
#include "daemon/events/command_intake.hpp"
#include "daemon/app/secrets_app.hpp"
#include "daemon/events/rejections.hpp"
#include "daemon/health/health_registry.hpp"
#include "daemon/http/http_server.hpp"
#include "daemon/core/metrics.hpp"

namespace orgd {

class ApiDispatcher;
class EmbeddedNatsServer;
class GithubWebhooks;
class HealthService;
class HttpRoutes;
class RegistryHealthGate;

struct DaemonOptions {
  // Re-read on SIGHUP; empty means the embedded default.
  std::string config_path;
  // Written once HTTP listens and the embedded server accepts clients (ports_file.hpp).
  std::string ports_file;
  int io_threads = 2;
  // Bound of API requests waiting for or in a handler; beyond it requests get 503 at once.
  std::size_t max_inflight_requests = 4096;
  std::chrono::milliseconds health_sweep_interval{1000};
  std::chrono::milliseconds shutdown_budget{4000};
  // How often deploy steps are polled and health gates checked.
  std::chrono::milliseconds deploy_poll_interval{250};
  // How often every provider's health probe runs (P.api.providers shows the last results).
  std::chrono::milliseconds provider_probe_interval{60'000};
  // Provider types added to the built-in ones, or replacing one of the same name (tests).
  std::map<std::string, ProviderRegistry::Factory> provider_factories;
  // Redelivery of commands that could not be done yet (empty: CommandIntakeSettings' default).
  std::vector<std::chrono::milliseconds> command_backoff;
  int command_max_deliver = 5;
  // The Argon2id cost of a new vault's passphrase parameters (tests: minimal).
  secrets::KdfCost kdf_cost = secrets::KdfCost::moderate();
};

// The running daemon: wires the subsystems (embedded NATS, connection, streams, health, API,
// service discovery, HTTP) and owns their lifecycle. main() only parses flags and calls run();
// tests and benchmarks drive start()/stop() in-process.
class Daemon {
 public:
  Daemon(Config config, DaemonOptions options, Environment env,
         const Clock& clock = default_clock());
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts everything. NATS being unreachable is not fatal (orgd keeps trying and /readyz says
  // so); a bad credential file, a taken HTTP port or a failed embedded server is (throws).
  void start();
  // Graceful stop: no new work, drain subscriptions, finish in-flight handlers, close NATS, stop
  // the embedded server. Bounded by options.shutdown_budget. Idempotent.
  void stop();
  // start(), then serve until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code.
  int run();

  // Applies a new config: repos, health settings and log level at once; NATS, HTTP and org
  // changes are logged as needing a restart. Counted in orgd_config_reloads_total.
  void apply_reload(const Config& next);
  // Reloads from options.config_path; an invalid file keeps the running config.
  bool reload_from_disk();

  // Connected, and everything orgd keeps on NATS is in place for this connection.
  bool ready() const { return supervisor_ && supervisor_->ready(); }
  std::uint16_t http_port() const;
  std::string nats_url() const;
  const std::string& prefix() const { return prefix_; }
  HealthRegistry& health() { return health_; }
  MetricsRegistry& metrics() { return metrics_; }
  const ServiceDiscovery& discovery() const { return *discovery_; }
  // Null before start().
  deploy::Orchestrator* orchestrator() { return orchestrator_.get(); }
  std::uint64_t health_reports_processed() const;

  static const Clock& default_clock();

 private:
  // What the connection supervisor puts in place on every (re)connect, in order.
  void supervise_connection();
  void register_api();
  // The health picture with each env's last deploy: P.api.status and /status.
  v1::OrgStatus org_status() const;
  std::shared_ptr<const deploy::Inventory> build_inventory(const Config& config);

  Config config_;
  // Guards config_'s log, providers, repos and secrets, which reloads replace; org, nats and
  // http never change after construction.
  std::mutex config_mutex_;
  DaemonOptions options_;
  Environment env_;
  const Clock& clock_;
  std::string prefix_;
  std::string org_;

  MetricsRegistry metrics_;
  HealthRegistry health_;
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;

  std::unique_ptr<EmbeddedNatsServer> embedded_;
  std::unique_ptr<NatsConnection> nats_;
  std::unique_ptr<ConnectionSupervisor> supervisor_;
  // Acknowledged JetStream publishes: the audit trail (ORGD_EVENTS) and the last state of each
  // service (ORGD_HEALTH, newest state per subject). After nats_: they go first.
  std::unique_ptr<AckedPublisher> events_;
  std::unique_ptr<AckedPublisher> health_states_;
  std::unique_ptr<Rejections> rejections_;
  std::unique_ptr<HealthService> health_service_;
  std::unique_ptr<ApiRouter> router_;
  std::unique_ptr<ServiceDiscovery> discovery_;
  // POST /webhooks/github (daemon/app/github_webhooks.hpp); null without a github provider.
  // Before http_, whose handler uses it; after nats_, which it publishes on.
  std::unique_ptr<GithubWebhooks> github_webhooks_;
  class HttpSources;
  std::unique_ptr<HttpSources> http_sources_;
  std::unique_ptr<HttpRoutes> http_routes_;
  std::unique_ptr<HttpServer> http_;
  ProviderRegistry providers_;
  // What providers ask over NATS through (remote providers); attached to nats_ while it lives.
  std::shared_ptr<BusRequester> requester_ = std::make_shared<BusRequester>();
  // The repos' secrets as providers get them: the vault's once it is open.
  std::shared_ptr<PendingRepoSecrets> repo_secrets_;
  std::unique_ptr<SecretsApp> secrets_app_;
  std::mutex forced_probe_mutex_;  // guards last_forced_probe_
  std::chrono::steady_clock::time_point last_forced_probe_{};
  std::shared_ptr<const deploy::Inventory> inventory_;  // the config's; replaced on reload
  std::unique_ptr<ProviderMonitor> provider_monitor_;
  std::unique_ptr<RegistryHealthGate> health_gate_;
  std::unique_ptr<deploy::Orchestrator> orchestrator_;
  std::unique_ptr<deploy::DeployIntake> deploy_intake_;
  std::unique_ptr<CommandIntake> deploy_commands_;

  std::atomic<bool> stopped_{false};
  // Last member: its destructor joins the deploy API handlers before anything they use goes.
  std::unique_ptr<ApiDispatcher> api_;
};

}  // namespace orgd
