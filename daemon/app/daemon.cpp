#include "daemon/app/daemon.hpp"

#include "daemon/events/fast_json.hpp"
#include "daemon/core/timestamps.hpp"

#include <boost/asio/signal_set.hpp>
#include <sodium.h>

#include <algorithm>
#include <csignal>
#include <future>

#include "daemon/app/ports_file.hpp"
#include "daemon/app/github_webhooks.hpp"
#include "daemon/app/registry_health_gate.hpp"
#include "daemon/bus/embedded_server.hpp"
#include "daemon/bus/nats_settings.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/core/build_info.hpp"
#include "daemon/core/config_values.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/paging.hpp"
#include "daemon/events/api_dispatcher.hpp"
#include "daemon/health/health_service.hpp"
#include "daemon/http/routes.hpp"
#include "daemon/net/https_client.hpp"
#include "orgd/v1/status.pb.h"
#include "plugins/github/github_provider.hpp"

namespace orgd {

namespace asio = boost::asio;

// What the HTTP routes read: the supervisor's readiness, the gauges, the org's status.
class Daemon::HttpSources final : public RouteSources {
 public:
  explicit HttpSources(Daemon& daemon) : daemon_(daemon) {}

  ProbeReadiness readiness() const override {
    const Readiness r = daemon_.supervisor_ ? daemon_.supervisor_->readiness() : Readiness{};
    return {r.ready, to_string(r.nats), r.streams, r.subscriptions, r.reason, r.connect_attempts};
  }
  void refresh_gauges() override {
    daemon_.health_service_->refresh_gauges();
    if (daemon_.nats_) daemon_.nats_->refresh_dropped();
  }
  HttpServerResponse::BodyStream status_stream() const override {
    // One page of repos per piece, walked like P.api.status pages (by name, after the last
    // one sent), so the memory held is one page, not the org.
    struct Walk {
      bool started = false;
      std::string after;
      std::int32_t sent = 0;
    };
    auto walk = std::make_shared<Walk>();
    return [this, walk](std::string& out) -> bool {
      if (!walk->started) {
        fast_append_org_status_head(out, daemon_.org_);
        walk->started = true;
      }
      auto page = daemon_.health_.org_status(daemon_.org_, PageRequest{256, walk->after});
      if (daemon_.orchestrator_) daemon_.orchestrator_->fill_status(page);
      for (const auto& repo : page.repos()) {
        fast_append_org_status_repo(out, repo, walk->sent == 0);
        ++walk->sent;
      }
      if (!page.next_cursor().empty()) {
        walk->after = page.next_cursor();
        return true;
      }
      v1::OrgStatus tail;
      tail.set_total_repos(walk->sent);
      *tail.mutable_generated_at() = to_timestamp(daemon_.clock_.now());
      fast_append_org_status_tail(out, tail);
      out += "\n";
      return false;
    };
  }

 private:
  Daemon& daemon_;
};

const Clock& Daemon::default_clock() {
  static const SystemClock clock;
  return clock;
}

Daemon::Daemon(Config config, DaemonOptions options, Environment env, const Clock& clock)
    : config_(std::move(config)),
      options_(std::move(options)),
      env_(std::move(env)),
      clock_(clock),
      prefix_(config_.prefix()),
      org_(config_.org),
      health_(clock),
      repo_secrets_(std::make_shared<PendingRepoSecrets>(secret_names_by_repo(config_),
                                                         config_.secrets.has_master_key())) {
  preload_descriptors();
  for (const auto& [type, factory] : options_.provider_factories) providers_.add_factory(type, factory);
  // Provider and target settings are checked here, so a bad one stops start-up.
  inventory_ = build_inventory(config_);
  health_.configure(health_specs(config_));
  metrics_
      .gauge("orgd_build_info", "Build of the running orgd",
             {{"version", build::kVersion}, {"revision", build::kRevision}})
      .set(1);
  metrics_.counter("orgd_config_reloads_total", "Config reloads (SIGHUP), by result",
                   {{"result", "ok"}});
  metrics_.counter("orgd_config_reloads_total", "Config reloads (SIGHUP), by result",
                   {{"result", "error"}});
}

Daemon::~Daemon() { stop(); }

std::shared_ptr<const deploy::Inventory> Daemon::build_inventory(const Config& config) {
  ProviderEnvironment environment;
  environment.org = config.org;
  environment.data_dir = config.nats.data_dir;
  environment.environment = env_;
  // One HTTPS client per provider, its metrics in the daemon's registry; the proxy from the
  // environment (HTTPS_PROXY, NO_PROXY).
  environment.http = make_https_transport_factory(metrics_, env_);
  environment.nats = requester_;
  environment.repo_secrets = repo_secrets_;
  environment.subject_prefix = config.prefix();
  return deploy::Inventory::build(config, providers_, environment);
}

void Daemon::start() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialize");
  auto log = logging::get("orgd");
  log->info("orgd {} ({}) starting: org {}, prefix {}, {} repos", build::kVersion,
            build::kRevision, org_, prefix_, config_.repos.size());

