#pragma once

#include <string>

#include "daemon/bus/nats_connection.hpp"
#include "tests/support/nats_server.hpp"

namespace orgd::testing {

// Connection settings for one connect attempt with no retries (a refused credential fails at
// once).
NatsConnectionSettings auth_settings(const std::string& url);

// A core-NATS server (no JetStream) with `extra` appended to its config (auth, TLS, operator).
NatsServerOptions server_with_config(std::string extra);

// Connects, and proves the connection works with a request to a subscription of its own.
// Throws std::runtime_error when the connection is refused.
bool connects(NatsConnectionSettings settings);

}  // namespace orgd::testing
