#include "daemon/events/api_router.hpp"

#include <fmt/format.h>

#include "daemon/core/logging.hpp"

namespace orgd {

ApiRouter::ApiRouter(std::string prefix, std::size_t max_payload, Publisher& publisher,
                     Rejections& rejections, MetricsRegistry& metrics)
    : prefix_(std::move(prefix)),
      max_payload_(max_payload),
      publisher_(publisher),
      rejections_(rejections),
      metrics_(metrics) {}

void ApiRouter::add_endpoint(const std::string& op, Invoke invoke, std::string too_large_hint) {
  auto e = std::make_unique<Endpoint>();
  // ADR-32 names allow A-Z a-z 0-9 - _ only.
  e->name = op;
  for (auto& c : e->name) {
    if (c == '.') c = '_';
  }
  e->subject = prefix_ + ".api." + op;
  e->invoke = std::move(invoke);
  e->too_large_hint = std::move(too_large_hint);
  e->too_large = &metrics_.counter(
      "orgd_api_replies_too_large_total",
      "P.api replies over the NATS connection's max_payload, answered with a 413 error instead",
      {{"endpoint", op}});
  e->latency = &metrics_.histogram("orgd_api_request_duration_seconds",
                                   "Time to handle a P.api request, by endpoint",
                                   MetricsRegistry::latency_bounds(), {{"endpoint", op}});
  e->stats.name = e->name;
  e->stats.subject = e->subject;
  e->stats.queue_group = kApiQueueGroup;
  endpoints_.push_back(std::move(e));
}

void ApiRouter::dispatch(std::size_t i, const BusMessage& request) {
  Endpoint& e = *endpoints_.at(i);
  auto started = std::chrono::steady_clock::now();
  metrics_.counter("orgd_messages_in_total", "Inputs received, by kind", {{"kind", "api"}}).inc();
  Encoding encoding =
      encoding_from_content_type(request.header(kContentTypeHeader).value_or(std::string()));

  Result<std::string> result = Error{};
  try {
    result = e.invoke(request.data, encoding, max_payload_);
  } catch (const std::exception& ex) {
    logging::get("api")->error("handler of {} failed: {}", e.subject, ex.what());
    result = internal_error("internal error");
  }

  if (result.ok()) {
    if (!request.reply.empty()) {
      BusMessage reply;
      reply.subject = request.reply;
      reply.data = std::move(result.value());
      reply.headers.emplace_back(std::string(kContentTypeHeader),
                                 std::string(content_type(encoding)));
      Error instead;
      if (!send_reply(e, std::move(reply), encoding, instead)) result = std::move(instead);
    }
  } else {
    const Error& error = result.error();
    // Only malformed input is dead-lettered: a lookup that finds nothing (404) or a conflict
    // (409) is the caller's answer, and so is anything that fails on orgd's side.
    if (error.code == ErrorCode::invalid_argument) {
      rejections_.reject(request, error, "api", encoding);
    } else if (!request.reply.empty()) {
      Error instead;
      (void)send_reply(e, make_error_reply(request.reply, error, encoding), encoding, instead);
    }
  }

  auto elapsed = std::chrono::steady_clock::now() - started;
  e.latency->observe(std::chrono::duration<double>(elapsed).count());
  std::lock_guard lock(e.mutex);
  e.stats.num_requests++;
  e.stats.processing_time_ns +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count();
  if (!result.ok()) {
    e.stats.num_errors++;
    e.stats.last_error = std::to_string(http_status(result.error().code)) + ":" +
                         result.error().message.substr(0, 256);
  }
}

bool ApiRouter::send_reply(Endpoint& e, BusMessage reply, Encoding encoding, Error& sent_instead) {
  auto sent = publisher_.publish(reply);
  if (sent.ok() || sent.error().code != ErrorCode::too_large) return true;
  e.too_large->inc();
  std::string message = fmt::format("{}: the reply is {}", e.subject, sent.error().message);
  if (!e.too_large_hint.empty()) message += "; " + e.too_large_hint;
  if (!e.too_large_logged.exchange(true)) {
    logging::get("api")->error(
        "{} (answered with error 413; counted in orgd_api_replies_too_large_total, not logged "
        "again for this endpoint)",
        message);
  }
  sent_instead = too_large(std::move(message));
  // The error reply is a few hundred bytes: it fits whatever the server's max_payload.
  (void)publisher_.publish(make_error_reply(reply.subject, sent_instead, encoding));
  return false;
}

std::vector<ServiceEndpoint> ApiRouter::stats() const {
  std::vector<ServiceEndpoint> out;
  for (const auto& e : endpoints_) {
    std::lock_guard lock(e->mutex);
    out.push_back(e->stats);
  }
  return out;
}

}  // namespace orgd
