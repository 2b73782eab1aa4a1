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

// Another destination of every logger's lines, present and future, in the configured format
// (a test's capture; a canary scan reads what orgd logged). Thread-safe.
void add_sink(spdlog::sink_ptr sink);
void remove_sink(const spdlog::sink_ptr& sink);

// Valid level names: trace debug info warn error critical off.
bool valid_level(const std::string& level);

}  // namespace orgd::logging
