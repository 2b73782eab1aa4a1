#include "tests/support/collector.hpp"

#include <stdexcept>

namespace orgd::testing {

Collector::Collector(natsConnection* conn, const std::string& subject) {
  if (natsConnection_Subscribe(&sub_, conn, subject.c_str(), &Collector::on_msg, this) !=
          NATS_OK ||
      natsConnection_Flush(conn) != NATS_OK) {
    throw std::runtime_error("cannot subscribe to " + subject);
  }
}

Collector::~Collector() {
  // Drained, not just unsubscribed: a callback may be running on nats.c's delivery thread, and
  // it must be done with this object before the object goes. A drain completes only once every
  // delivered message's callback has returned.
  if (natsSubscription_Drain(sub_) == NATS_OK) {
    natsSubscription_WaitForDrainCompletion(sub_, 5000);
  } else {
    natsSubscription_Unsubscribe(sub_);
  }
  natsSubscription_Destroy(sub_);
}

std::vector<BusMessage> Collector::messages() {
  std::lock_guard lock(mutex_);
  return messages_;
}

std::size_t Collector::size() {
  std::lock_guard lock(mutex_);
  return messages_.size();
}

void Collector::on_msg(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
  BusMessage copy = BusMessage::copy_from(msg);
  natsMsg_Destroy(msg);
  auto* c = static_cast<Collector*>(self);
  std::lock_guard lock(c->mutex_);
  c->messages_.push_back(std::move(copy));
}

}  // namespace orgd::testing
