#include "daemon/events/command_intake.hpp"

#include <fmt/format.h>
#include <nats/nats.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "daemon/bus/callback_guard.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/events/codec.hpp"

namespace orgd {

namespace {

// Commands whose outcome this intake remembers (the newest by stream sequence).
constexpr std::size_t kMaxRemembered = 10000;
constexpr std::int64_t kNanosPerMilli = 1'000'000;

bool retryable(ErrorCode code) {
  return code == ErrorCode::conflict || code == ErrorCode::unavailable ||
         code == ErrorCode::internal;
}

struct MsgDeleter {
  void operator()(natsMsg* msg) const { natsMsg_Destroy(msg); }
};
using MsgPtr = std::unique_ptr<natsMsg, MsgDeleter>;

struct Advisory {
  std::uint64_t sequence = 0;
  std::uint64_t deliveries = 0;
};

// A max-deliveries advisory as the server writes it, read with checked access: any other shape
// (wrong types, missing fields, another stream or consumer) is malformed.
std::optional<Advisory> parse_advisory(std::string_view body, std::string_view stream,
                                       std::string_view consumer) {
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return std::nullopt;
  auto unsigned_field = [&](const char* key) -> std::optional<std::uint64_t> {
    const auto it = json.find(key);
    if (it == json.end() || !it->is_number_unsigned()) return std::nullopt;
    return it->get<std::uint64_t>();
  };
  // Optional in the server's format, but never of another stream or consumer when present.
  auto names = [&](const char* key, std::string_view expected) {
    const auto it = json.find(key);
    return it == json.end() || (it->is_string() && it->get_ref<const std::string&>() == expected);
  };
  auto sequence = unsigned_field("stream_seq");
  auto deliveries = unsigned_field("deliveries");
  if (!sequence || *sequence == 0 || !deliveries || !names("stream", stream) ||
      !names("consumer", consumer)) {
    return std::nullopt;
  }
  return Advisory{*sequence, *deliveries};
}

}  // namespace

CommandIntake::CommandIntake(CommandIntakeSettings settings, Handler handler,
                             Publisher& publisher, Rejections& rejections,
                             MetricsRegistry& metrics)
    : settings_(std::move(settings)),
      handler_(std::move(handler)),
      publisher_(publisher),
      rejections_(rejections),
      metrics_(metrics) {
  accepted_ = &metrics_.counter("orgd_commands_total", "Commands from ORGD_CMD, by op and result",
                                {{"op", settings_.op}, {"result", "accepted"}});
  retried_ = &metrics_.counter("orgd_commands_total", "Commands from ORGD_CMD, by op and result",
                               {{"op", settings_.op}, {"result", "retried"}});
  dead_lettered_ =
      &metrics_.counter("orgd_commands_total", "Commands from ORGD_CMD, by op and result",
                        {{"op", settings_.op}, {"result", "dead_lettered"}});
  const char* advisories_help =
      "Max-deliveries advisories received, by op and what was done with them";
  advisory_malformed_ = &metrics_.counter("orgd_command_advisories_total", advisories_help,
                                          {{"op", settings_.op}, {"result", "malformed"}});
  advisory_refused_ = &metrics_.counter("orgd_command_advisories_total", advisories_help,
                                        {{"op", settings_.op}, {"result", "refused"}});
  advisory_dead_lettered_ = &metrics_.counter("orgd_command_advisories_total", advisories_help,
                                              {{"op", settings_.op}, {"result", "dead_lettered"}});
  message_errors_ = &CallbackErrors::counter(metrics_, "cmd.message");
  advisory_errors_ = &CallbackErrors::counter(metrics_, "cmd.advisory");
}

CommandIntake::~CommandIntake() { stop(); }

std::string CommandIntake::durable_name() const {
  std::string name = "orgd_cmd_" + settings_.op;
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

Result<Ok> CommandIntake::start(natsConnection* connection, jsCtx* js) {
  if (js == nullptr) return unavailable("no JetStream context");
  const std::string durable = durable_name();
  const std::string filter = subject();

  // The consumer is created or updated explicitly, then bound to: a replica started with other
  // settings (or an older orgd's consumer) updates it instead of failing nats.c's check that a
  // subscription's config matches the consumer's.
  const std::string deliver = "_ORGD_DELIVER." + settings_.prefix + "." + settings_.op;
  jsConsumerConfig config;
  jsConsumerConfig_Init(&config);
  config.Durable = durable.c_str();
  config.DeliverSubject = deliver.c_str();
  config.DeliverGroup = settings_.queue_group.c_str();
  config.AckPolicy = js_AckExplicit;
  // No server-side backoff: with one, the server takes its first delay (1 s) as the ack wait,
  // and a burst of commands, delivered at once and handled one after another, is redelivered
  // while it still waits in this client. Retries after a failed attempt are this intake's
  // NakWithDelay on the backoff schedule; the ack wait only covers a replica that died
  // mid-command (redelivered to another after it).
  config.AckWait = settings_.ack_wait.count() * kNanosPerMilli;
  config.MaxDeliver = settings_.max_deliver;
  config.FilterSubject = filter.c_str();
  config.DeliverPolicy = js_DeliverAll;
  config.MaxAckPending = 256;
  jsConsumerInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  // Runs at every (re)connect. A server that lost its store has lost the consumer too: made
  // again, it pushes to the same deliver subject, but the subscription is made again as well so
  // nothing of the old binding is relied on. A new connection needs new subscriptions anyway.
  bool rebind = sub_ == nullptr || advisory_sub_ == nullptr || connection != connection_ ||
                js != js_ || !natsSubscription_IsValid(sub_);
  if (!rebind) {
    natsStatus found = js_GetConsumerInfo(&info, js, kCmdStream, durable.c_str(), nullptr, &err);
    if (found == NATS_OK) {
      jsConsumerInfo_Destroy(info);
      info = nullptr;
    } else if (found == NATS_NOT_FOUND) {
      rebind = true;
      logging::get("cmd")->warn("durable consumer {} on {} is gone (the server lost its store?); "
                                "making it again",
                                durable, kCmdStream);
    } else {
      const char* text = nats_GetLastError(nullptr);
      return unavailable(fmt::format("consumer {} on {}: {}", durable, kCmdStream,
                                     text != nullptr ? text : natsStatus_GetText(found)));
    }
    err = static_cast<jsErrCode>(0);
  }
  natsStatus s = js_AddConsumer(&info, js, kCmdStream, &config, nullptr, &err);
  if (s != NATS_OK) {
    err = static_cast<jsErrCode>(0);
    s = js_UpdateConsumer(&info, js, kCmdStream, &config, nullptr, &err);
  }
  if (s != NATS_OK) {
    return unavailable(fmt::format("consumer {} on {}: {} (error code {})", durable, kCmdStream,
                                   nats_GetLastError(nullptr), static_cast<int>(err)));
  }
  jsConsumerInfo_Destroy(info);
  if (!rebind) return Ok{};
  release_subscriptions();
  js_ = js;
  connection_ = connection;

  jsSubOptions options;
  jsSubOptions_Init(&options);
  options.Stream = kCmdStream;
  options.Consumer = durable.c_str();
  options.Queue = settings_.queue_group.c_str();
  options.ManualAck = true;
  s = js_Subscribe(&sub_, js, filter.c_str(), &CommandIntake::on_message, this, nullptr, &options,
                   &err);
  if (s != NATS_OK) {
    sub_ = nullptr;
    return unavailable(fmt::format("consumer {} on {}: {} (error code {})", durable, kCmdStream,
                                   nats_GetLastError(nullptr), static_cast<int>(err)));
  }
  natsSubscription_SetPendingLimits(sub_, 10'000, 64 * 1024 * 1024);
  const std::string advisory =
      fmt::format("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}", kCmdStream, durable);
  s = natsConnection_QueueSubscribe(&advisory_sub_, connection, advisory.c_str(),
                                    settings_.queue_group.c_str(), &CommandIntake::on_advisory,
                                    this);
  if (s != NATS_OK) {
    advisory_sub_ = nullptr;
    return unavailable(fmt::format("subscribing to {}: {}", advisory, nats_GetLastError(nullptr)));
  }
  logging::get("cmd")->info("consuming {} through durable consumer {} (group {})", filter,
                            durable, settings_.queue_group);
  return Ok{};
}

void CommandIntake::stop() { stop(std::chrono::steady_clock::now() + std::chrono::seconds(2)); }

void CommandIntake::stop(std::chrono::steady_clock::time_point deadline) {
  // Unsubscribing a durable push subscription keeps the consumer (nats.c deletes only consumers
  // it created for non-durable subscriptions), so the other replicas carry on. Drain lets a
  // command being handled finish; both subscriptions drain at once, until one deadline, and not
  // at all while disconnected (nothing could be drained: the server does not answer).
  const bool connected =
      connection_ != nullptr && natsConnection_Status(connection_) == NATS_CONN_STATUS_CONNECTED;
  auto left = [&] {
    return std::max<std::int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      deadline - std::chrono::steady_clock::now())
                                      .count(),
                                  1);
  };
  std::vector<natsSubscription*> draining;
  for (natsSubscription* sub : {sub_, advisory_sub_}) {
    if (sub == nullptr) continue;
    if (connected && natsSubscription_DrainTimeout(sub, left()) == NATS_OK) {
      draining.push_back(sub);
    } else if (natsSubscription_IsValid(sub)) {
      natsSubscription_Unsubscribe(sub);
    }
  }
  for (natsSubscription* sub : draining) natsSubscription_WaitForDrainCompletion(sub, left());
  release_subscriptions();
}

void CommandIntake::release_subscriptions() {
  for (natsSubscription** sub : {&sub_, &advisory_sub_}) {
    if (*sub == nullptr) continue;
    if (natsSubscription_IsValid(*sub)) natsSubscription_Unsubscribe(*sub);
    natsSubscription_Destroy(*sub);
    *sub = nullptr;
  }
}

void CommandIntake::on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
  auto* me = static_cast<CommandIntake*>(self);
  guard_callback("cmd.message", me->message_errors_, [&] { me->handle(msg); });
}

