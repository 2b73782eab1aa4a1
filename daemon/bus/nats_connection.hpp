#pragma once

#include <atomic>
#include <condition_variable>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/bus/message.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/log_limiter.hpp"
#include "daemon/core/metrics.hpp"

struct __natsConnection;
struct __natsOptions;
struct __natsSubscription;
struct __jsCtx;

namespace orgd {

struct NatsTlsSettings {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

// The secret values of a connection, as Secrets (sodium memory, wiped, printed as ***). A
// copy of the settings (a test reusing them, a reconnect) clones them into sodium memory too.
struct NatsSecrets {
  NatsSecrets() = default;
  NatsSecrets(const NatsSecrets& other) { *this = other; }
  NatsSecrets& operator=(const NatsSecrets& other) {
    if (this != &other) {
      nkey_seed = other.nkey_seed.clone();
      token = other.token.clone();
      password = other.password.clone();
      jwt = other.jwt.clone();
      jwt_seed = other.jwt_seed.clone();
    }
    return *this;
  }
  NatsSecrets(NatsSecrets&&) noexcept = default;
  NatsSecrets& operator=(NatsSecrets&&) noexcept = default;

  Secret nkey_seed;  // user seed (from the nkey file)
  Secret token;
  Secret password;
  Secret jwt;  // with jwt_seed: user JWT + seed given directly
  Secret jwt_seed;
};

// Plain connection settings: built from the validated config by whoever owns it; this class
// never reads config or the environment. Secret values (token, password, JWT, seed) are held
// only here, in sodium memory.
struct NatsConnectionSettings : NatsSecrets {
  std::vector<std::string> urls;
  std::string name = "orgd";
  std::string creds_file;
  std::string user;
  NatsTlsSettings tls;
  bool tls_required = false;  // tls:// URLs or a CA file
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds reconnect_wait{1000};
  // The longest wait between reconnect attempts (reconnect_wait doubles up to it, or to
  // reconnect_wait when that is longer). Low, so orgd is back soon after a long outage ends.
  std::chrono::milliseconds reconnect_max_wait{1000};
  // Keep trying forever (nats.c stops after 60 tries by default).
  int max_reconnect = -1;
  // When false, connect() fails at once if no server answers (CLI); when true it keeps trying
  // in the background (daemon).
  bool retry_on_failed_connect = true;
};

// Bounds of what nats.c holds for a subscription whose handler is behind; beyond them it drops
// messages (counted per subscription) and reports a slow consumer.
struct PendingLimits {
  int messages = 262'144;
  int bytes = 256 * 1024 * 1024;
};

enum class ConnectionState { connecting, connected, disconnected, closed };
const char* to_string(ConnectionState state);

// A nats.c connection with orgd's defaults: infinite reconnect with backoff, replies sent at
// once (SendAsap), state changes reported through a callback that runs on a nats.c thread (it
// must only copy and post).
class NatsConnection final : public Publisher {
 public:
  using StateListener = std::function<void(ConnectionState)>;
  // last_error() from a disconnect until the first reconnect attempt has failed.
  static constexpr const char* kConnectionLost = "connection to NATS lost; reconnecting";
  using MessageHandler = std::function<void(BusMessage)>;

  NatsConnection(NatsConnectionSettings settings, StateListener on_state = {});
  ~NatsConnection();
  NatsConnection(const NatsConnection&) = delete;
  NatsConnection& operator=(const NatsConnection&) = delete;

  // Where callback errors (orgd_callback_errors_total) and slow-consumer drops
  // (orgd_nats_slow_consumer_dropped_total{subscription}) are counted. Call before connect();
  // without it they are only logged.
  void set_metrics(MetricsRegistry& metrics);
  // Brings the slow-consumer drop counters of this connection's subscriptions up to nats.c's
  // counts (drops between two slow-consumer reports are only seen here); called before
  // /metrics renders.
  void refresh_dropped();

  // Throws std::runtime_error on invalid settings, or (without retry_on_failed_connect) when no
  // server can be reached or the connection is refused. With retry_on_failed_connect a refused
  // or unreachable server is not an error: last_error() says why, and nats.c keeps trying (or,
  // when it gives up on a refusal, reopen() makes a new connection).
  void connect();

  // Makes a new connection when the last attempt was refused or nats.c closed the last one on
  // its own (it does so after the same authorization error twice): one attempt, and when no
  // server answers nats.c keeps trying as after connect(). The old connection's subscriptions
  // and JetStream context stay valid but dead: whoever made them makes them again on the new
  // one (generation() tells).
  Result<Ok> reopen();
  // True when the connection was closed by nats.c, not by close().
  bool gave_up() const { return state() == ConnectionState::closed && !closing_.load(); }
  // Counts the nats.c connections made: a new one means new subscriptions are needed.
  std::uint64_t generation() const { return generation_.load(); }
  // Why the last connect attempt failed ("authorization violation: ...", "TLS: ...",
  // "unreachable: ..."); empty while connected. Never holds credentials.
  std::string last_error() const;
  // Connect attempts so far: the first connect, every reconnect pass over the server list, and
  // every reopen().
  std::uint64_t connect_attempts() const { return attempts_.load(); }

