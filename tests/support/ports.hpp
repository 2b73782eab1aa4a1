#pragma once

#include <cstdint>

namespace orgd::testing {

// A loopback port nobody listens on right now (bound, read, closed). For configs that must name
// a port before the process that listens on it starts.
std::uint16_t free_port();

// True when a listener could bind 127.0.0.1:port now (nobody holds it).
bool port_bindable(std::uint16_t port);

}  // namespace orgd::testing