  if (config_.nats.embedded) {
    EmbeddedServerSettings es = embedded_server_settings(config_.nats);
    // One that dies is started again on its port (the connection reconnects) and counted.
    es.restart_on_exit = true;
    es.on_restart = [restarts = &metrics_.counter("orgd_embedded_server_restarts_total",
                                                  "Embedded nats-server restarts after it died")] {
      restarts->inc();
    };
    embedded_ = std::make_unique<EmbeddedNatsServer>(es);
    embedded_->start();
    log->info("embedded nats-server (pid {}) accepting clients on {}", embedded_->pid(),
              embedded_->url());
  }

  // Secrets and credential files are read before anything listens, so a bad one stops start-up.
  NatsConnectionSettings settings = nats_connection_settings(config_.nats, env_);
  if (embedded_) settings.urls = {embedded_->url()};  // its actual port when configured as 0

  work_.emplace(io_.get_executor());
  for (int i = 0; i < std::max(1, options_.io_threads); ++i) {
    threads_.emplace_back([this] { io_.run(); });
  }

  // The listener runs on nats.c threads; the supervisor exists before connect() and outlives
  // the connection's last callback (stop() closes NATS before it goes).
  nats_ = std::make_unique<NatsConnection>(std::move(settings), [this](ConnectionState s) {
    if (supervisor_) supervisor_->on_state(s);
  });
  nats_->set_metrics(metrics_);
  requester_->attach(nats_.get());
  events_ = std::make_unique<AckedPublisher>(*nats_, metrics_);
  AckedPublisherSettings health_state_settings;
  health_state_settings.kind = "health_state";
  // One state per service at most waits, so retrying longer costs little: about 5 minutes.
  health_state_settings.max_attempts = 64;
  health_states_ = std::make_unique<AckedPublisher>(*nats_, metrics_, health_state_settings);
  rejections_ = std::make_unique<Rejections>(prefix_, *nats_, metrics_);
  HealthServiceSettings health_settings;
  health_settings.prefix = prefix_;
  health_settings.max_payload = static_cast<std::size_t>(config_.nats.max_payload);
  health_settings.sweep_interval = options_.health_sweep_interval;
  health_service_ = std::make_unique<HealthService>(
      health_settings, health_, *nats_, *rejections_, *health_states_, *events_,
      [this] { return orchestrator_ && orchestrator_->is_follower(); }, metrics_, io_);
  router_ = std::make_unique<ApiRouter>(prefix_, static_cast<std::size_t>(config_.nats.max_payload),
                                        *nats_, *rejections_, metrics_);
  ServiceIdentity identity;
  identity.name = "orgd";
  identity.version = build::kVersion;
  identity.description = "orgd organization controller for " + org_;
  identity.metadata = {{"org", org_}, {"prefix", prefix_}, {"revision", build::kRevision}};
  discovery_ = std::make_unique<ServiceDiscovery>(
      identity, [this] { return router_->stats(); },
      clock_.now());
  health_gate_ = std::make_unique<RegistryHealthGate>(health_);
  deploy::OrchestratorOptions deploy_options;
  deploy_options.instance_id = discovery_->identity().id;
  deploy_options.prefix = prefix_;
  deploy_options.replicas = config_.nats.replicas;
  deploy_options.poll_interval = options_.deploy_poll_interval;
  orchestrator_ = std::make_unique<deploy::Orchestrator>(deploy_options, inventory_, *events_,
                                                         *health_gate_, metrics_, clock_);
  provider_monitor_ = std::make_unique<ProviderMonitor>(options_.provider_probe_interval, clock_,
                                                        metrics_);
  provider_monitor_->set_providers(inventory_->provider_set());
  deploy_intake_ = std::make_unique<deploy::DeployIntake>(
      *orchestrator_, *rejections_, prefix_, static_cast<std::size_t>(config_.nats.max_payload));
  SecretsApp::Parts secrets_parts;
  secrets_parts.config = &config_;
  secrets_parts.environment = env_;
  secrets_parts.events = events_.get();
  secrets_parts.replies = nats_.get();
  secrets_parts.rejections = rejections_.get();
  secrets_parts.metrics = &metrics_;
  secrets_parts.clock = &clock_;
  secrets_parts.is_leader = [this] { return orchestrator_ && orchestrator_->is_scheduler(); };
  secrets_parts.prefix = prefix_;
  secrets_parts.replica_id = discovery_->identity().id;
  secrets_parts.commands.max_deliver = std::max(1, options_.command_max_deliver);
  if (!options_.command_backoff.empty()) secrets_parts.commands.backoff = options_.command_backoff;
  secrets_parts.repo_secrets = repo_secrets_;
  secrets_parts.kdf_cost = options_.kdf_cost;
  secrets_app_ = std::make_unique<SecretsApp>(std::move(secrets_parts));
  register_api();
  ApiDispatcherSettings api_settings;
  api_settings.max_inflight = options_.max_inflight_requests;
  api_settings.kv_endpoints.assign(router_->endpoint_count(), false);
  for (std::size_t i = 0; i < router_->endpoint_count(); ++i) {
    // Deploys and secrets do KV round trips (secrets also cloud calls): not on the io threads.
    // (providers: a probe_now request calls every provider's API.)
    api_settings.kv_endpoints[i] = router_->endpoint_name(i).rfind("deploy", 0) == 0 ||
                                   router_->endpoint_name(i).rfind("secrets", 0) == 0 ||
                                   router_->endpoint_name(i) == "providers";
  }
  api_ = std::make_unique<ApiDispatcher>(*router_, *nats_, io_, api_settings, metrics_);
  CommandIntakeSettings intake;
  intake.prefix = prefix_;
  intake.op = "deploy";
  intake.max_deliver = std::max(1, options_.command_max_deliver);
  if (!options_.command_backoff.empty()) intake.backoff = options_.command_backoff;
  deploy_commands_ = std::make_unique<CommandIntake>(
      intake,
      [this](const BusMessage& command, const std::string& dedup_id) {
        return deploy_intake_->on_command(command, dedup_id);
      },
      *nats_, *rejections_, metrics_);
  deploy_commands_->set_carried_out_query(
      [this](const BusMessage& command, const std::string& dedup_id) {
        return deploy_intake_->carried_out(command, dedup_id);
      });

