#pragma once

#include <string>

#include "daemon/bus/nats_connection.hpp"
#include "daemon/http/webhook_intake.hpp"

namespace orgd {

// Stores webhook deliveries in a JetStream stream with a synchronous, acknowledged publish
// (the stream named, so a missing stream is an error, not a message lost on a plain subject).
class JetStreamWebhookSink final : public WebhookSink {
 public:
  JetStreamWebhookSink(NatsConnection& nats, std::string stream)
      : nats_(nats), stream_(std::move(stream)) {}

  Result<Stored> store(const BusMessage& message, std::chrono::milliseconds timeout) override;
  // The connected server's max_payload.
  std::size_t max_message_bytes() const override;

 private:
  NatsConnection& nats_;
  const std::string stream_;
};

}  // namespace orgd