void CommandIntake::on_advisory(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
  auto* me = static_cast<CommandIntake*>(self);
  MsgPtr owned(msg);
  guard_callback("cmd.advisory", me->advisory_errors_,
                 [&] { me->handle_advisory(BusMessage::copy_from(owned.get())); });
}

void CommandIntake::handle(natsMsg* raw) {
  // Destroyed however this ends (an exception included); an unsettled command is redelivered
  // after the ack wait.
  MsgPtr owned(raw);
  natsMsg* msg = owned.get();
  const BusMessage command = BusMessage::copy_from(msg);
  std::uint64_t sequence = 0;
  std::uint64_t delivered = 1;
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
    sequence = meta->Sequence.Stream;
    delivered = meta->NumDelivered;
    const bool ours = meta->Stream != nullptr && std::string_view(meta->Stream) == kCmdStream;
    jsMsgMetaData_Destroy(meta);
    if (!ours) sequence = 0;
  }
  // Anyone can publish on the delivery subject: what did not come from ORGD_CMD (no JetStream
  // metadata naming it) was never stored, de-duplicated or audited, and is not a command.
  if (sequence == 0) {
    rejections_.reject(command,
                       invalid_argument(fmt::format("not a delivery of stream {}: publish "
                                                    "commands on {}",
                                                    kCmdStream, subject())),
                       "cmd", Encoding::json);
    return;
  }
  const std::string dedup =
      command.header("Nats-Msg-Id").value_or(fmt::format("{}:{}", kCmdStream, sequence));
  // The command as it arrived, for the dead letter: its subject is P.cmd.<op>.
  BusMessage original = command;
  original.reply.clear();
  Result<Ok> result = internal_error("the command handler failed");
  try {
    result = handler_(command, dedup);
  } catch (const std::exception& e) {
    result = internal_error(fmt::format("the command handler failed: {}", e.what()));
  }
  if (result) {
    natsMsg_Ack(msg, nullptr);
    remember_settled(sequence);
    accepted_->inc();
  } else if (retryable(result.error().code) &&
             delivered < static_cast<std::uint64_t>(settings_.max_deliver)) {
    const auto& backoff = settings_.backoff;
    const auto delay = backoff.empty() ? std::chrono::milliseconds{1000}
                                       : backoff[std::min<std::size_t>(delivered - 1,
                                                                       backoff.size() - 1)];
    remember_error(sequence, result.error().message);
    natsMsg_NakWithDelay(msg, delay.count(), nullptr);
    retried_->inc();
    logging::get("cmd")->info("{} (delivery {}) not done: {}; again in {} ms", subject(),
                              delivered, result.error().message, delay.count());
  } else {
    // Invalid input, or the last delivery: it will not get better by waiting.
    natsMsg_Term(msg, nullptr);
    remember_settled(sequence);
    Error error = result.error();
    if (retryable(error.code)) {
      error.message = fmt::format("gave up after {} deliveries: {}", delivered, error.message);
    }
    rejections_.reject(original, error, "cmd", Encoding::json);
    dead_lettered_->inc();
  }
}