  // GitHub webhooks: before the supervisor, which puts their stream in place.
  github_webhooks_ = GithubWebhooks::create(config_, env_, *nats_, metrics_);
  if (github_webhooks_) {
    // A completed run a deploy step follows: that step polls now, not at its next poll (the
    // poll's answer, not the webhook's word, decides the step).
    github_webhooks_->intake().add_workflow_run_listener([this](const WorkflowRunCompleted& run) {
      std::shared_ptr<const deploy::Inventory> inventory;
      {
        std::lock_guard lock(config_mutex_);
        inventory = inventory_;
      }
      for (const auto& provider : inventory->providers().all()) {
        if (provider->type() != "github") continue;
        orchestrator_->poll_now(provider->name(), github::GithubProvider::run_watch_key(run.run_id));
      }
    });
  }

  supervise_connection();
  // HTTP once everything its routes read exists.
  if (config_.http.enabled) {
    HttpServerSettings hs;
    hs.host = config_.http.host;
    hs.port = config_.http.port;
    hs.body_limit = static_cast<std::size_t>(config_.http.body_limit);
    hs.header_timeout = config_.http.header_timeout;
    hs.read_timeout = config_.http.read_timeout;
    hs.write_timeout = config_.http.write_timeout;
    hs.metrics = &metrics_;
    if (github_webhooks_) github_webhooks_->configure_http(hs);  // GitHub webhooks
    http_sources_ = std::make_unique<HttpSources>(*this);
    http_routes_ = std::make_unique<HttpRoutes>(
        *http_sources_, metrics_, github_webhooks_ ? &github_webhooks_->intake() : nullptr);
    http_ = std::make_unique<HttpServer>(
        io_, hs, [routes = http_routes_.get()](const HttpServerRequest& r) { return routes->handle(r); });
    http_->start();
    log->info("http listening on {}:{}", hs.host, http_->port());
  }
  if (!options_.ports_file.empty()) {
    if (auto written = write_ports_file(options_.ports_file, {http_port(), nats_url()}); !written) {
      throw std::runtime_error("--ports-file: " + written.error().message);
    }
  }

