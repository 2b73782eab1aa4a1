#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

#include "daemon/core/config.hpp"

namespace orgd::logging {

// Configures every logger: level and format (text or JSON lines) from the config. May be called
// again on reload.
void setup(const LogConfig& config);

// The named logger of a subsystem ("bus", "health", "http", "api", ...), created on first use
// with the current settings.
std::shared_ptr<spdlog::logger> get(const std::string& name);

// Valid level names: trace debug info warn error critical off.
bool valid_level(const std::string& level);

}  // namespace orgd::logging
