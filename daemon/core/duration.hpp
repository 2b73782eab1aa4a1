#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace orgd {

using Duration = std::chrono::milliseconds;

// Parses "500ms", "30s", "5m", "2h", "30d" (also combined: "1m30s", "1d12h"). nullopt on anything else,
// including negative values and overflow.
std::optional<Duration> parse_duration(std::string_view text);

// The shortest form parse_duration() accepts back: 1500ms -> "1500ms", 90s -> "90s".
std::string format_duration(Duration d);

}  // namespace orgd
