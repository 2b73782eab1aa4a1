#pragma once

// Exponential backoff with full jitter (a uniform wait in [0, min(cap, initial·2^retry)]), so
// many clients failing together do not come back together.

#include <chrono>

namespace orgd::net {

// The ceiling of the wait before retry number `retry` (0 for the first retry).
std::chrono::milliseconds backoff_ceiling(int retry, std::chrono::milliseconds initial,
                                          std::chrono::milliseconds cap);

// A wait in [0, backoff_ceiling(...)], `unit` in [0, 1) choosing where (injected randomness).
std::chrono::milliseconds backoff_delay(int retry, std::chrono::milliseconds initial,
                                        std::chrono::milliseconds cap, double unit);

}  // namespace orgd::net
