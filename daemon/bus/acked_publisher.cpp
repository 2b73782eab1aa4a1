#include "daemon/bus/acked_publisher.hpp"

#include <fmt/format.h>
#include <nats/nats.h>

#include <algorithm>

#include "daemon/bus/callback_guard.hpp"
#include "daemon/bus/nats_connection.hpp"
#include "daemon/core/logging.hpp"

namespace orgd {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kMaxRetryDelay{5000};

}  // namespace

AckedPublisher::AckedPublisher(NatsConnection& nats, MetricsRegistry& metrics,
                               AckedPublisherSettings settings)
    : nats_(nats), settings_(std::move(settings)), gate_(new Gate) {
  auto count = [&](const char* result) {
    return &metrics.counter("orgd_acked_publishes_total",
                            "Acknowledged JetStream publishes (events, health state), by kind "
                            "and result",
                            {{"kind", settings_.kind}, {"result", result}});
  };
  acked_ = count("acked");
  failed_ = count("failed");
  given_up_ = count("given_up");
  refused_ = count("refused");
  superseded_ = count("superseded");
  too_large_ = count("too_large");
  callback_errors_ = &CallbackErrors::counter(metrics, "jetstream.ack");
  pending_gauge_ = &metrics.gauge("orgd_acked_publishes_pending",
                                  "Acknowledged publishes queued or waiting for their ack",
                                  {{"kind", settings_.kind}});
  gate_->owner = this;
  worker_ = std::thread([this] { run(); });
}

AckedPublisher::~AckedPublisher() {
  stop(std::chrono::milliseconds{0});
  {
    // From here on a late ack only frees its message.
    std::lock_guard lock(gate_->mutex);
    gate_->owner = nullptr;
  }
  // Messages still in flight are nats.c's; it frees them with the context.
  std::lock_guard lock(mutex_);
  if (js_ != nullptr) jsCtx_Destroy(js_);
  js_ = nullptr;
  // With an ack outstanding nats.c may still call the gate after this object is gone.
  if (in_flight_.empty() && !orphaned_acks_) {
    delete gate_;
  } else {
    park_gate(gate_);
  }
}

void AckedPublisher::park_gate(Gate* gate) {
  static std::mutex parked_mutex;
  static std::vector<std::unique_ptr<Gate>> parked;
  std::lock_guard lock(parked_mutex);
  parked.emplace_back(gate);
}

std::size_t AckedPublisher::max_payload() const { return nats_.max_payload(); }

Result<Ok> AckedPublisher::check_size(const BusMessage& message) {
  const std::size_t max = nats_.max_payload();
  if (max == 0 || message.wire_size() <= max) return Ok{};
  too_large_->inc();
  auto error = too_large(fmt::format("{} bytes, over the NATS server's max_payload of {} bytes",
                                     message.wire_size(), max));
  if (!too_large_logged_.exchange(true)) {
    logging::get("bus")->error(
        "{} publish on {} refused: {} (counted in orgd_acked_publishes_total{{result=\"too_large\"}}; "
        "not logged again)",
        settings_.kind, message.subject, error.message);
  }
  return error;
}

Result<Ok> AckedPublisher::publish(const BusMessage& message) {
  if (auto fits = check_size(message); !fits) return fits;
  std::lock_guard lock(mutex_);
  if (stopping_) return unavailable("the publisher is stopping");
  if (queued_ >= settings_.max_queued) {
    refused_->inc();
    return unavailable(fmt::format("{} publishes are already waiting", queued_));
  }
  ready_.push_back(Item{message, 0, {}});
  ++queued_;
  pending_gauge_->set(static_cast<double>(queued_ + in_flight_.size()));
  wake_.notify_one();
  return Ok{};
}

Result<Ok> AckedPublisher::publish_latest(const BusMessage& message) {
  if (auto fits = check_size(message); !fits) return fits;
  std::lock_guard lock(mutex_);
  if (stopping_) return unavailable("the publisher is stopping");
  Latest& slot = latest_[message.subject];
  if (slot.next) {
    // Not sent yet (or waiting to be sent again): the newer state takes its place.
    superseded_->inc();
  } else if (queued_ >= settings_.max_queued) {
    refused_->inc();
    if (!slot.in_flight) latest_.erase(message.subject);
    return unavailable(fmt::format("{} publishes are already waiting", queued_));
  } else {
    ++queued_;
  }
  slot.next = std::make_unique<Item>(Item{message, 0, message.subject});
  // A fresh state does not wait out the backoff of the one it replaces.
  slot.not_before = {};
  if (!slot.in_flight) latest_ready_.push_back(message.subject);
  pending_gauge_->set(static_cast<double>(queued_ + in_flight_.size()));
  wake_.notify_one();
  return Ok{};
}