  log->info("connecting to NATS at {}", redact_urls(config_.nats.urls));
  nats_->connect();
  supervisor_->start();
  health_service_->start_sweep();
  provider_monitor_->start();
}

void Daemon::supervise_connection() {
  ConnectionSupervisorSettings settings;
  settings.streams = orgd_streams(prefix_, config_.nats.replicas);
  if (github_webhooks_) {
    settings.streams.push_back(github_webhooks_->stream(config_.nats.replicas));
  }
  settings.reopen_initial = std::max<std::chrono::milliseconds>(
      std::chrono::duration_cast<std::chrono::milliseconds>(config_.nats.reconnect_wait),
      std::chrono::milliseconds(100));
  supervisor_ = std::make_unique<ConnectionSupervisor>(*nats_, settings, metrics_);
  // Streams come first (the supervisor's own step), then the deploy KV buckets: a server that
  // lost its store gets both back.
  supervisor_->add_step("deploy KV buckets", [this] {
    __jsCtx* js = nats_->jetstream();
    return orchestrator_->attach([js](const BucketSpec& spec) { return KvBucket::open(js, spec); },
                                 js);
  });
  supervisor_->add_step("health picture", [this] { return health_service_->rebuild_once(); });
  supervisor_->add_step("secrets vault", [this]() -> Result<Ok> {
    std::shared_ptr<const deploy::Inventory> inventory;
    {
      std::lock_guard lock(config_mutex_);
      inventory = inventory_;
    }
    return secrets_app_->attach(nats_->raw(), nats_->jetstream(), inventory->provider_set());
  });
  // Health reports are handled on their subscription's own thread, in arrival order: ordering
  // per service matters (an old "down" must not overtake a newer "ok"), and the work is a decode
  // and an in-memory update, which never blocks.
  supervisor_->add_subscription(prefix_ + ".health.>", "",
                                [this](BusMessage m) { health_service_->on_report(std::move(m)); });
  for (std::size_t i = 0; i < router_->endpoint_count(); ++i) {
    supervisor_->add_subscription(router_->endpoint_subject(i), kApiQueueGroup,
                                  [this, i](BusMessage m) { api_->on_request(i, std::move(m)); });
  }
  supervisor_->add_subscription(prefix_ + ".events.deploy.*.*", "",
                                [this](BusMessage m) { deploy_intake_->on_event(m); });
  for (const auto& subject : discovery_->subjects()) {
    supervisor_->add_subscription(subject, "", [this](BusMessage m) {
      if (m.reply.empty()) return;
      BusMessage reply;
      reply.subject = m.reply;
      reply.data = discovery_->respond(m.subject);
      if (auto sent = nats_->publish(reply); !sent) {
        logging::get("api")->warn("{}: reply not sent: {}", m.subject, sent.error().message);
      }
    });
  }
  supervisor_->add_subscriptions_here();
  supervisor_->add_step("command consumer", [this]() -> Result<Ok> {
    if (auto started = deploy_commands_->start(nats_->raw(), nats_->jetstream()); !started) {
      return Error{started.error().code,
                   started.error().message + "; commands stay in " + kCmdStream +
                       " until it works"};
    }
    return Ok{};
  });
}

