#include "daemon/bus/connection_supervisor.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include "daemon/bus/backoff.hpp"
#include "daemon/core/logging.hpp"

namespace orgd {

namespace {

using SteadyClock = std::chrono::steady_clock;

// While not connected the thread looks at the connection this often, to log why.
constexpr std::chrono::milliseconds kPollWhileDown{1000};

}  // namespace

ConnectionSupervisor::ConnectionSupervisor(NatsConnection& nats,
                                           ConnectionSupervisorSettings settings,
                                           MetricsRegistry& metrics)
    : nats_(nats), settings_(std::move(settings)) {
  steps_.push_back({"streams", [this] { return ensure_streams(); }});
  connected_gauge_ = &metrics.gauge("orgd_nats_connected", "1 while connected to NATS, else 0");
  streams_gauge_ = &metrics.gauge("orgd_jetstream_ready", "1 once orgd's streams exist, else 0");
  reconnects_ = &metrics.counter("orgd_nats_reconnects_total", "Reconnections to NATS");
  disconnects_ = &metrics.counter("orgd_nats_disconnects_total", "Disconnections from NATS");
  reopens_ = &metrics.counter("orgd_nats_connections_recreated_total",
                              "NATS connections made again after the client library gave up "
                              "(refused credentials)");
  ensure_failures_ = &metrics.counter(
      "orgd_nats_ensure_failures_total",
      "Failed attempts to put streams, buckets, consumers and subscriptions in place");
  attempts_ = &metrics.counter("orgd_nats_connect_attempts_total",
                               "Connect attempts to NATS (connect, reconnect passes over the "
                               "server list, re-created connections)");
}

ConnectionSupervisor::~ConnectionSupervisor() {
  stop_retrying();
  join();
}

void ConnectionSupervisor::add_step(std::string name, Step step) {
  steps_.push_back({std::move(name), std::move(step)});
}

void ConnectionSupervisor::add_subscription(std::string subject, std::string queue_group,
                                            NatsConnection::MessageHandler handler) {
  subscription_specs_.push_back({std::move(subject), std::move(queue_group), std::move(handler)});
}

void ConnectionSupervisor::add_subscriptions_here() {
  subscriptions_at_ = steps_.size();
  steps_.push_back({"subscriptions", [this] { return ensure_subscriptions(); }});
}

void ConnectionSupervisor::on_state(ConnectionState state) {
  auto log = logging::get("bus");
  const bool now_connected = state == ConnectionState::connected;
  const bool was = connected_.load();
  // The epoch moves first, so ready() never pairs the new connection with the last one's work.
  if (now_connected && !was) epoch_.fetch_add(1);
  if (!now_connected) streams_ready_.store(false);
  connected_.store(now_connected);
  connected_gauge_->set(now_connected ? 1 : 0);
  if (now_connected && !was) {
    log->info("connected to NATS");
    if (nats_.reconnects() > 0 || nats_.generation() > 1) reconnects_->inc();
  } else if (!now_connected && was) {
    streams_gauge_->set(0);
    if (!stopping_.load()) {
      disconnects_->inc();
      if (state == ConnectionState::disconnected) {
        log->warn("disconnected from NATS; reconnecting");
      }
    }
  }
  // A refusal is logged with its reason by the supervisor's thread, rate-limited.
  if (state == ConnectionState::closed && !nats_.gave_up()) log->info("NATS connection closed");
  wake();
}

void ConnectionSupervisor::wake() {
  {
    std::lock_guard lock(mutex_);
    wake_ = true;
  }
  cv_.notify_all();
}

void ConnectionSupervisor::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { run(); });
}

void ConnectionSupervisor::stop_retrying() {
  stopping_.store(true);
  wake();
}

void ConnectionSupervisor::join() {
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(subs_mutex_);
  subs_.clear();
}

void ConnectionSupervisor::drain(SteadyClock::time_point deadline) {
  std::lock_guard lock(subs_mutex_);
  std::vector<NatsConnection::Subscription*> subs;
  for (auto& sub : subs_) subs.push_back(sub.get());
  NatsConnection::Subscription::drain_all(subs, deadline);
}

bool ConnectionSupervisor::ready() const {
  return connected_.load() && ensured_epoch_.load() == epoch_.load() && epoch_.load() > 0;
}

Readiness ConnectionSupervisor::readiness() const {
  Readiness r;
  r.ready = ready();
  r.nats = nats_.state();
  const bool current = connected_.load() && epoch_.load() > 0;
  r.subscriptions = r.ready;
  r.streams = current && (r.ready || streams_ready_.load());
  r.connect_attempts = nats_.connect_attempts();
  if (r.ready) return r;
  if (!connected_.load()) {
    r.reason = nats_.last_error();
    if (r.reason.empty()) r.reason = "connecting to NATS";
  } else {
    std::lock_guard lock(reason_mutex_);
    r.reason = step_error_.empty() ? "putting streams, buckets and subscriptions in place"
                                   : step_error_;
  }
  return r;
}

