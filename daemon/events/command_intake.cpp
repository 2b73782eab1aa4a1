#include "daemon/events/command_intake.hpp"

#include <fmt/format.h>
#include <nats/nats.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "daemon/bus/streams.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/events/codec.hpp"

namespace orgd {

namespace {

constexpr std::size_t kMaxRememberedErrors = 1000;
constexpr std::int64_t kNanosPerMilli = 1'000'000;

bool retryable(ErrorCode code) {
  return code == ErrorCode::conflict || code == ErrorCode::unavailable ||
         code == ErrorCode::internal;
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
  std::vector<std::int64_t> backoff;
  for (const auto& d : settings_.backoff) backoff.push_back(d.count() * kNanosPerMilli);

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
  // The server's own redelivery schedule when an ack never comes (a replica died mid-command);
  // with a backoff the server takes its first delay as the ack wait.
  config.BackOff = backoff.data();
  config.BackOffLen = static_cast<int>(
      std::min<std::size_t>(backoff.size(), static_cast<std::size_t>(settings_.max_deliver - 1)));
  config.AckWait = config.BackOffLen > 0 ? backoff.front() : settings_.ack_wait.count() * kNanosPerMilli;
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
  static_cast<CommandIntake*>(self)->handle(msg);
}

void CommandIntake::on_advisory(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
  static_cast<CommandIntake*>(self)->handle_advisory(msg);
}

void CommandIntake::handle(natsMsg* msg) {
  const BusMessage command = BusMessage::copy_from(msg);
  std::uint64_t sequence = 0;
  std::uint64_t delivered = 1;
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
    sequence = meta->Sequence.Stream;
    delivered = meta->NumDelivered;
    jsMsgMetaData_Destroy(meta);
  }
  const std::string dedup =
      command.header("Nats-Msg-Id").value_or(fmt::format("{}:{}", kCmdStream, sequence));
  // The command as it arrived, for the dead letter: its subject is P.cmd.<op>.
  BusMessage original = command;
  original.reply.clear();
  Result<Ok> result = handler_(command, dedup);
  if (result) {
    natsMsg_Ack(msg, nullptr);
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
    Error error = result.error();
    if (retryable(error.code)) {
      error.message = fmt::format("gave up after {} deliveries: {}", delivered, error.message);
    }
    rejections_.reject(original, error, "cmd", Encoding::json);
    dead_lettered_->inc();
  }
  natsMsg_Destroy(msg);
}

void CommandIntake::handle_advisory(natsMsg* msg) {
  const std::string body(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
  natsMsg_Destroy(msg);
  const auto advisory = nlohmann::json::parse(body, nullptr, false);
  if (!advisory.is_object() || !advisory.contains("stream_seq") ||
      !advisory["stream_seq"].is_number_unsigned()) {
    return;
  }
  const auto sequence = advisory["stream_seq"].get<std::uint64_t>();
  const auto deliveries = advisory.value("deliveries", 0);
  natsMsg* stored = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_GetMsg(&stored, js_, kCmdStream, sequence, nullptr, &err) != NATS_OK) {
    logging::get("cmd")->warn("command {} of {} reached max deliveries but cannot be read: {}",
                              sequence, kCmdStream, nats_GetLastError(nullptr));
    return;
  }
  BusMessage original = BusMessage::copy_from(stored);
  natsMsg_Destroy(stored);
  original.reply.clear();
  std::string reason = last_error(sequence);
  rejections_.reject(original,
                     unavailable(fmt::format("max deliveries ({}) reached{}", deliveries,
                                             reason.empty() ? "" : ": " + reason)),
                     "cmd", Encoding::json);
  dead_lettered_->inc();
}

void CommandIntake::remember_error(std::uint64_t sequence, const std::string& error) {
  std::lock_guard lock(errors_mutex_);
  errors_[sequence] = error;
  while (errors_.size() > kMaxRememberedErrors) errors_.erase(errors_.begin());
}

std::string CommandIntake::last_error(std::uint64_t sequence) {
  std::lock_guard lock(errors_mutex_);
  auto it = errors_.find(sequence);
  if (it == errors_.end()) return {};
  std::string error = std::move(it->second);
  errors_.erase(it);
  return error;
}

}  // namespace orgd