void Daemon::register_api() {
  router_->add<v1::StatusRequest, v1::OrgStatus>(
      "status", [this](const v1::StatusRequest& r) -> Result<v1::OrgStatus> {
        auto page = read_page(r.page_size(), r.cursor());
        if (!page) return Error{page.error()};
        auto status = health_.org_status(org_, page.value());
        if (orchestrator_) orchestrator_->fill_status(status);
        return status;
      },
      "ask for smaller pages (page_size), or one repo (P.api.status.repo)");
  router_->add<v1::RepoStatusRequest, v1::RepoStatus>(
      "status.repo", [this](const v1::RepoStatusRequest& r) -> Result<v1::RepoStatus> {
        if (r.repo().empty()) return invalid_argument("repo is required");
        auto status = health_.repo_status(r.repo());
        if (status) orchestrator_->fill_status(status.value());
        return status;
      });
  deploy_intake_->register_api(*router_);
  secrets_app_->register_api(*router_);
  router_->add<v1::ReposRequest, v1::RepoList>(
      "repos", [this](const v1::ReposRequest& r) -> Result<v1::RepoList> {
        auto page = read_page(r.page_size(), r.cursor());
        if (!page) return Error{page.error()};
        return health_.repo_list(page.value());
      },
      "ask for smaller pages (page_size)");
  router_->add<v1::ProvidersRequest, v1::ProviderList>(
      "providers", [this](const v1::ProvidersRequest& r) -> Result<v1::ProviderList> {
        if (r.probe_now()) {
          bool due = false;
          {
            std::lock_guard lock(forced_probe_mutex_);
            const auto now = std::chrono::steady_clock::now();
            if (now - last_forced_probe_ >= std::chrono::seconds{5}) {
              last_forced_probe_ = now;
              due = true;
            }
          }
          if (due) provider_monitor_->probe_all();
        }
        return provider_monitor_->list();
      });
}

v1::OrgStatus Daemon::org_status() const {
  auto status = health_.org_status(org_);
  if (orchestrator_) orchestrator_->fill_status(status);
  return status;
}

std::uint64_t Daemon::health_reports_processed() const {
  return health_service_ ? health_service_->reports_processed() : 0;
}

std::uint16_t Daemon::http_port() const { return http_ ? http_->port() : 0; }

std::string Daemon::nats_url() const {
  return embedded_ ? embedded_->url() : redact_urls(config_.nats.urls);
}

void Daemon::apply_reload(const Config& next) {
  auto log = logging::get("orgd");
  // First, as it may throw ConfigError (bad provider settings): then nothing changes.
  auto inventory = build_inventory(next);
  logging::setup(next.log);
  health_.configure(health_specs(next));
  std::lock_guard lock(config_mutex_);
  if (next.prefix() != prefix_ || next.org != org_) {
    log->warn("org/subject prefix changes take effect after a restart");
  }
  if (next.http.host != config_.http.host || next.http.port != config_.http.port ||
      next.nats.urls != config_.nats.urls || next.nats.embedded != config_.nats.embedded) {
    log->warn("nats and http changes take effect after a restart");
  }
  // Only what applies live is taken: org, nats and http stay as they started, and are read
  // without the lock on NATS and io threads.
  config_.log = next.log;
  config_.providers = next.providers;
  config_.repos = next.repos;
  config_.secrets = next.secrets;
  config_.deploy = next.deploy;
  inventory_ = inventory;
  if (provider_monitor_) provider_monitor_->set_providers(inventory->provider_set());
  if (orchestrator_) orchestrator_->set_inventory(std::move(inventory));
  metrics_.counter("orgd_config_reloads_total", "Config reloads (SIGHUP), by result",
                   {{"result", "ok"}})
      .inc();
  log->info("config reloaded: {} repos", config_.repos.size());
}

