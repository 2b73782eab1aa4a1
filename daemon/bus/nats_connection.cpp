#include "daemon/bus/nats_connection.hpp"

#include <fmt/format.h>
#include <nats/nats.h>
#include <sodium.h>

#include <condition_variable>
#include <cstring>
#include <map>
#include <stdexcept>
#include <thread>

#include "daemon/bus/callback_guard.hpp"
#include "daemon/bus/nkeys.hpp"
#include "daemon/core/logging.hpp"

namespace orgd {
namespace {

std::string status_text(natsStatus s) { return natsStatus_GetText(s); }

void check(natsStatus s, const char* what) {
  if (s != NATS_OK) throw std::runtime_error(fmt::format("nats: {}: {}", what, status_text(s)));
}

void wipe(std::string& s) {
  if (!s.empty()) sodium_memzero(s.data(), s.size());
  s.clear();
}

}  // namespace

std::string redact_urls(const std::vector<std::string>& urls) {
  std::string out;
  for (const auto& url : urls) {
    if (!out.empty()) out += ',';
    auto scheme = url.find("://");
    auto host_start = scheme == std::string::npos ? 0 : scheme + 3;
    auto at = url.find('@', host_start);
    auto slash = url.find('/', host_start);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      out += url.substr(0, host_start) + "***" + url.substr(at);
    } else {
      out += url;
    }
  }
  return out;
}

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
  std::string seed;
  std::string jwt;
  Counter* errors = nullptr;
  ~Credentials() {
    wipe(seed);
    wipe(jwt);
  }

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
  wipe(settings_.token);
  wipe(settings_.password);
  wipe(settings_.nkey_seed);
  wipe(settings_.jwt);
  wipe(settings_.jwt_seed);
}

void NatsConnection::set_state(ConnectionState s) {
  state_.store(s);
  // Called from nats.c's callbacks: the listener's exceptions stop here.
  guard_callback("nats.state", state_errors_, [&] {
    if (on_state_) on_state_(s);
  });
}

void NatsConnection::on_disconnected(natsConnection*, void* self) {
  static_cast<NatsConnection*>(self)->set_state(ConnectionState::disconnected);
}

void NatsConnection::on_reconnected(natsConnection*, void* self) {
  auto* me = static_cast<NatsConnection*>(self);
  me->reconnects_.fetch_add(1);
  me->set_state(ConnectionState::connected);
}

void NatsConnection::on_closed(natsConnection*, void* self) {
  auto* me = static_cast<NatsConnection*>(self);
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
  // Exponential backoff from reconnect_wait up to 30 s, with up to 25% jitter, once every
  // server of the list has been tried.
  check(natsOptions_SetCustomReconnectDelay(
            opts,
            [](natsConnection*, int attempts, void* self) -> int64_t {
              auto* me = static_cast<NatsConnection*>(self);
              return guard_callback_or(
                  "nats.state", me->state_errors_, int64_t{1000}, [&]() -> int64_t {
                    auto base = me->settings_.reconnect_wait.count();
                    int64_t delay = std::max<int64_t>(base, 1);
                    for (int i = 1; i < attempts && delay < 30'000; ++i) delay *= 2;
                    delay = std::min<int64_t>(delay, 30'000);
                    return delay + randombytes_uniform(static_cast<uint32_t>(delay / 4 + 1));
                  });
            },
            this),
        "reconnect delay");
  check(natsOptions_SetSendAsap(opts, true), "send asap");
  check(natsOptions_SetDisconnectedCB(opts, &NatsConnection::on_disconnected, this), "cb");
  check(natsOptions_SetReconnectedCB(opts, &NatsConnection::on_reconnected, this), "cb");
  check(natsOptions_SetClosedCB(opts, &NatsConnection::on_closed, this), "cb");
  check(natsOptions_SetErrorHandler(
            opts,
            [](natsConnection*, natsSubscription* sub, natsStatus err, void* self) {
              auto* me = static_cast<NatsConnection*>(self);
              guard_callback("nats.error_handler", me->async_error_errors_,
                             [&] { me->on_async_error(sub, err); });
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
    credentials_->jwt = settings_.jwt;
    credentials_->seed = settings_.jwt_seed;
    check(natsOptions_SetUserCredentialsCallbacks(opts, &Credentials::user_jwt, credentials_.get(),
                                                  &Credentials::sign, credentials_.get()),
          "jwt");
  } else if (!settings_.nkey_seed.empty()) {
    credentials_ = std::make_unique<Credentials>();
    credentials_->errors = credential_errors_;
    credentials_->seed = settings_.nkey_seed;
    std::string public_key;
    try {
      public_key = nkeys::public_key_from_seed(credentials_->seed);
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

  if (settings_.retry_on_failed_connect) {
    check(natsOptions_SetRetryOnFailedConnect(
              opts, true,
              [](natsConnection*, void* self) {
                static_cast<NatsConnection*>(self)->set_state(ConnectionState::connected);
              },
              this),
          "retry on failed connect");
  }

  natsConnection* conn = nullptr;
  natsStatus s = natsConnection_Connect(&conn, opts);
  // nats.c before 3.8 sends an empty nonce signature when the signature's first byte is zero
  // (nats.c PR #705), so one nkey/JWT connect in 256 is refused at random. Another attempt gets
  // another nonce and so another signature. (With retry_on_failed_connect nats.c retries
  // itself.)
  const bool signs_nonce = !settings_.nkey_seed.empty() || !settings_.creds_file.empty() ||
                           !settings_.jwt.empty();
  for (int attempt = 1; s == NATS_CONNECTION_AUTH_FAILED && signs_nonce && attempt < 3;
       ++attempt) {
    s = natsConnection_Connect(&conn, opts);
  }
  // NATS_NOT_YET_CONNECTED: nats.c keeps trying; the connected callback reports success.
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    throw std::runtime_error(fmt::format("nats: cannot connect to {}: {}",
                                         redact_urls(settings_.urls), status_text(s)));
  }
  jsOptions jso;
  jsOptions_Init(&jso);
  jso.Wait = 5000;
  conn_.store(conn);
  jsCtx* js = nullptr;
  check(natsConnection_JetStream(&js, conn, &jso), "jetstream context");
  js_.store(js);
  if (s == NATS_OK) set_state(ConnectionState::connected);
}

std::string NatsConnection::connected_url() const {
  char buf[256] = {0};
  if (conn_ == nullptr || natsConnection_GetConnectedUrl(conn_, buf, sizeof buf) != NATS_OK) {
    return {};
  }
  return buf;
}

Result<Ok> NatsConnection::publish(const BusMessage& message) {
  if (conn_ == nullptr) return unavailable("not connected to NATS");
  natsMsg* msg = message.to_nats();
  if (msg == nullptr) return internal_error("cannot build a NATS message");
  natsStatus s = natsConnection_PublishMsg(conn_, msg);
  natsMsg_Destroy(msg);
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
  if (conn_ == nullptr) return;
  if (!natsConnection_IsClosed(conn_)) {
    natsConnection_FlushTimeout(conn_, timeout.count());
    natsConnection_Close(conn_);
  }
  // nats.c reports the close on its own thread after Close() returns; the callbacks point at
  // this object, so wait for the last one before anyone may destroy it.
  std::unique_lock lock(closed_mutex_);
  if (!closed_cv_.wait_for(lock, std::chrono::seconds(5), [&] { return closed_delivered_; })) {
    logging::get("bus")->warn("NATS close was not confirmed within 5 s");
  }
}

}  // namespace orgd
