#pragma once

#include <cstddef>

#include "daemon/bus/message.hpp"
#include "daemon/core/errors.hpp"

namespace orgd {

// Where replies, events, state and dead letters go. NatsConnection implements it; tests capture.
class Publisher {
 public:
  virtual ~Publisher() = default;
  // A message over max_payload() is refused with ErrorCode::too_large, never sent.
  virtual Result<Ok> publish(const BusMessage& message) = 0;
  // The largest message the connection carries (BusMessage::wire_size()); 0 when not known.
  virtual std::size_t max_payload() const { return 0; }
};

}  // namespace orgd
