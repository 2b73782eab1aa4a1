#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/nats_connection.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/metrics.hpp"

namespace orgd {

struct ConnectionSupervisorSettings {
  // orgd's streams (orgd_streams()), ensured first on every connect.
  std::vector<StreamSpec> streams;
  // A failed ensure is tried again after `retry_initial`, doubling up to `retry_max`: low, as
  // the usual cause (JetStream electing a leader after a restart) passes in a moment.
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{1000};
  // A connection nats.c gave up on (a refused credential) is made again after `reopen_initial`,
  // doubling up to `reopen_max`.
  std::chrono::milliseconds reopen_initial{1000};
  std::chrono::milliseconds reopen_max{5000};
  // While orgd cannot connect, the reason is logged when it changes and again this often.
  std::chrono::milliseconds warn_every{30000};
};

// What /readyz tells.
struct Readiness {
  bool ready = false;
  ConnectionState nats = ConnectionState::connecting;
  bool streams = false;        // streams and every step before the subscriptions are in place
  bool subscriptions = false;  // subscriptions and the steps after them too
  std::string reason;          // why not ready; empty when ready
  std::uint64_t connect_attempts = 0;
};

// The one place that makes a NATS connection useful to orgd, on every connect and reconnect:
// it ensures orgd's streams, runs the owners' steps (KV buckets, the durable command consumer,
// ...) in order, makes the core subscriptions again when the connection is a new one, retries
// whatever failed on a timer while connected, and makes a new connection when nats.c gave up on
// the last one. Its work runs on its own thread, never on nats.c's or the io threads: JetStream
// calls block for up to their timeout.
class ConnectionSupervisor {
 public:
  // A step returns an error to be retried; it must be idempotent (it runs again after every
  // reconnect, and a server that lost its store has lost what the step made).
  using Step = std::function<Result<Ok>()>;

  ConnectionSupervisor(NatsConnection& nats, ConnectionSupervisorSettings settings,
                       MetricsRegistry& metrics);
  ~ConnectionSupervisor();
  ConnectionSupervisor(const ConnectionSupervisor&) = delete;
  ConnectionSupervisor& operator=(const ConnectionSupervisor&) = delete;

  // Before start(). Steps run in the order added; subscriptions are made where
  // add_subscriptions_here() was called (steps after it see them in place).
  void add_step(std::string name, Step step);
  void add_subscription(std::string subject, std::string queue_group,
                        NatsConnection::MessageHandler handler);
  void add_subscriptions_here();

  // The connection's state listener: a nats.c thread, so it only records and wakes the thread.
  void on_state(ConnectionState state);

  void start();
  // No more ensuring or reconnecting; the thread may still be inside a JetStream call, which
  // closing the connection ends. Then join() waits for it and drops the subscriptions.
  void stop_retrying();
  // Drains every core subscription at once until `deadline` (none while disconnected).
  void drain(std::chrono::steady_clock::time_point deadline);
  void join();

  bool ready() const;
  Readiness readiness() const;

 private:
  struct Entry {
    std::string name;
    Step step;  // empty: the subscriptions
  };
  struct SubscriptionSpec {
    std::string subject;
    std::string queue_group;
    NatsConnection::MessageHandler handler;
  };

  void run();
  // One pass over the steps; false when one failed (its error is kept as the reason).
  bool ensure_all(std::uint64_t epoch);
  Result<Ok> ensure_streams();
  Result<Ok> ensure_subscriptions();
  void wake();
  void log_not_connected();

  NatsConnection& nats_;
  ConnectionSupervisorSettings settings_;
  std::vector<Entry> steps_;
  std::vector<SubscriptionSpec> subscription_specs_;

  std::thread thread_;
  std::mutex mutex_;  // guards wake_, and with it the thread's sleep
  std::condition_variable cv_;
  bool wake_ = false;
  std::atomic<bool> stopping_{false};

  // Bumped at every connect: ensuring is done when ensured_epoch_ reaches it.
  std::atomic<std::uint64_t> epoch_{0};
  std::atomic<std::uint64_t> ensured_epoch_{0};
  std::atomic<bool> connected_{false};
  std::atomic<bool> streams_ready_{false};
  std::atomic<std::size_t> steps_done_{0};
  std::size_t subscriptions_at_ = 0;  // index of the subscriptions among the steps

  mutable std::mutex reason_mutex_;  // guards step_error_
  std::string step_error_;

  std::mutex subs_mutex_;  // guards subs_, subs_generation_
  std::vector<std::unique_ptr<NatsConnection::Subscription>> subs_;
  std::uint64_t subs_generation_ = 0;

  // Supervisor thread only.
  std::string logged_reason_;
  std::chrono::steady_clock::time_point logged_at_{};

  Gauge* connected_gauge_ = nullptr;
  Gauge* streams_gauge_ = nullptr;
  Counter* reconnects_ = nullptr;
  Counter* disconnects_ = nullptr;
  Counter* reopens_ = nullptr;
  Counter* ensure_failures_ = nullptr;
  Counter* attempts_ = nullptr;
};

}  // namespace orgd
