#include "daemon/bus/nats_connection.hpp"

#include <fmt/format.h>
#include <nats/nats.h>

#include <condition_variable>
#include <cstring>
#include <map>
#include <stdexcept>
#include <thread>

#include "daemon/bus/backoff.hpp"
#include "daemon/bus/callback_guard.hpp"
#include "daemon/bus/nkeys.hpp"
#include "daemon/core/config_values.hpp"
#include "daemon/core/logging.hpp"

namespace orgd {
namespace {

std::string status_text(natsStatus s) { return natsStatus_GetText(s); }

void check(natsStatus s, const char* what) {
  if (s != NATS_OK) throw std::runtime_error(fmt::format("nats: {}: {}", what, status_text(s)));
}

// The calling thread's last nats.c error text ("" when there is none: nats.c returns NULL).
std::string thread_error_text() {
  const char* text = nats_GetLastError(nullptr);
  return text != nullptr ? text : "";
}


// Why a connect failed, in the words an operator needs: the server's own text for a refusal
// (it never repeats the client's credentials), the kind of failure otherwise.
std::string describe_failure(natsStatus status, const std::string& text,
                             const std::vector<std::string>& urls) {
  std::string detail = text.empty() ? natsStatus_GetText(status) : text;
  // nats.c prefixes its error texts with where they were raised: "(conn.c:1905): ...".
  if (auto end = detail.find("): "); !detail.empty() && detail.front() == '(' &&
                                      end != std::string::npos) {
    detail.erase(0, end + 3);
  }
  switch (status) {
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
      return "authorization violation: the server refused orgd's credentials (" + detail + ")";
    case NATS_SSL_ERROR:
    case NATS_SECURE_CONNECTION_WANTED:
    case NATS_SECURE_CONNECTION_REQUIRED:
      return "TLS: " + detail;
    case NATS_OK:
    case NATS_NO_SERVER:
    case NATS_IO_ERROR:
    case NATS_TIMEOUT:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_STALE_CONNECTION:
      return "unreachable: no server at " + redact_urls(urls) + " answers";
    default:
      return detail;
  }
}

}  // namespace

const char* to_string(ConnectionState state) {
  switch (state) {
    case ConnectionState::connecting: return "connecting";
    case ConnectionState::connected: return "connected";
    case ConnectionState::disconnected: return "disconnected";
    case ConnectionState::closed: return "closed";
  }
  return "unknown";
}

// Messages nats.c dropped because a subscription's handler fell behind, per subscription
// subject: orgd_nats_slow_consumer_dropped_total{subscription}. nats.c keeps a running count per
// subscription and reports a slow consumer only when one starts dropping again, so the counters
// are brought up to nats.c's count at each report, before /metrics renders, and when an owned
// subscription ends. Subscriptions that orgd created elsewhere (the command intake's) are
// counted at their reports only.
class NatsConnection::DropCounters {
 public:
  void set_metrics(MetricsRegistry* metrics) {
    std::lock_guard lock(mutex_);
    metrics_ = metrics;
  }

  // An owned subscription: refreshed with the others, until untrack().
  void track(natsSubscription* sub, const std::string& subject) {
    std::lock_guard lock(mutex_);
    subs_[sub] = Entry{counter_for(subject), 0, true};
  }

  void untrack(natsSubscription* sub) {
    std::lock_guard lock(mutex_);
    auto it = subs_.find(sub);
    if (it == subs_.end()) return;
    update_locked(sub, it->second);
    subs_.erase(it);
  }

  // At a slow-consumer report; returns nats.c's count for the subscription.
  std::int64_t update(natsSubscription* sub) {
    std::lock_guard lock(mutex_);
    auto it = subs_.find(sub);
    if (it == subs_.end()) {
      const char* subject = natsSubscription_GetSubject(sub);
      it = subs_.emplace(sub, Entry{counter_for(subject != nullptr ? subject : "?"), 0, false})
               .first;
    }
    return update_locked(sub, it->second);
  }

  void refresh() {
    std::lock_guard lock(mutex_);
    for (auto& [sub, entry] : subs_) {
      if (entry.owned) update_locked(sub, entry);
    }
  }