bool Daemon::reload_from_disk() {
  auto log = logging::get("orgd");
  try {
    Config next = load_daemon_config(options_.config_path, env_);
    apply_reload(next);
    return true;
  } catch (const ConfigError& e) {
    metrics_.counter("orgd_config_reloads_total", "Config reloads (SIGHUP), by result",
                     {{"result", "error"}})
        .inc();
    log->error("config reload rejected; the running config stays:\n{}", e.what());
  } catch (const std::exception& e) {
    metrics_.counter("orgd_config_reloads_total", "Config reloads (SIGHUP), by result",
                     {{"result", "error"}})
        .inc();
    log->error("config reload failed; the running config stays: {}", e.what());
  }
  return false;
}

void Daemon::stop() {
  if (stopped_.exchange(true)) return;
  auto log = logging::get("orgd");
  using std::chrono::milliseconds;
  const auto began = std::chrono::steady_clock::now();
  const auto deadline = began + options_.shutdown_budget;
  auto left = [&] {
    return std::max(std::chrono::duration_cast<milliseconds>(deadline -
                                                             std::chrono::steady_clock::now()),
                    milliseconds(0));
  };
  if (api_) api_->stop_taking();
  if (health_service_) health_service_->stop_sweep();
  if (provider_monitor_) provider_monitor_->stop();
  log->info("stopping: draining subscriptions and in-flight requests");
  if (supervisor_) supervisor_->stop_retrying();
  // Without NATS nothing can be drained or released, and every KV call would wait for its
  // timeout: closing the connection first makes them all return at once.
  if (nats_ && !nats_->connected()) nats_->close(milliseconds(500));

  // 1. Stop taking work: every subscription drains at once, until one deadline (messages already
  // received still run).
  const auto drain_deadline = began + options_.shutdown_budget / 4;
  if (supervisor_) supervisor_->drain(drain_deadline);
  if (deploy_commands_) deploy_commands_->stop(drain_deadline);
  if (secrets_app_) secrets_app_->stop();
  // 2. Finish in-flight handlers.
  if (api_) api_->wait_idle(began + options_.shutdown_budget / 2);
  // 3. Deploys stop where they are; their leases are released so another replica resumes them.
  // A KV call that hangs (NATS lost mid-stop) must not hold the exit: when the orchestrator has
  // not stopped within its share, NATS is closed under it, which ends the call at once.
  if (orchestrator_) {
    const auto budget = std::max(left() - milliseconds(1000), milliseconds(200));
    auto stopped = std::async(std::launch::async, [&] { orchestrator_->stop(budget); });
    if (stopped.wait_for(budget + milliseconds(200)) != std::future_status::ready && nats_) {
      log->info("deploys did not stop within {} ms; closing NATS under them", budget.count());
      nats_->close(milliseconds(200));
    }
    stopped.wait();
  }
  if (http_) http_->stop();
  // 4. Flush what handlers published (events and states wait for their acks), then close.
  for (auto* publisher : {events_.get(), health_states_.get()}) {
    if (publisher != nullptr) {
      publisher->stop(std::clamp(left() / 4, milliseconds(100), milliseconds(500)));
    }
  }
  requester_->detach();
  if (nats_) nats_->close(std::clamp(left(), milliseconds(200), milliseconds(1000)));
  if (supervisor_) supervisor_->join();
  work_.reset();
  io_.stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  if (embedded_) embedded_->stop();
  log->info("stopped");
}

int Daemon::run() {
  // Signals are waited for on a dedicated io_context in this (the main) thread.
  asio::io_context signals_io;
  asio::signal_set signals(signals_io, SIGTERM, SIGINT, SIGHUP);
  start();
  bool done = false;
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signo) {
        if (ec) return;
        if (signo == SIGHUP) {
          logging::get("orgd")->info("SIGHUP: reloading config");
          reload_from_disk();
          signals.async_wait(on_signal);
          return;
        }
        logging::get("orgd")->info("{}: shutting down", signo == SIGTERM ? "SIGTERM" : "SIGINT");
        done = true;
      };
  signals.async_wait(on_signal);
  while (!done) signals_io.run_one();
  stop();
  return 0;
}

}  // namespace orgd
