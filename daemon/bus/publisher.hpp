#pragma once

#include "daemon/bus/message.hpp"
#include "daemon/core/errors.hpp"

namespace orgd {

// Where replies, events, state and dead letters go. NatsConnection implements it; tests capture.
class Publisher {
 public:
  virtual ~Publisher() = default;
  virtual Result<Ok> publish(const BusMessage& message) = 0;
};

}  // namespace orgd