 private:
  struct Entry {
    Counter* counter = nullptr;
    std::int64_t seen = 0;  // nats.c's count when last added to the counter
    bool owned = false;
  };

  Counter* counter_for(const std::string& subject) {
    if (metrics_ == nullptr) return nullptr;
    return &metrics_->counter("orgd_nats_slow_consumer_dropped_total",
                              "Messages nats.c dropped because orgd's handler fell behind, by "
                              "subscription subject",
                              {{"subscription", subject}});
  }

  std::int64_t update_locked(natsSubscription* sub, Entry& entry) {
    std::int64_t dropped = 0;
    if (natsSubscription_GetDropped(sub, &dropped) != NATS_OK) return entry.seen;
    // A subscription created at the address of an ended one starts from zero.
    if (dropped < entry.seen) entry.seen = 0;
    if (entry.counter != nullptr && dropped > entry.seen) {
      entry.counter->inc(static_cast<double>(dropped - entry.seen));
    }
    entry.seen = dropped;
    return dropped;
  }

  std::mutex mutex_;  // guards metrics_, subs_
  MetricsRegistry* metrics_ = nullptr;
  std::map<natsSubscription*, Entry> subs_;
};

// Secrets used by nats.c's signature/JWT callbacks; they live as long as the connection.
struct NatsConnection::Credentials {
  Secret seed;
  Secret jwt;
  Counter* errors = nullptr;

  static natsStatus sign(char** err_text, unsigned char** signature, int* length,
                         const char* nonce, void* closure) {
    auto* self = static_cast<Credentials*>(closure);
    return guard_callback_or("nats.credentials", self->errors, NATS_ERR, [&] {
      natsStatus s = nats_Sign(self->seed.c_str(), nonce, signature, length);
      if (s != NATS_OK && err_text != nullptr) {
        *err_text = strdup("signing the server nonce failed");
      }
      return s;
    });
  }

