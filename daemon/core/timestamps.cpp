#include "daemon/core/timestamps.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace orgd {

std::string format_rfc3339(TimePoint t) {
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(t);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - secs).count();
  std::time_t tt = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z", tm, ms);
}

}  // namespace orgd
