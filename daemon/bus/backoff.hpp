#pragma once

#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace orgd {

// Retry delays of the connection lifecycle (nats.c's reconnects, re-creating a connection the
// client library gave up on, re-ensuring what orgd keeps on the server): `initial` doubling per
// attempt up to `cap`, plus up to 25% jitter so replicas do not retry in step. A low cap is what
// keeps orgd ready soon after a long outage ends: the next attempt is never far away.
inline std::chrono::milliseconds backoff_delay(int attempt, std::chrono::milliseconds initial,
                                               std::chrono::milliseconds cap) {
  const std::int64_t limit = std::max<std::int64_t>(cap.count(), 1);
  std::int64_t delay = std::clamp<std::int64_t>(initial.count(), 1, limit);
  for (int i = 1; i < attempt && delay < limit; ++i) delay *= 2;
  delay = std::min(delay, limit);
  return std::chrono::milliseconds(delay +
                                   randombytes_uniform(static_cast<std::uint32_t>(delay / 4 + 1)));
}

}  // namespace orgd