void CommandIntake::handle_advisory(const BusMessage& message) {
  auto log = logging::get("cmd");
  const auto advisory = parse_advisory(message.data, kCmdStream, durable_name());
  if (!advisory) {
    advisory_malformed_->inc();
    if (advisory_log_.allow()) {
      log->warn("ignored a malformed max-deliveries advisory on {} ({} bytes)", message.subject,
                message.data.size());
    }
    return;
  }
  auto confirmed = confirm_exhausted(advisory->sequence, advisory->deliveries);
  if (auto* refused = std::get_if<std::string>(&confirmed)) {
    advisory_refused_->inc();
    if (advisory_log_.allow()) {
      log->warn("max-deliveries advisory for {} sequence {} not acted on: {}", kCmdStream,
                advisory->sequence, *refused);
    }
    return;
  }
  BusMessage original = std::move(std::get<Confirmed>(confirmed).command);
  original.reply.clear();
  std::string reason = last_error(advisory->sequence);
  remember_settled(advisory->sequence);
  rejections_.reject(original,
                     unavailable(fmt::format("max deliveries ({}) reached{}",
                                             advisory->deliveries,
                                             reason.empty() ? "" : ": " + reason)),
                     "cmd", Encoding::json);
  dead_lettered_->inc();
  advisory_dead_lettered_->inc();
}