  static natsStatus user_jwt(char** jwt, char** err_text, void* closure) {
    auto* self = static_cast<Credentials*>(closure);
    return guard_callback_or("nats.credentials", self->errors, NATS_ERR, [&] {
      *jwt = strdup(self->jwt.c_str());
      return *jwt != nullptr ? NATS_OK : NATS_NO_MEMORY;
    });
  }
};

// A connection replaced by reopen(), with its JetStream context. Another thread may have read
// the pointer just before the swap, so it is destroyed only once it has been retired a while.
struct NatsConnection::Retired {
  std::chrono::steady_clock::time_point at;
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  void destroy() const {
    if (js != nullptr) jsCtx_Destroy(js);
    if (conn != nullptr) natsConnection_Destroy(conn);
  }
};

NatsConnection::NatsConnection(NatsConnectionSettings settings, StateListener on_state)
    : settings_(std::move(settings)),
      on_state_(std::move(on_state)),
      drops_(std::make_shared<DropCounters>()) {}

void NatsConnection::set_metrics(MetricsRegistry& metrics) {
  state_errors_ = &CallbackErrors::counter(metrics, "nats.state");
  async_error_errors_ = &CallbackErrors::counter(metrics, "nats.error_handler");
  message_errors_ = &CallbackErrors::counter(metrics, "nats.message");
  credential_errors_ = &CallbackErrors::counter(metrics, "nats.credentials");
  drops_->set_metrics(&metrics);
}

void NatsConnection::refresh_dropped() { drops_->refresh(); }

void NatsConnection::on_async_error(natsSubscription* sub, int status) {
  const auto err = static_cast<natsStatus>(status);
  const char* subject = sub != nullptr ? natsSubscription_GetSubject(sub) : nullptr;
  if (err == NATS_SLOW_CONSUMER && sub != nullptr) {
    const std::int64_t dropped = drops_->update(sub);
    // nats.c reports each time a subscription starts dropping again, which under a flood is
    // hundreds of times a second: the counter has them all, the log a few.
    if (async_error_log_.allow()) {
      logging::get("bus")->warn("slow consumer on {}: {} messages dropped so far",
                                subject != nullptr ? subject : "?", dropped);
    }
    return;
  }
  if (async_error_log_.allow()) {
    logging::get("bus")->warn("nats async error on {}: {}", subject ? subject : "connection",
                              natsStatus_GetText(err));
  }
}

NatsConnection::~NatsConnection() {
  close(std::chrono::milliseconds{500});
  if (js_.load() != nullptr) jsCtx_Destroy(js_.load());
  if (conn_ != nullptr) natsConnection_Destroy(conn_);
  for (const auto& retired : retired_) retired.destroy();
  if (options_ != nullptr) natsOptions_Destroy(options_);
}

void NatsConnection::set_state(ConnectionState s) {
  state_.store(s);
  // Called from nats.c's callbacks: the listener's exceptions stop here.
  guard_callback("nats.state", state_errors_, [&] {
    if (on_state_) on_state_(s);
  });
}

bool NatsConnection::current(natsConnection* conn) const {
  natsConnection* now = conn_.load();
  return now == nullptr || now == conn;
}

void NatsConnection::set_last_error(std::string reason) {
  std::lock_guard lock(error_mutex_);
  last_error_ = std::move(reason);
}

std::string NatsConnection::last_error() const {
  std::lock_guard lock(error_mutex_);
  return last_error_;
}

void NatsConnection::on_disconnected(natsConnection* nc, void* self) {
  auto* me = static_cast<NatsConnection*>(self);
  if (!me->current(nc)) return;
  if (!me->closing_.load()) me->set_last_error(kConnectionLost);
  me->set_state(ConnectionState::disconnected);
}

void NatsConnection::on_reconnected(natsConnection* nc, void* self) {
  auto* me = static_cast<NatsConnection*>(self);
  if (!me->current(nc)) return;
  me->reconnects_.fetch_add(1);
  me->set_last_error({});
  me->set_state(ConnectionState::connected);
}

// Called by nats.c (without its lock) before each pass over the server list while reconnecting:
// one attempt more, and the reason the last pass failed.
std::int64_t NatsConnection::reconnect_delay(natsConnection* nc, int attempts, void* self) {
  auto* me = static_cast<NatsConnection*>(self);
  return guard_callback_or("nats.state", me->state_errors_,
                           std::int64_t{me->settings_.reconnect_wait.count()},
                           [&] { return me->next_reconnect_delay(nc, attempts); });
}

std::int64_t NatsConnection::next_reconnect_delay(natsConnection* nc, int attempts) {
  auto* me = this;
  me->attempts_.fetch_add(1);
  const char* text = nullptr;
  const natsStatus err = natsConnection_GetLastError(nc, &text);
  // Before the first pass nothing has failed yet but the lost connection itself.
  if (err != NATS_OK || attempts > 1) {
    me->set_last_error(describe_failure(err, text != nullptr ? text : "", me->settings_.urls));
  }
  const auto& s = me->settings_;
  return backoff_delay(attempts, s.reconnect_wait, std::max(s.reconnect_wait, s.reconnect_max_wait))
      .count();
}

void NatsConnection::on_closed(natsConnection* nc, void* self) {
  auto* me = static_cast<NatsConnection*>(self);
  if (!me->current(nc)) return;
  if (!me->closing_.load()) {
    // nats.c gave up on its own: the server refused the same credentials twice (the error
    // handler kept the refusal; a close knows it only sometimes).
    const char* text = nullptr;
    const natsStatus err = natsConnection_GetLastError(nc, &text);
    if (err != NATS_OK && err != NATS_NO_SERVER && err != NATS_CONNECTION_CLOSED) {
      me->set_last_error(describe_failure(err, text != nullptr ? text : "", me->settings_.urls));
    }
  }
  me->set_state(ConnectionState::closed);
  // Notified under the lock: close() may destroy this object as soon as it sees the flag.
  guard_callback("nats.state", me->state_errors_, [&] {
    std::lock_guard lock(me->closed_mutex_);
    me->closed_delivered_ = true;
    me->closed_cv_.notify_all();
  });
}

void NatsConnection::connect() {
  if (settings_.urls.empty()) throw std::runtime_error("nats: no server URL configured");
  if (options_ != nullptr) throw std::runtime_error("nats: connect() called twice");
  natsOptions* opts = nullptr;
  check(natsOptions_Create(&opts), "options");
  std::unique_ptr<natsOptions, decltype(&natsOptions_Destroy)> guard(opts, natsOptions_Destroy);

  std::vector<const char*> urls;
  for (const auto& u : settings_.urls) urls.push_back(u.c_str());
  check(natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size())), "servers");
  check(natsOptions_SetName(opts, settings_.name.c_str()), "name");
  check(natsOptions_SetTimeout(opts, settings_.connect_timeout.count()), "timeout");
  check(natsOptions_SetMaxReconnect(opts, settings_.max_reconnect), "max reconnect");
  check(natsOptions_SetReconnectWait(opts, settings_.reconnect_wait.count()), "reconnect wait");
  // Exponential backoff from reconnect_wait up to reconnect_max_wait, once every server of the
  // list has been tried; each pass is counted and its failure kept as last_error().
  check(natsOptions_SetCustomReconnectDelay(opts, &NatsConnection::reconnect_delay, this),
        "reconnect delay");
  check(natsOptions_SetSendAsap(opts, true), "send asap");
  check(natsOptions_SetDisconnectedCB(opts, &NatsConnection::on_disconnected, this), "cb");
  check(natsOptions_SetReconnectedCB(opts, &NatsConnection::on_reconnected, this), "cb");
  check(natsOptions_SetClosedCB(opts, &NatsConnection::on_closed, this), "cb");
  check(natsOptions_SetErrorHandler(
            opts,
            [](natsConnection* nc, natsSubscription* sub, natsStatus err, void* self) {
              auto* me = static_cast<NatsConnection*>(self);
              guard_callback("nats.error_handler", me->async_error_errors_, [&] {
                me->on_async_error(sub, err);
                // A refusal while reconnecting is reported only here; nats.c gives up after the
                // same one twice, and the closed callback no longer knows why.
                if (sub == nullptr && err == NATS_CONNECTION_AUTH_FAILED && me->current(nc)) {
                  const char* text = nullptr;
                  natsConnection_GetLastError(nc, &text);
                  me->set_last_error(
                      describe_failure(err, text != nullptr ? text : "", me->settings_.urls));
                }
              });
            },
            this),
        "error handler");

  if (settings_.tls_required || !settings_.tls.ca_file.empty() ||
      !settings_.tls.cert_file.empty()) {
    check(natsOptions_SetSecure(opts, true), "tls");
    if (!settings_.tls.ca_file.empty()) {
      check(natsOptions_LoadCATrustedCertificates(opts, settings_.tls.ca_file.c_str()),
            "tls ca_file");
    }
    if (!settings_.tls.cert_file.empty()) {
      check(natsOptions_LoadCertificatesChain(opts, settings_.tls.cert_file.c_str(),
                                              settings_.tls.key_file.c_str()),
            "tls cert_file/key_file");
    }
  }

  if (!settings_.creds_file.empty()) {
    check(natsOptions_SetUserCredentialsFromFiles(opts, settings_.creds_file.c_str(), nullptr),
          "creds_file");
  } else if (!settings_.jwt.empty()) {
    credentials_ = std::make_unique<Credentials>();
    credentials_->errors = credential_errors_;
    credentials_->jwt = settings_.jwt.clone();
    credentials_->seed = settings_.jwt_seed.clone();
    check(natsOptions_SetUserCredentialsCallbacks(opts, &Credentials::user_jwt, credentials_.get(),
                                                  &Credentials::sign, credentials_.get()),
          "jwt");
  } else if (!settings_.nkey_seed.empty()) {
    credentials_ = std::make_unique<Credentials>();
    credentials_->errors = credential_errors_;
    credentials_->seed = settings_.nkey_seed.clone();
    std::string public_key;
    try {
      public_key = nkeys::public_key_from_seed(credentials_->seed.expose());
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("nats: nkey seed: {}", e.what()));
    }
    check(natsOptions_SetNKey(opts, public_key.c_str(), &Credentials::sign, credentials_.get()),
          "nkey");
  }
  if (!settings_.token.empty()) check(natsOptions_SetToken(opts, settings_.token.c_str()), "token");
  if (!settings_.user.empty()) {
    check(natsOptions_SetUserInfo(opts, settings_.user.c_str(), settings_.password.c_str()),
          "user");
  }

  options_ = guard.release();
  const natsStatus s = static_cast<natsStatus>(open());
  if (s == NATS_OK || s == NATS_NOT_YET_CONNECTED) return;
  if (!settings_.retry_on_failed_connect) {
    throw std::runtime_error(fmt::format("nats: cannot connect to {}: {}",
                                         redact_urls(settings_.urls), last_error()));
  }
  // Refused at once (nats.c does not retry a refusal): reopen() tries again later.
  set_state(ConnectionState::closed);
}