bool AckedPublisher::idle_locked() const { return queued_ == 0 && in_flight_.empty(); }

std::size_t AckedPublisher::pending() const {
  std::lock_guard lock(mutex_);
  return queued_ + in_flight_.size();
}

bool AckedPublisher::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return idle_.wait_for(lock, timeout, [&] { return idle_locked(); });
}

void AckedPublisher::stop(std::chrono::milliseconds budget) {
  {
    std::unique_lock lock(mutex_);
    if (!worker_.joinable()) return;
    stopping_ = true;
    wake_.notify_all();
    idle_.wait_for(lock, budget, [&] { return idle_locked(); });
    if (queued_ > 0) {
      given_up_->inc(static_cast<double>(queued_));
      logging::get("bus")->warn("{}: {} publishes not sent before shutdown", settings_.kind,
                                queued_);
    }
    ready_.clear();
    retries_.clear();
    latest_ready_.clear();
    latest_retries_.clear();
    for (auto it = latest_.begin(); it != latest_.end();) {
      it->second.next.reset();
      it = it->second.in_flight ? std::next(it) : latest_.erase(it);
    }
    queued_ = 0;
    wake_.notify_all();
  }
  worker_.join();
}

std::chrono::milliseconds AckedPublisher::delay_after(int attempts) const {
  auto delay = settings_.retry_delay;
  for (int i = 1; i < attempts && delay < kMaxRetryDelay; ++i) delay *= 2;
  return std::min(delay, kMaxRetryDelay);
}

void AckedPublisher::run() {
  std::unique_lock lock(mutex_);
  while (true) {
    if (stopping_ && queued_ == 0) break;
    const auto now = SteadyClock::now();
    // Retries that are due go first, ahead of newer audit messages.
    while (!retries_.empty() && retries_.begin()->first <= now) {
      ready_.push_front(std::move(retries_.begin()->second));
      retries_.erase(retries_.begin());
    }
    while (!latest_retries_.empty() && latest_retries_.begin()->first <= now) {
      latest_ready_.push_back(std::move(latest_retries_.begin()->second));
      latest_retries_.erase(latest_retries_.begin());
    }
    bool progressed = false;
    while (in_flight_.size() < settings_.max_in_flight &&
           (!latest_ready_.empty() || !ready_.empty())) {
      Item item;
      if (!latest_ready_.empty()) {
        const std::string key = std::move(latest_ready_.front());
        latest_ready_.pop_front();
        auto it = latest_.find(key);
        if (it == latest_.end() || it->second.in_flight || !it->second.next ||
            it->second.not_before > now) {
          continue;
        }
        item = std::move(*it->second.next);
        it->second.next.reset();
        it->second.in_flight = true;
      } else {
        item = std::move(ready_.front());
        ready_.pop_front();
      }
      --queued_;
      progressed = true;
      send(std::move(item), lock);
    }
    pending_gauge_->set(static_cast<double>(queued_ + in_flight_.size()));
    if (idle_locked()) idle_.notify_all();
    if (progressed) continue;
    // Nothing sendable now: wait for a message, an ack or the next retry.
    auto next = SteadyClock::time_point::max();
    if (!retries_.empty()) next = std::min(next, retries_.begin()->first);
    if (!latest_retries_.empty()) next = std::min(next, latest_retries_.begin()->first);
    if (next == SteadyClock::time_point::max()) {
      wake_.wait(lock);
    } else {
      wake_.wait_until(lock, next);
    }
  }
  idle_.notify_all();
}

