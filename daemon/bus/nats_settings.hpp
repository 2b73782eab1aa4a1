#pragma once

#include "daemon/bus/embedded_server.hpp"
#include "daemon/bus/nats_connection.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"

namespace orgd {

// orgd's connection, from its nats config. Secrets named by *_env come from `env` and the nkey
// seed from its file: one missing or unreadable throws std::runtime_error, so it stops start-up.
NatsConnectionSettings nats_connection_settings(const NatsConfig& config, const Environment& env);

// The embedded nats-server, listening where the first URL points, its store under
// data_dir/nats. Throws std::runtime_error on a port out of range.
EmbeddedServerSettings embedded_server_settings(const NatsConfig& config);

}  // namespace orgd