int NatsConnection::open() {
  attempts_.fetch_add(1);
  natsConnection* conn = nullptr;
  // A first attempt on its own, so a refusal comes back with its reason (nats.c's retrying
  // connect forgets it) and leaves no connection behind.
  natsOptions_SetRetryOnFailedConnect(options_, false, nullptr, nullptr);
  natsStatus s = natsConnection_Connect(&conn, options_);
  // nats.c before 3.8 sends an empty nonce signature when the signature's first byte is zero
  // (nats.c PR #705), so one nkey/JWT connect in 256 is refused at random. Another attempt gets
  // another nonce and so another signature.
  const bool signs_nonce = !settings_.nkey_seed.empty() || !settings_.creds_file.empty() ||
                           !settings_.jwt.empty();
  for (int attempt = 1; s == NATS_CONNECTION_AUTH_FAILED && signs_nonce && attempt < 3;
       ++attempt) {
    s = natsConnection_Connect(&conn, options_);
  }
  if (s != NATS_OK) set_last_error(describe_failure(s, thread_error_text(), settings_.urls));
  if (s == NATS_NO_SERVER && settings_.retry_on_failed_connect) {
    // No server is there yet: nats.c keeps trying on its own thread, with the reconnect
    // backoff, and the connected callback reports success.
    natsOptions_SetRetryOnFailedConnect(
        options_, true,
        [](natsConnection* nc, void* self) {
          auto* me = static_cast<NatsConnection*>(self);
          if (!me->current(nc)) return;
          me->set_last_error({});
          me->set_state(ConnectionState::connected);
        },
        this);
    s = natsConnection_Connect(&conn, options_);
  }
  // NATS_NOT_YET_CONNECTED: nats.c keeps trying; the connected callback reports success.
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    if (s != NATS_NO_SERVER) set_last_error(describe_failure(s, thread_error_text(), settings_.urls));
    return s;
  }
  if (closing_.load()) {
    // close() ran meanwhile: this connection must not outlive it.
    natsConnection_Close(conn);
    natsConnection_Destroy(conn);
    return NATS_CONNECTION_CLOSED;
  }
  install(conn);
  if (s == NATS_OK) {
    set_last_error({});
    set_state(ConnectionState::connected);
  }
  return s;
}