std::variant<CommandIntake::Confirmed, std::string> CommandIntake::confirm_exhausted(
    std::uint64_t sequence, std::uint64_t deliveries) {
  if (js_ == nullptr) return std::string("not consuming yet");
  // This orgd acked, terminated or already dead-lettered it.
  if (settled_here(sequence)) return std::string("this orgd has already settled the command");
  // The server: the consumer exists with that max_deliver and has delivered that far.
  const std::string durable = durable_name();
  jsConsumerInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_GetConsumerInfo(&info, js_, kCmdStream, durable.c_str(), nullptr, &err) != NATS_OK) {
    return fmt::format("consumer {} cannot be read: {}", durable, nats_GetLastError(nullptr));
  }
  const auto max_deliver = info->Config != nullptr ? info->Config->MaxDeliver : 0;
  const auto delivered_up_to = info->Delivered.Stream;
  jsConsumerInfo_Destroy(info);
  if (max_deliver <= 0 || deliveries != static_cast<std::uint64_t>(max_deliver)) {
    return fmt::format("{} deliveries is not the consumer's max_deliver ({})", deliveries,
                       max_deliver);
  }
  if (delivered_up_to < sequence) {
    return fmt::format("the consumer has not delivered sequence {} yet", sequence);
  }
  // The stream: the command is stored, and is this intake's.
  natsMsg* stored = nullptr;
  err = static_cast<jsErrCode>(0);
  if (js_GetMsg(&stored, js_, kCmdStream, sequence, nullptr, &err) != NATS_OK) {
    return fmt::format("the stream has no message {}", sequence);
  }
  MsgPtr owned(stored);
  BusMessage command = BusMessage::copy_from(stored);
  if (command.subject != subject()) {
    return fmt::format("message {} is on {}, not {}", sequence, command.subject, subject());
  }
  // The handler side: a command it already carried out (its ack was lost, or another replica
  // did it) is not a dead letter.
  if (carried_out_) {
    const std::string dedup =
        command.header("Nats-Msg-Id").value_or(fmt::format("{}:{}", kCmdStream, sequence));
    auto done = carried_out_(command, dedup);
    if (!done) return "cannot tell whether it was carried out: " + done.error().message;
    if (done.value()) return std::string("the command was carried out");
  }
  return Confirmed{std::move(command)};
}

void CommandIntake::remember_error(std::uint64_t sequence, const std::string& error) {
  std::lock_guard lock(seen_mutex_);
  seen_[sequence].last_error = error;
  while (seen_.size() > kMaxRemembered) seen_.erase(seen_.begin());
}

void CommandIntake::remember_settled(std::uint64_t sequence) {
  if (sequence == 0) return;
  std::lock_guard lock(seen_mutex_);
  seen_[sequence].settled = true;
  while (seen_.size() > kMaxRemembered) seen_.erase(seen_.begin());
}

bool CommandIntake::settled_here(std::uint64_t sequence) {
  std::lock_guard lock(seen_mutex_);
  auto it = seen_.find(sequence);
  return it != seen_.end() && it->second.settled;
}

std::string CommandIntake::last_error(std::uint64_t sequence) {
  std::lock_guard lock(seen_mutex_);
  auto it = seen_.find(sequence);
  if (it == seen_.end()) return {};
  return std::exchange(it->second.last_error, std::string());
}

}  // namespace orgd
