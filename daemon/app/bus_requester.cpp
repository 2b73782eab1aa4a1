#include "daemon/app/bus_requester.hpp"

#include <mutex>

namespace orgd {

void BusRequester::attach(NatsConnection* connection) {
  std::unique_lock lock(mutex_);
  connection_ = connection;
}

Result<std::string> BusRequester::request(const std::string& subject, std::string_view payload,
                                          Duration timeout) {
  std::shared_lock lock(mutex_);
  if (connection_ == nullptr || !connection_->connected()) {
    return unavailable("not connected to NATS (request on " + subject + ")");
  }
  BusMessage message;
  message.subject = subject;
  message.data.assign(payload.begin(), payload.end());
  auto reply = connection_->request(message, timeout);
  if (!reply) return reply.error();
  return std::move(reply.value().data);
}

}  // namespace orgd