void NatsConnection::install(natsConnection* conn) {
  jsOptions jso;
  jsOptions_Init(&jso);
  jso.Wait = 5000;
  jsCtx* js = nullptr;
  if (natsConnection_JetStream(&js, conn, &jso) != NATS_OK) js = nullptr;
  {
    std::lock_guard lock(closed_mutex_);
    closed_delivered_ = false;
  }
  natsConnection* old_conn = conn_.exchange(conn);
  jsCtx* old_js = js_.exchange(js);
  generation_.fetch_add(1);
  if (old_conn == nullptr) return;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(retired_mutex_);
  // Nobody still uses a pointer read a minute ago: calls on a closed connection return at once.
  std::erase_if(retired_, [&](const Retired& r) {
    if (now - r.at < std::chrono::minutes(1)) return false;
    r.destroy();
    return true;
  });
  retired_.push_back({now, old_conn, old_js});
}

Result<Ok> NatsConnection::reopen() {
  if (closing_.load()) return unavailable("the NATS connection is being closed");
  if (!gave_up()) return Ok{};
  const natsStatus s = static_cast<natsStatus>(open());
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) return unavailable(last_error());
  return Ok{};
}

std::string NatsConnection::connected_url() const {
  char buf[256] = {0};
  if (conn_ == nullptr || natsConnection_GetConnectedUrl(conn_, buf, sizeof buf) != NATS_OK) {
    return {};
  }
  return buf;
}

