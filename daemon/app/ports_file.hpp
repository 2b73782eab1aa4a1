#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "daemon/core/errors.hpp"

namespace orgd {

// What orgd bound, for whoever started it with port 0 (`--ports-file`): tests and supervisors
// learn the ports from orgd itself instead of guessing a free one that someone else may take
// before orgd binds it.
struct BoundPorts {
  // The HTTP port orgd listens on; 0 when HTTP is off.
  std::uint16_t http = 0;
  // The NATS URL(s) orgd connects to, credentials redacted: the embedded server's actual
  // address, or the configured servers.
  std::string nats;
};

// Writes {"http":PORT,"nats":"URL"} ("http": null when HTTP is off) to `path` atomically: a
// reader that polls for the file sees it whole or not at all.
Result<Ok> write_ports_file(const std::filesystem::path& path, const BoundPorts& ports);

}  // namespace orgd
