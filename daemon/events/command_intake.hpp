#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "daemon/bus/message.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/log_limiter.hpp"
#include "daemon/events/rejections.hpp"
#include "daemon/core/metrics.hpp"

struct __jsCtx;
struct __natsConnection;
struct __natsSubscription;
struct __natsMsg;

namespace orgd {

struct CommandIntakeSettings {
  std::string prefix;  // P
  std::string op;      // "deploy": consumes P.cmd.deploy
  std::string queue_group = "orgd";
  // Deliveries before a command goes to the dead-letter queue.
  int max_deliver = 5;
  // Redelivery delays after a failed attempt (the last repeats).
  std::vector<std::chrono::milliseconds> backoff{std::chrono::seconds{1}, std::chrono::seconds{3},
                                                 std::chrono::seconds{10},
                                                 std::chrono::seconds{30}};
  // How long a delivered command may wait for its ack (queued behind others in this client,
  // then handled) before the server redelivers it: a replica that died mid-command.
  std::chrono::milliseconds ack_wait{std::chrono::seconds{30}};
};

// Durable command intake (DESIGN.md §4): P.cmd.<op> captured by stream ORGD_CMD, consumed by a
// durable push consumer with a deliver group (each command to one replica), explicit acks,
// max_deliver and backoff. A command that cannot be decoded or is invalid is terminated and
// dead-lettered at once; one that fails for a reason that may pass (a lock held, NATS trouble)
// is redelivered after a delay; when the server gives up (max deliveries advisory), the command
// is copied from the stream to P.dlq.cmd.<op> with the last error as the reason.
//
// Anyone on the bus can publish on the advisory subject, so an advisory is a hint, never a
// fact: it must be well-formed JSON with the expected fields and types, the server must confirm
// it (the consumer exists with that max_deliver and has delivered that far, the stream holds the
// sequence on this intake's subject), this orgd must not have settled the command itself, and
// the handler side must not know it as carried out. Otherwise it is refused and counted in
// orgd_command_advisories_total{result="malformed"|"refused"}.
class CommandIntake {
 public:
  // The handler gets the command and an id for de-duplication when the command carries none:
  // its Nats-Msg-Id, else its stream sequence. It runs on the subscription's thread.
  using Handler = std::function<Result<Ok>(const BusMessage& command, const std::string& dedup_id)>;
  // Whether the command (with the handler's de-duplication id) has already been carried out;
  // an error when that cannot be told now.
  using CarriedOutQuery =
      std::function<Result<bool>(const BusMessage& command, const std::string& dedup_id)>;

  CommandIntake(CommandIntakeSettings settings, Handler handler, Publisher& publisher,
                Rejections& rejections, MetricsRegistry& metrics);
  ~CommandIntake();
  CommandIntake(const CommandIntake&) = delete;
  CommandIntake& operator=(const CommandIntake&) = delete;

  // Creates (or binds to) the durable consumer and subscribes; also listens for the consumer's
  // max-deliveries advisories. Called at every (re)connect: it makes the consumer again when the
  // server lost it, and subscribes again when the consumer or the connection is new.
  Result<Ok> start(__natsConnection* connection, __jsCtx* js);
  // Stops receiving; a command being handled finishes first (until `deadline`).
  void stop(std::chrono::steady_clock::time_point deadline);
  void stop();

  // Asked before a command is dead-lettered on the server's word; without it only the server
  // and this intake's own records are checked.
  void set_carried_out_query(CarriedOutQuery query) { carried_out_ = std::move(query); }

  std::string durable_name() const;
  std::string subject() const { return settings_.prefix + ".cmd." + settings_.op; }

 private:
  static void on_message(__natsConnection*, __natsSubscription*, __natsMsg* msg, void* self);
  static void on_advisory(__natsConnection*, __natsSubscription*, __natsMsg* msg, void* self);
  void release_subscriptions();
  void handle(__natsMsg* msg);
  void handle_advisory(const BusMessage& advisory);
  // The stored command when the server and the handler side confirm that it ran out of
  // deliveries without being carried out; else the reason to refuse the advisory.
  struct Confirmed {
    BusMessage command;
  };
  std::variant<Confirmed, std::string> confirm_exhausted(std::uint64_t sequence,
                                                         std::uint64_t deliveries);
  void remember_error(std::uint64_t sequence, const std::string& error);
  // Acked, terminated or dead-lettered by this orgd: nothing is left to dead-letter.
  void remember_settled(std::uint64_t sequence);
  bool settled_here(std::uint64_t sequence);
  std::string last_error(std::uint64_t sequence);

  CommandIntakeSettings settings_;
  Handler handler_;
  Publisher& publisher_;
  Rejections& rejections_;
  MetricsRegistry& metrics_;
  // Replaced by start() on a new connection while advisories may be read on nats.c threads.
  std::atomic<__jsCtx*> js_{nullptr};
  __natsConnection* connection_ = nullptr;  // the one sub_ and advisory_sub_ were made on
  __natsSubscription* sub_ = nullptr;
  __natsSubscription* advisory_sub_ = nullptr;
  CarriedOutQuery carried_out_;
  struct Seen {
    std::string last_error;
    bool settled = false;
  };
  std::mutex seen_mutex_;  // guards seen_
  std::map<std::uint64_t, Seen> seen_;  // by stream sequence (bounded)
  Counter* accepted_ = nullptr;
  Counter* retried_ = nullptr;
  Counter* dead_lettered_ = nullptr;
  Counter* advisory_malformed_ = nullptr;
  Counter* advisory_refused_ = nullptr;
  Counter* advisory_dead_lettered_ = nullptr;
  Counter* message_errors_ = nullptr;   // orgd_callback_errors_total{callback="cmd.message"}
  Counter* advisory_errors_ = nullptr;  // orgd_callback_errors_total{callback="cmd.advisory"}
  LogLimiter advisory_log_;
};

}  // namespace orgd