std::size_t NatsConnection::max_payload() const {
  if (conn_ == nullptr) return 0;
  const int64_t max = natsConnection_GetMaxPayload(conn_);
  return max > 0 ? static_cast<std::size_t>(max) : 0;
}

Result<Ok> NatsConnection::publish(const BusMessage& message) {
  if (conn_ == nullptr) return unavailable("not connected to NATS");
  const std::size_t max = max_payload();
  const auto over = [&] {
    return too_large(fmt::format("{} bytes, over the NATS server's max_payload of {} bytes",
                                 message.wire_size(), max));
  };
  if (max > 0 && message.wire_size() > max) return over();
  natsMsg* msg = message.to_nats();
  if (msg == nullptr) return internal_error("cannot build a NATS message");
  natsStatus s = natsConnection_PublishMsg(conn_, msg);
  natsMsg_Destroy(msg);
  if (s == NATS_MAX_PAYLOAD) return over();
  if (s != NATS_OK) return unavailable(fmt::format("publish: {}", status_text(s)));
  return Ok{};
}

Result<BusMessage> NatsConnection::request(const BusMessage& message,
                                           std::chrono::milliseconds timeout) {
  if (conn_ == nullptr) return unavailable("not connected to NATS");
  natsMsg* msg = message.to_nats();
  if (msg == nullptr) return internal_error("cannot build a NATS message");
  natsMsg* reply = nullptr;
  natsStatus s = natsConnection_RequestMsg(&reply, conn_, msg, timeout.count());
  natsMsg_Destroy(msg);
  if (s == NATS_NO_RESPONDERS) {
    return unavailable(fmt::format("no responders on {}", message.subject));
  }
  if (s == NATS_TIMEOUT) {
    return unavailable(fmt::format("no reply on {} within {} ms", message.subject, timeout.count()));
  }
  if (s != NATS_OK) return unavailable(fmt::format("request: {}", status_text(s)));
  BusMessage out = BusMessage::copy_from(reply);
  natsMsg_Destroy(reply);
  return out;
}

void NatsConnection::flush(std::chrono::milliseconds timeout) {
  if (conn_ != nullptr) natsConnection_FlushTimeout(conn_, timeout.count());
}

struct NatsConnection::Subscription::Closure {
  MessageHandler handler;
  Counter* errors = nullptr;
  std::mutex mutex;
  std::condition_variable cv;
  bool complete = false;

  static void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<Closure*>(closure);
    guard_callback("nats.message", self->errors, [&] {
      std::unique_ptr<natsMsg, decltype(&natsMsg_Destroy)> owned(msg, natsMsg_Destroy);
      BusMessage copy = BusMessage::copy_from(msg);
      owned.reset();
      self->handler(std::move(copy));
    });
  }

  static void on_complete(void* closure) {
    auto* self = static_cast<Closure*>(closure);
    guard_callback("nats.message", self->errors, [&] {
      std::lock_guard lock(self->mutex);
      self->complete = true;
      self->cv.notify_all();
    });
  }
};

std::unique_ptr<NatsConnection::Subscription> NatsConnection::subscribe(
    const std::string& subject, const std::string& queue_group, MessageHandler handler,
    PendingLimits limits) {
  if (conn_ == nullptr) throw std::runtime_error("nats: subscribe before connect");
  std::unique_ptr<Subscription> sub(new Subscription());
  sub->closure_ = std::make_shared<Subscription::Closure>();
  sub->closure_->handler = std::move(handler);
  sub->closure_->errors = message_errors_;
  sub->subject_ = subject;
  sub->conn_ = conn_;
  natsStatus s =
      queue_group.empty()
          ? natsConnection_Subscribe(&sub->sub_, conn_, subject.c_str(),
                                     &Subscription::Closure::on_message, sub->closure_.get())
          : natsConnection_QueueSubscribe(&sub->sub_, conn_, subject.c_str(), queue_group.c_str(),
                                          &Subscription::Closure::on_message,
                                          sub->closure_.get());
  check(s, "subscribe");
  natsSubscription_SetOnCompleteCB(sub->sub_, &Subscription::Closure::on_complete,
                                   sub->closure_.get());
  // Room for bursts; beyond this nats.c drops and reports a slow consumer (counted).
  natsSubscription_SetPendingLimits(sub->sub_, limits.messages, limits.bytes);
  sub->drops_ = drops_;
  drops_->track(sub->sub_, subject);
  return sub;
}

