#include "daemon/net/backoff.hpp"

#include <algorithm>
#include <cmath>

namespace orgd::net {

std::chrono::milliseconds backoff_ceiling(int retry, std::chrono::milliseconds initial,
                                          std::chrono::milliseconds cap) {
  if (initial.count() <= 0 || cap.count() <= 0) return std::chrono::milliseconds{0};
  const int shift = std::clamp(retry, 0, 40);
  // Doubling in floating point cannot overflow before the cap is applied.
  const double ceiling = static_cast<double>(initial.count()) * std::ldexp(1.0, shift);
  return std::chrono::milliseconds{
      static_cast<long long>(std::min(ceiling, static_cast<double>(cap.count())))};
}

std::chrono::milliseconds backoff_delay(int retry, std::chrono::milliseconds initial,
                                        std::chrono::milliseconds cap, double unit) {
  const auto ceiling = backoff_ceiling(retry, initial, cap);
  unit = std::clamp(unit, 0.0, 1.0);
  return std::chrono::milliseconds{
      static_cast<long long>(std::llround(unit * static_cast<double>(ceiling.count())))};
}

}  // namespace orgd::net