Result<Ok> ConnectionSupervisor::ensure_streams() {
  auto log = logging::get("bus");
  for (const auto& spec : settings_.streams) {
    if (auto r = ensure_stream(nats_.jetstream(), spec); !r.ok()) return r.error();
  }
  std::string names;
  for (const auto& spec : settings_.streams) names += (names.empty() ? "" : ", ") + spec.name;
  log->info("streams ready ({})", names);
  return Ok{};
}

Result<Ok> ConnectionSupervisor::ensure_subscriptions() {
  std::lock_guard lock(subs_mutex_);
  // nats.c itself subscribes again after a reconnect of the same connection; a new connection
  // (made after nats.c gave up on the last one) needs every subscription made again.
  if (subs_generation_ == nats_.generation()) return Ok{};
  subs_.clear();
  try {
    for (const auto& spec : subscription_specs_) {
      subs_.push_back(nats_.subscribe(spec.subject, spec.queue_group, spec.handler));
    }
  } catch (const std::exception& e) {
    subs_.clear();
    return unavailable(e.what());
  }
  subs_generation_ = nats_.generation();
  // The server knows of the interest before orgd says it is ready.
  nats_.flush(std::chrono::seconds(1));
  return Ok{};
}

bool ConnectionSupervisor::ensure_all(std::uint64_t epoch) {
  steps_done_ = 0;
  streams_ready_ = false;
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    if (stopping_.load() || epoch_.load() != epoch || !connected_.load()) return false;
    Result<Ok> done = unavailable("not run");
    try {
      done = steps_[i].step();
    } catch (const std::exception& e) {
      done = internal_error(e.what());
    }
    if (!done) {
      ensure_failures_->inc();
      const std::string reason = fmt::format("{}: {}", steps_[i].name, done.error().message);
      {
        std::lock_guard lock(reason_mutex_);
        if (step_error_ != reason) logging::get("bus")->error("{}; retrying", reason);
        step_error_ = reason;
      }
      return false;
    }
    steps_done_ = i + 1;
    if (i + 1 == subscriptions_at_ || (subscriptions_at_ == 0 && i == 0)) {
      streams_ready_ = true;
      streams_gauge_->set(1);
    }
  }
  if (epoch_.load() != epoch || !connected_.load()) return false;
  {
    std::lock_guard lock(reason_mutex_);
    step_error_.clear();
  }
  streams_ready_ = true;
  streams_gauge_->set(1);
  ensured_epoch_.store(epoch);
  logging::get("bus")->info("NATS connection ready at {}", nats_.connected_url());
  return true;
}

void ConnectionSupervisor::log_not_connected() {
  const std::string reason = nats_.last_error();
  // A lost connection was logged when it happened; what the attempts meet is news.
  if (reason.empty() || reason == NatsConnection::kConnectionLost) return;
  const auto now = SteadyClock::now();
  if (reason == logged_reason_ && now - logged_at_ < settings_.warn_every) return;
  logging::get("bus")->warn("cannot connect to NATS: {} ({} attempts so far); retrying", reason,
                            nats_.connect_attempts());
  logged_reason_ = reason;
  logged_at_ = now;
}

void ConnectionSupervisor::run() {
  int ensure_failures = 0;
  int reopen_failures = 0;
  auto sleep_for = [&](std::chrono::milliseconds d) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, d, [&] { return wake_ || stopping_.load(); });
    wake_ = false;
  };
  std::uint64_t attempts_counted = 0;
  while (!stopping_.load()) {
    const std::uint64_t attempts = nats_.connect_attempts();
    attempts_->inc(static_cast<double>(attempts - attempts_counted));
    attempts_counted = attempts;
    if (nats_.gave_up()) {
      log_not_connected();
      sleep_for(backoff_delay(++reopen_failures, settings_.reopen_initial, settings_.reopen_max));
      if (stopping_.load()) break;
      if (auto reopened = nats_.reopen(); reopened) {
        reopen_failures = 0;
        reopens_->inc();
      }
      continue;
    }
    reopen_failures = 0;
    const std::uint64_t epoch = epoch_.load();
    if (connected_.load() && ensured_epoch_.load() != epoch) {
      if (ensure_all(epoch)) {
        ensure_failures = 0;
        logged_reason_.clear();
        continue;
      }
      if (!connected_.load() || epoch_.load() != epoch) continue;
      sleep_for(backoff_delay(++ensure_failures, settings_.retry_initial, settings_.retry_max));
      continue;
    }
    if (!connected_.load()) log_not_connected();
    sleep_for(connected_.load() ? settings_.warn_every : kPollWhileDown);
  }
}

}  // namespace orgd