void NatsConnection::Subscription::drain(std::chrono::milliseconds timeout) {
  if (sub_ == nullptr) return;
  if (natsSubscription_DrainTimeout(sub_, timeout.count()) == NATS_OK) {
    natsSubscription_WaitForDrainCompletion(sub_, timeout.count());
  }
}

void NatsConnection::Subscription::drain_all(const std::vector<Subscription*>& subscriptions,
                                             std::chrono::steady_clock::time_point deadline) {
  auto left = [&] {
    return std::max<std::int64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                              std::chrono::steady_clock::now())
            .count(),
        1);
  };
  std::vector<natsSubscription*> draining;
  for (Subscription* sub : subscriptions) {
    if (sub == nullptr || sub->sub_ == nullptr || !natsSubscription_IsValid(sub->sub_)) continue;
    natsConnection* conn = sub->conn_;
    if (conn == nullptr || natsConnection_Status(conn) != NATS_CONN_STATUS_CONNECTED) {
      sub->unsubscribe();
      continue;
    }
    if (natsSubscription_DrainTimeout(sub->sub_, left()) == NATS_OK) {
      draining.push_back(sub->sub_);
    } else {
      sub->unsubscribe();
    }
  }
  for (natsSubscription* sub : draining) natsSubscription_WaitForDrainCompletion(sub, left());
}

void NatsConnection::Subscription::unsubscribe() {
  if (sub_ != nullptr && natsSubscription_IsValid(sub_)) natsSubscription_Unsubscribe(sub_);
}

int64_t NatsConnection::Subscription::dropped() const {
  int64_t n = 0;
  if (sub_ != nullptr) natsSubscription_GetDropped(sub_, &n);
  return n;
}

NatsConnection::Subscription::~Subscription() {
  if (sub_ == nullptr) return;
  // While nats.c still answers for it.
  if (drops_) drops_->untrack(sub_);
  unsubscribe();
  // The closure must outlive the last callback: wait for nats.c's completion signal.
  bool complete;
  {
    std::unique_lock lock(closure_->mutex);
    complete =
        closure_->cv.wait_for(lock, std::chrono::seconds(2), [&] { return closure_->complete; });
  }
  if (!complete) {
    // A callback may still run: keep its closure alive for the rest of the process.
    new std::shared_ptr<Closure>(closure_);  // NOLINT: deliberate leak
  }
  natsSubscription_Destroy(sub_);
}

void NatsConnection::close(std::chrono::milliseconds timeout) {
  closing_.store(true);
  natsConnection* conn = conn_.load();
  if (conn == nullptr) return;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (!natsConnection_IsClosed(conn)) {
    // Only a live connection can flush; a reconnecting one would wait for the whole timeout.
    if (natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED) {
      natsConnection_FlushTimeout(conn, std::max<std::int64_t>(timeout.count() / 2, 1));
    }
    natsConnection_Close(conn);
  }
  // nats.c reports the close on its own thread after Close() returns; the callbacks point at
  // this object, so wait for the last one before anyone may destroy it.
  std::unique_lock lock(closed_mutex_);
  if (!closed_cv_.wait_until(lock, std::max(deadline, std::chrono::steady_clock::now() +
                                                          std::chrono::milliseconds(200)),
                             [&] { return closed_delivered_; })) {
    logging::get("bus")->warn("NATS close was not confirmed within {} ms", timeout.count());
  }
}

}  // namespace orgd