// Called with the lock held; releases it around nats.c's publish call.
bool AckedPublisher::send(Item item, std::unique_lock<std::mutex>& lock) {
  ++item.attempts;
  if (js_ != nullptr && js_generation_ != nats_.generation()) {
    // NatsConnection::reopen() replaced the connection: the old context's acks will not come,
    // so what waits for them is sent again on a context of the new connection.
    jsCtx_Destroy(js_);
    js_ = nullptr;
    orphaned_acks_ = orphaned_acks_ || !in_flight_.empty();
    auto orphans = std::move(in_flight_);
    in_flight_.clear();
    for (auto& [orphan_msg, orphan] : orphans) {
      failed(std::move(orphan), "the NATS connection was replaced before the ack");
    }
  }
  if (js_ == nullptr && nats_.raw() != nullptr) {
    js_generation_ = nats_.generation();
    jsOptions options;
    jsOptions_Init(&options);
    options.PublishAsync.MaxPending = static_cast<int64_t>(settings_.max_in_flight) + 16;
    options.PublishAsync.AckHandlerClosure = gate_;
    options.PublishAsync.AckHandler = [](jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* error,
                                         void* closure) {
      auto* gate = static_cast<Gate*>(closure);
      guard_callback("jetstream.ack", nullptr, [&] {
        std::lock_guard gate_lock(gate->mutex);
        if (gate->owner == nullptr) {
          natsMsg_Destroy(msg);
          return;
        }
        AckedPublisher* self = gate->owner;
        guard_callback("jetstream.ack", self->callback_errors_, [&] {
          std::string why;
          if (ack == nullptr) {
            why = error != nullptr && error->ErrText != nullptr ? error->ErrText
                                                                : "no acknowledgement";
          }
          self->on_ack(msg, ack != nullptr, why);
        });
      });
    };
    jsCtx* js = nullptr;
    if (natsConnection_JetStream(&js, nats_.raw(), &options) == NATS_OK) js_ = js;
  }
  if (js_ == nullptr) {
    failed(std::move(item), "not connected to NATS");
    return false;
  }
  natsMsg* msg = item.message.to_nats();
  if (msg == nullptr) {
    failed(std::move(item), "nats.c refused the message");
    return false;
  }
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = settings_.ack_timeout.count();
  jsCtx* js = js_;
  // Registered first: the ack may come before js_PublishMsgAsync returns.
  in_flight_.emplace(msg, std::move(item));
  lock.unlock();
  natsMsg* sent = msg;
  const natsStatus s = js_PublishMsgAsync(js, &sent, &options);
  lock.lock();
  if (s == NATS_OK) return true;
  // Not taken by nats.c: no ack will come for it.
  natsMsg_Destroy(msg);
  auto it = in_flight_.find(msg);
  if (it == in_flight_.end()) return false;
  Item back = std::move(it->second);
  in_flight_.erase(it);
  failed(std::move(back), natsStatus_GetText(s));
  return false;
}

void AckedPublisher::on_ack(natsMsg* msg, bool ok, const std::string& error) {
  std::lock_guard lock(mutex_);
  auto it = in_flight_.find(msg);
  natsMsg_Destroy(msg);
  if (it == in_flight_.end()) return;
  Item item = std::move(it->second);
  in_flight_.erase(it);
  if (ok) {
    acked_->inc();
    if (!item.latest_key.empty()) {
      auto slot = latest_.find(item.latest_key);
      if (slot != latest_.end()) {
        slot->second.in_flight = false;
        if (slot->second.next) {
          latest_ready_.push_back(item.latest_key);
        } else {
          latest_.erase(slot);
        }
      }
    }
  } else {
    failed(std::move(item), error);
  }
  pending_gauge_->set(static_cast<double>(queued_ + in_flight_.size()));
  wake_.notify_one();
  if (idle_locked()) idle_.notify_all();
}

// Called with the lock held.
void AckedPublisher::failed(Item item, const std::string& why) {
  failed_->inc();
  const bool again = item.attempts < settings_.max_attempts && !stopping_;
  const int attempts = item.attempts;
  std::uint64_t suppressed = 0;
  if (log_limiter_.allow(&suppressed)) {
    logging::get("bus")->warn(
        "{} publish on {} failed (attempt {} of {}): {}{}{}", settings_.kind, item.message.subject,
        attempts, settings_.max_attempts, why, again ? "; trying again" : "; given up",
        suppressed > 0 ? fmt::format(" ({} similar lines not logged)", suppressed) : "");
  }
  const auto when = SteadyClock::now() + delay_after(item.attempts);
  if (!item.latest_key.empty()) {
    const std::string key = item.latest_key;
    Latest& slot = latest_[key];
    slot.in_flight = false;
    if (slot.next) {
      // A newer state is waiting: this one is obsolete, the newer one goes instead.
      latest_ready_.push_back(key);
      return;
    }
    if (again) {
      slot.next = std::make_unique<Item>(std::move(item));
      slot.not_before = when;
      ++queued_;
      latest_retries_.emplace(when, key);
    } else {
      latest_.erase(key);
      given_up_->inc();
    }
  } else if (again) {
    retries_.emplace(when, std::move(item));
    ++queued_;
  } else {
    given_up_->inc();
  }
}

}  // namespace orgd
