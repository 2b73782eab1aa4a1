#include "daemon/events/rejections.hpp"

#include "daemon/core/logging.hpp"

namespace orgd {

BusMessage make_error_reply(const std::string& reply_subject, const Error& error,
                            Encoding encoding) {
  BusMessage reply;
  reply.subject = reply_subject;
  reply.data = encode_error(error, encoding);
  // Header values are single lines.
  std::string line = error.message.substr(0, 512);
  for (auto& c : line) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  reply.headers = {{"Nats-Service-Error", line},
                   {"Nats-Service-Error-Code", std::to_string(http_status(error.code))},
                   {std::string(kContentTypeHeader), std::string(content_type(encoding))}};
  return reply;
}

Rejections::Rejections(std::string prefix, Publisher& publisher, MetricsRegistry& metrics)
    : prefix_(std::move(prefix)), publisher_(publisher), metrics_(metrics) {}

std::string Rejections::dlq_subject(std::string_view input_subject) const {
  std::string_view origin = input_subject;
  if (origin.size() > prefix_.size() + 1 && origin.substr(0, prefix_.size()) == prefix_ &&
      origin[prefix_.size()] == '.') {
    origin.remove_prefix(prefix_.size() + 1);
  }
  return prefix_ + ".dlq." + std::string(origin);
}

bool Rejections::should_log() {
  // At most 10 lines a second; the counter has the full count.
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::steady_clock::now().time_since_epoch())
                 .count();
  auto start = log_window_start_.load();
  if (now != start && log_window_start_.compare_exchange_strong(start, now)) {
    logged_in_window_.store(0);
  }
  return logged_in_window_.fetch_add(1) < 10;
}

void Rejections::reject(const BusMessage& input, const Error& error, std::string_view kind,
                        Encoding encoding) {
  metrics_
      .counter("orgd_messages_rejected_total", "Inputs rejected, by kind and error code",
               {{"kind", std::string(kind)}, {"code", std::string(code_name(error.code))}})
      .inc();
  if (!input.reply.empty()) {
    (void)publisher_.publish(make_error_reply(input.reply, error, encoding));
  }
  BusMessage dead;
  dead.subject = dlq_subject(input.subject);
  dead.data = input.data;
  for (const auto& [k, v] : input.headers) {
    // Our own DLQ headers are set below; a hostile input cannot pre-set them.
    if (k.rfind("Orgd-Dlq-", 0) != 0 && k.rfind("Nats-", 0) != 0) dead.headers.emplace_back(k, v);
  }
  std::string reason = error.message.substr(0, 512);
  for (auto& c : reason) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  dead.headers.emplace_back(kDlqReasonHeader, reason);
  dead.headers.emplace_back(kDlqSubjectHeader, input.subject);
  dead.headers.emplace_back(kDlqCodeHeader, std::to_string(http_status(error.code)));
  auto published = publisher_.publish(dead);
  if (!published.ok()) {
    metrics_.counter("orgd_dlq_publish_failures_total", "Dead letters that could not be published")
        .inc();
  }
  if (should_log()) {
    logging::get("events")->warn("rejected {} input on {}: {}", kind, input.subject, reason);
  }
}

}  // namespace orgd
