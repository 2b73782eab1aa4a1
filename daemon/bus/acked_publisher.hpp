#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "daemon/bus/message.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/core/log_limiter.hpp"
#include "daemon/core/metrics.hpp"

struct __jsCtx;
struct __natsMsg;

namespace orgd {

class NatsConnection;

struct AckedPublisherSettings {
  // Publishes waiting for the server's ack at once (nats.c's async publish window).
  std::size_t max_in_flight = 1024;
  // Messages waiting to go out (first attempts and retries); beyond it publish() refuses.
  std::size_t max_queued = 16'384;
  // Attempts per message, the first included; then it is given up (counted and logged). With
  // the delays below, 8 attempts span about 16 s plus the ack timeouts.
  int max_attempts = 8;
  // No ack within this: the attempt failed (the server may still have stored it: events carry
  // Nats-Msg-Id, so the stream drops the duplicate of a retry).
  std::chrono::milliseconds ack_timeout{5000};
  // Delay before the second attempt; doubles for each further one, up to 5 s.
  std::chrono::milliseconds retry_delay{200};
  // Labels the metrics: "events", "health_state", ...
  std::string kind = "events";
};

// Acknowledged JetStream publishes for what must reach a stream (the audit trail ORGD_EVENTS,
// the last-state stream ORGD_HEALTH): nats.c's async publish with an ack handler, a bounded
// window in flight and a bounded queue, every failure counted and retried a bounded number of
// times. publish() returns at once; the outcome is in orgd_acked_publishes_total{kind,result}:
// acked, failed (an attempt the server refused or did not ack in time), given_up (attempts
// exhausted), refused (the queue was full), superseded (a state replaced by a newer one before
// it went out).
//
// One worker thread makes every nats.c publish call; the ack handler (a nats.c thread) only
// records the outcome and wakes it.
class AckedPublisher final : public Publisher {
 public:
  AckedPublisher(NatsConnection& nats, MetricsRegistry& metrics,
                 AckedPublisherSettings settings = {});
  ~AckedPublisher() override;
  AckedPublisher(const AckedPublisher&) = delete;
  AckedPublisher& operator=(const AckedPublisher&) = delete;

  // Audit-trail messages: published in the order given; a retried one may land after later
  // ones (each event carries its time).
  Result<Ok> publish(const BusMessage& message) override;

  // The last state of something, on a subject of a stream that keeps one message per subject:
  // per subject at most one publish is in flight and only the newest state waits behind it,
  // so the stream's message for a subject is never older than one published before it. Also
  // across retries: a failed state is sent again only if no newer one came meanwhile.
  Result<Ok> publish_latest(const BusMessage& message);
  std::size_t max_payload() const override;

  // Waits until nothing is queued, waiting for a retry or in flight; false at the deadline.
  bool flush(std::chrono::milliseconds timeout);

  // Stops taking messages, lets queued ones go out within `budget`, then stops the worker.
  // What is still unsent is counted as given up. Idempotent.
  void stop(std::chrono::milliseconds budget);

  std::size_t pending() const;

 private:
  struct Item {
    BusMessage message;
    int attempts = 0;        // made so far
    std::string latest_key;  // empty for audit messages
  };
  struct Latest {
    bool in_flight = false;
    std::unique_ptr<Item> next;  // the newest state not sent yet
    std::chrono::steady_clock::time_point not_before{};
  };
  // What nats.c's ack handler reaches this object through: it may call back after this
  // object is gone (acks still in flight at shutdown), so it outlives it and is cut off first.
  struct Gate {
    std::mutex mutex;  // guards owner
    AckedPublisher* owner = nullptr;
  };

  // Keeps a gate that nats.c may still call reachable for the rest of the process (a few per
  // process: publishers are made at start).
  static void park_gate(Gate* gate);
  void on_ack(__natsMsg* msg, bool ok, const std::string& error);
  void run();
  bool send(Item item, std::unique_lock<std::mutex>& lock);
  void failed(Item item, const std::string& why);
  // too_large (counted, logged the first time) when the message is over the connection's
  // max_payload: it could never be sent, so it is not queued to be tried again and again.
  Result<Ok> check_size(const BusMessage& message);
  void schedule_latest(const std::string& key);
  std::chrono::milliseconds delay_after(int attempts) const;
  bool idle_locked() const;

  NatsConnection& nats_;
  AckedPublisherSettings settings_;
  Counter* acked_;
  Counter* failed_;
  Counter* given_up_;
  Counter* refused_;
  Counter* superseded_;
  Counter* too_large_;
  std::atomic<bool> too_large_logged_{false};
  Counter* callback_errors_;
  Gauge* pending_gauge_;
  LogLimiter log_limiter_;

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  std::condition_variable idle_;
  bool stopping_ = false;
  __jsCtx* js_ = nullptr;   // created by the worker on first use
  std::deque<Item> ready_;  // audit messages to send now, in order
  std::multimap<std::chrono::steady_clock::time_point, Item> retries_;  // audit retries
  std::map<std::string, Latest> latest_;                                // by subject
  std::deque<std::string> latest_ready_;  // subjects whose next state may go out now
  std::multimap<std::chrono::steady_clock::time_point, std::string> latest_retries_;
  std::unordered_map<__natsMsg*, Item> in_flight_;  // by nats.c's message
  std::size_t queued_ = 0;                          // ready_ + retries_ + states waiting in latest_
  // Freed with this object when no ack can come any more; otherwise parked (see park_gate).
  Gate* gate_;
  // The connection generation js_ was made on, and whether an earlier context was given up
  // with acks outstanding (those may still call the gate).
  std::uint64_t js_generation_ = 0;
  bool orphaned_acks_ = false;
  std::thread worker_;
};

}  // namespace orgd