  ConnectionState state() const { return state_.load(); }
  bool connected() const { return state() == ConnectionState::connected; }
  std::string connected_url() const;

  __natsConnection* raw() const { return conn_; }
  // Null until connect() has created it.
  __jsCtx* jetstream() const { return js_.load(); }

  Result<Ok> publish(const BusMessage& message) override;
  // The connected server's max_payload; 0 while not connected.
  std::size_t max_payload() const override;
  // Request-reply with a timeout; 503-style errors on no responders and timeouts.
  Result<BusMessage> request(const BusMessage& message, std::chrono::milliseconds timeout);
  void flush(std::chrono::milliseconds timeout);

  class DropCounters;

  // A subscription whose handler runs on the subscription's nats.c delivery thread with an owned
  // copy of each message. Messages of one subscription arrive in order.
  class Subscription {
   public:
    ~Subscription();
    // Stops interest and lets already-received messages finish; waits up to `timeout`.
    void drain(std::chrono::milliseconds timeout);
    // Drains every subscription at once and waits for all of them until one deadline. While
    // disconnected nothing can be drained: interest just ends, without waiting.
    static void drain_all(const std::vector<Subscription*>& subscriptions,
                          std::chrono::steady_clock::time_point deadline);
    void unsubscribe();
    const std::string& subject() const { return subject_; }
    int64_t dropped() const;

   private:
    friend class NatsConnection;
    struct Closure;
    Subscription() = default;
    __natsSubscription* sub_ = nullptr;
    __natsConnection* conn_ = nullptr;  // the connection it was made on
    std::shared_ptr<Closure> closure_;
    std::shared_ptr<DropCounters> drops_;
    std::string subject_;
  };

  // queue_group empty: every orgd instance gets each message.
  std::unique_ptr<Subscription> subscribe(const std::string& subject,
                                          const std::string& queue_group, MessageHandler handler,
                                          PendingLimits limits = PendingLimits{});

  // Closes the connection (pending publishes are flushed first when connected); the whole close
  // is bounded by `timeout`. Anything blocked on a request (a KV call) returns at once.
  void close(std::chrono::milliseconds timeout = std::chrono::milliseconds{2000});

  std::uint64_t reconnects() const { return reconnects_.load(); }

 private:
  static void on_disconnected(__natsConnection*, void* self);
  static void on_reconnected(__natsConnection*, void* self);
  static void on_closed(__natsConnection*, void* self);
  // nats.c's asynchronous errors (slow consumer, permissions, ...); `status` is a natsStatus.
  void on_async_error(__natsSubscription* sub, int status);
  void set_state(ConnectionState s);
  // One natsConnection_Connect with the prepared options; installs the connection it makes.
  int open();  // a natsStatus
  void install(__natsConnection* conn);
  // A callback of a connection already replaced by reopen() changes nothing.
  bool current(__natsConnection* conn) const;
  void set_last_error(std::string reason);
  static std::int64_t reconnect_delay(__natsConnection*, int attempts, void* self);
  std::int64_t next_reconnect_delay(__natsConnection*, int attempts);

  struct Credentials;
  struct Retired;
  NatsConnectionSettings settings_;
  StateListener on_state_;
  std::unique_ptr<Credentials> credentials_;
  // Set once connect() returns; callbacks that run earlier must not rely on it.
  std::atomic<__natsConnection*> conn_{nullptr};
  std::atomic<__jsCtx*> js_{nullptr};
  std::atomic<ConnectionState> state_{ConnectionState::connecting};
  std::atomic<std::uint64_t> reconnects_{0};
  std::atomic<std::uint64_t> attempts_{0};
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> closing_{false};
  __natsOptions* options_ = nullptr;  // prepared by connect(), kept for reopen()
  mutable std::mutex error_mutex_;    // guards last_error_
  std::string last_error_;
  std::mutex closed_mutex_;  // guards closed_delivered_
  std::condition_variable closed_cv_;
  bool closed_delivered_ = false;
  std::mutex retired_mutex_;  // guards retired_
  std::vector<Retired> retired_;

  // Callback errors by callback; null without set_metrics().
  Counter* state_errors_ = nullptr;
  Counter* async_error_errors_ = nullptr;
  Counter* message_errors_ = nullptr;
  Counter* credential_errors_ = nullptr;
  std::shared_ptr<DropCounters> drops_;
  LogLimiter async_error_log_;
};

}  // namespace orgd
