#include "daemon/http/webhook_jetstream.hpp"

#include <fmt/format.h>
#include <nats/nats.h>

namespace orgd {

Result<WebhookSink::Stored> JetStreamWebhookSink::store(const BusMessage& message,
                                                        std::chrono::milliseconds timeout) {
  // Disconnected: say so at once instead of waiting out the timeout on a buffered publish.
  jsCtx* js = nats_.jetstream();
  if (!nats_.connected() || js == nullptr) {
    return unavailable(fmt::format("NATS is not connected ({})", to_string(nats_.state())));
  }
  natsMsg* msg = message.to_nats();
  if (msg == nullptr) return internal_error("nats.c refused to build the message");
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = timeout.count();
  options.ExpectStream = stream_.c_str();
  jsPubAck* ack = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const natsStatus s = js_PublishMsg(&ack, js, msg, &options, &code);
  natsMsg_Destroy(msg);
  if (s != NATS_OK) {
    if (ack != nullptr) jsPubAck_Destroy(ack);
    return unavailable(fmt::format("publishing to {}: {} (error code {})", stream_,
                                   natsStatus_GetText(s), static_cast<int>(code)));
  }
  Stored stored;
  stored.duplicate = ack != nullptr && ack->Duplicate;
  jsPubAck_Destroy(ack);
  return stored;
}

std::size_t JetStreamWebhookSink::max_message_bytes() const {
  natsConnection* conn = nats_.raw();
  if (conn == nullptr || !nats_.connected()) return 0;
  const int64_t max = natsConnection_GetMaxPayload(conn);
  return max > 0 ? static_cast<std::size_t>(max) : 0;
}

}  // namespace orgd
